import FixtureSupport
import Testing

@testable import ExpertPlacement

@Suite struct LoadProfileTests {
    static let tiny: [[Double]] = {
        // The generator's integer token counts, read straight from its JSON.
        let v = Fixtures.json("profiles/tiny_dsv3.json").objectValue!["layers"]!.arrayValue!
        return v.map { $0.arrayValue!.map { $0.doubleValue! } }
    }()

    /// A profile for another model (its expert count is not the config's) is refused; for CSV,
    /// the config's count decides how many experts a layer has.
    @Test func expertCountChecked() throws {
        let json = Fixtures.readBytes(Fixtures.path("profiles/tiny_dsv3.json"))
        #expect(throws: PlacementError(.expertCountMismatch, file: "tiny.json", "the profile has 16 experts per layer but the config has 256")) {
            try LoadProfile.parse(json, name: "tiny.json", expectedExperts: 256)
        }
        let p = try LoadProfile.parse(Array("0,0,1\n1,3,2\n".utf8), name: "inline.csv", expectedExperts: 16)
        #expect(p.experts == 16 && p.layers == 2 && p.loads[1][3] == 2)
    }

    /// A missing CSV row is an expert with no tokens; repeated rows add up (passes).
    @Test func csvMissingAndRepeatedRows() throws {
        let text = "# two passes\nlayer,expert,load\n0,0,5\n0,2,1.5\n0,0,2\n1,1,3\n"
        let p = try LoadProfile.parse(Array(text.utf8), name: "inline.csv", expectedExperts: 4)
        #expect(p.loads == [[7, 0, 1.5, 0], [0, 3, 0, 0]])
    }

    @Test func jsonNumbersExactly() throws {
        let text = #"{"layers": [[0, 1.5, 2e3, 123456789012345, 0.1]], "meta": {"x": [1, 2]}}"#
        let p = try LoadProfile.parse(Array(text.utf8), name: "inline.json")
        #expect(p.loads == [[0, 1.5, 2000, 123456789012345, 0.1]])
    }
}

extension LoadProfileTests {
    /// The refusal's file and message (without the rule's id and hint), or "accepted".
    func refusal(_ text: String, name: String = "inline.json", expectedExperts: Int? = nil) -> String {
        refusalError(text, name: name, expectedExperts: expectedExperts).map { e in (e.file.map { "\($0): " } ?? "") + e.message } ?? "accepted"
    }

    func refusalError(_ text: String, name: String = "inline.json", expectedExperts: Int? = nil) -> PlacementError? {
        do {
            _ = try LoadProfile.parse(Array(text.utf8), name: name, expectedExperts: expectedExperts)
            return nil
        } catch {
            return error
        }
    }

    /// Loads each in range whose sums are not (1e308 twice, passes or CSV rows adding up past
    /// the largest double) are refused naming the file and layer, so no infinity or NaN reaches
    /// a metric, the report or the placement file.
    @Test func overflowingTotalsRefused() throws {
        let limit = "above the most moetool plans (\(LoadProfile.maxLayerTotal))"
        #expect(refusal(#"{"layers": [[1, 2], [1e308, 1e308]]}"#).hasPrefix("inline.json: layer 1: the loads add up to more than the largest float, \(limit)"))
        #expect(refusal(#"{"layers": [[6e29, 6e29]]}"#) == "inline.json: layer 0: the loads add up to 1.2e+30, \(limit)")
        #expect(refusalError(#"{"layers": [[6e29, 6e29]]}"#)?.description == "inline.json: layer 0: the loads add up to 1.2e+30, \(limit) [layer_total_too_large]; divide every load by one factor (only their ratios matter)")
        #expect(refusal(#"{"logical_count": [[[1e308, 1]], [[1e308, 1]]]}"#).hasPrefix("inline.json: layer 0: the loads add up to more than the largest float"))
        #expect(refusal("0,0,1e308\n0,0,1e308\n", name: "inline.csv").hasPrefix("inline.csv: layer 0: the loads add up"))
        // Many of the largest 64-bit counts stay far below the limit and are planned.
        let big = Array(repeating: "18446744073709551615", count: 64).joined(separator: ", ")
        #expect(refusal(#"{"layers": [[\#(big)]]}"#) == "accepted")
        // The planner checks loads handed to it directly too.
        let t = try Topology(experts: 2, slots: 2, gpus: 1, nodes: 1, groups: 1)
        #expect(throws: PlacementError(.layerTotalTooLarge, "layer 0: the loads add up to more than the largest float, \(limit)")) {
            try PlacementPlanner.plan([[1e308, 1e308]], PlanRequest(topology: t, policy: .global))
        }
    }

    /// Profiles larger than a plan can use are refused as soon as a limit is passed, without
    /// first building what they describe.
    @Test func limitsRefusedWhileReading() throws {
        let longRow = "[" + Array(repeating: "1", count: LoadProfile.maxExperts + 1).joined(separator: ",") + "]"
        #expect(refusal(#"{"layers": [\#(longRow)]}"#) == "inline.json: layers[0] has more than \(LoadProfile.maxExperts) experts, more than moetool plans")
        let manyLayers = Array(repeating: "[1]", count: LoadProfile.maxLayers + 1).joined(separator: ",")
        #expect(refusal(#"{"layers": [\#(manyLayers)]}"#) == "inline.json: layers has more than \(LoadProfile.maxLayers) layers, more than moetool plans")
        #expect(refusal("0,70000,1\n", name: "inline.csv") == "inline.csv:1: expert \"70000\" is not an index below \(LoadProfile.maxExperts) (0, 1, 2, ...)")
        #expect(refusal("4095,65535,1\n", name: "inline.csv") == "inline.csv:1: 4096 layers x 65536 experts is more than moetool plans (\(LoadProfile.maxLoads) loads in all)")
        #expect(refusal("0,0,1\n", name: "inline.csv", expectedExperts: Int.max).hasPrefix("inline.csv: 1 layer x \(Int.max) experts is more than"))
        // Repeated rows add up in place: a million rows of one expert are one load.
        let rows = String(repeating: "0,0,1\n", count: 1_000_000)
        #expect(try LoadProfile.parse(Array(rows.utf8), name: "rows.csv").loads == [[1_000_000]])
    }
}
