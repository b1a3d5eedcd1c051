import ExpertPlacement
import FixtureSupport
import Foundation
import PlacementFiles
import StrictJSON
import Testing

@Suite struct PlacementFileIOTests {
    static let readme: [[Double]] = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                                     [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]

    static func readmePlan() throws -> Plan {
        let t = try Topology(experts: 12, slots: 16, gpus: 8, nodes: 2, groups: 4)
        return try PlacementPlanner.plan(readme, PlanRequest(topology: t, policy: .hierarchical, algorithm: .eplb))
    }

    /// Written in either format and read back: the same slots, the file complete and alone.
    @Test(arguments: ["moetool", "sglang"])
    func writtenAndReadBack(_ format: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plan = try Self.readmePlan()
        let path = dir + "/placement.json"
        try PlacementFile.write(format == "sglang" ? PlacementFile.sglang(plan, decoderLayers: DecoderLayers(isMoE: [true, true]), redundantExperts: 4) : PlacementFile.moetool(plan, bytesPerExpert: nil), to: path)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["placement.json"])
        let back = try PlacementFile.read(path: path, topology: plan.request.topology, layers: 2)
        #expect(back.map(\.phy2log) == plan.layers.map(\.placement.phy2log))
        #expect(back[0].phy2log == [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1])
    }

    /// A directory that does not exist: refused as unwritable, naming the output, nothing left behind.
    @Test func unwritableOutput() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/no/such/dir/placement.json"
        let document = try PlacementFile.sglang(try Self.readmePlan(), decoderLayers: DecoderLayers(isMoE: [true, true]), redundantExperts: 4)
        do {
            try PlacementFile.write(document, to: path)
            Issue.record("wrote \(path)")
        } catch {
            #expect(error.rule == .unwritable && error.file == path, "\(error.description)")
            #expect(error.message.contains("cannot create a temporary file"), "\(error.description)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == [])
    }

    /// A moetool placement for another deployment names the key that differs, with one slot per
    /// GPU written in the singular.
    @Test func otherDeploymentRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plan = try Self.readmePlan()
        let path = dir + "/placement.json"
        try PlacementFile.write(PlacementFile.moetool(plan, bytesPerExpert: nil), to: path)
        let other = try Topology(experts: 12, slots: 16, gpus: 16, nodes: 2, groups: 4)
        #expect(throws: PlacementError(.otherDeployment, file: path, "the previous placement is for 8 GPUs (num_gpus), this plan for 16 (16 GPUs x 1 slot, 12 experts, 2 layers)")) {
            try PlacementFile.read(path: path, topology: other, layers: 2)
        }
    }

    /// SGLang's file has a row per decoder layer: the MoE rows are the plan's, a dense row is SGLang's
    /// trivial one (slot s -> expert s mod experts); read back as --previous, the MoE rows are kept.
    @Test func sglangRowsPerDecoderLayer() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plan = try Self.readmePlan()
        let layers = DecoderLayers(isMoE: [false, true, false, true])
        let doc = try PlacementFile.sglang(plan, decoderLayers: layers, redundantExperts: 4)
        let rows = try #require(doc.objectValue?["physical_to_logical_map"]?.arrayValue).map { $0.arrayValue!.map { Int($0.doubleValue!) } }
        let trivial = (0..<16).map { $0 % 12 }
        #expect(rows == [trivial, plan.layers[0].placement.phy2log, trivial, plan.layers[1].placement.phy2log])
        let path = dir + "/sglang.json"
        try PlacementFile.write(doc, to: path)
        let back = try PlacementFile.read(path: path, topology: plan.request.topology, layers: 2, decoderLayers: layers)
        #expect(back.map(\.phy2log) == plan.layers.map(\.placement.phy2log))
        // Without the decoder layers, 4 rows are not the plan's 2.
        #expect(throws: PlacementError(.otherDeployment, file: path, "more than 2 layers, but the profile has 2")) {
            try PlacementFile.read(path: path, topology: plan.request.topology, layers: 2)
        }
        #expect(throws: PlacementError(.sglangIncompatible, "16 slots per layer, but SGLang makes 12 (12 experts + --ep-num-redundant-experts 0) and refuses the file: run SGLang with --ep-num-redundant-experts 4, and give moetool the same flag")) {
            try PlacementFile.sglang(plan, decoderLayers: layers, redundantExperts: 0)
        }
        #expect(throws: PlacementError(.sglangIncompatible, "the plan has 2 MoE layers, but the config's 3 decoder layers have 1 (dense: 0-1): plan from a profile of this model")) {
            try PlacementFile.sglang(plan, decoderLayers: DecoderLayers(isMoE: [false, false, true]), redundantExperts: 4)
        }
    }
}
