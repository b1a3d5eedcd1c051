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
        try PlacementFile.write(format == "sglang" ? PlacementFile.sglang(plan) : PlacementFile.moetool(plan, bytesPerExpert: nil), to: path)
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
        let document = PlacementFile.sglang(try Self.readmePlan())
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
}
