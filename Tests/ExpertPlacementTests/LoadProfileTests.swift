import FixtureSupport
import Testing

@testable import ExpertPlacement

@Suite struct LoadProfileTests {
    static let tiny: [[Double]] = {
        // The generator's integer token counts, read straight from its JSON.
        let v = Fixtures.json("profiles/tiny_dsv3.json").objectValue!["layers"]!.arrayValue!
        return v.map { $0.arrayValue!.map { $0.doubleValue! } }
    }()

    /// Every accepted form of the same profile reads to the same loads.
    @Test(arguments: ["tiny_dsv3.json", "tiny_dsv3.sglang.json", "tiny_dsv3.csv", "tiny_dsv3.json.zst", "tiny_dsv3.csv.zst"])
    func sameLoadsInEveryForm(_ file: String) throws {
        let p = try LoadProfile.read(path: Fixtures.path("profiles/" + file))
        #expect(p.loads == Self.tiny)
        #expect(p.layers == 2 && p.experts == 16)
    }

    @Test func expertCountChecked() throws {
        #expect(throws: PlacementError.self) {
            try LoadProfile.read(path: Fixtures.path("profiles/tiny_dsv3.json"), expectedExperts: 256)
        }
        // CSV: the config's count decides; an expert index beyond it is refused.
        let p = try LoadProfile.read(path: Fixtures.path("profiles/tiny_dsv3.csv"), expectedExperts: 16)
        #expect(p.experts == 16)
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

    /// Each malformed profile is refused with a message naming what is wrong.
    @Test(arguments: [
        ("ragged.json", "layers[1] has 2 experts"),
        ("negative.json", "negative"),
        ("string-load.json", "expected a load (a number), found a string"),
        ("overflow.json", "out of range"),
        ("nan-literal.json", "found NaN or Infinity"),
        ("no-layers.json", "no \"layers\""),
        ("duplicate-key.json", "appears twice"),
        ("empty-layers.json", "no layers"),
        ("deep.json", "layers[0][0]: expected a load (a number), found an array"),
        ("ragged-passes.json", "logical_count[1] is 1x2"),
        ("truncated.json", "invalid JSON"),
        ("fields.csv", ":3: expected 3 fields"),
        ("negative.csv", ":3: load -4 is negative"),
        ("gap.csv", "layer 1 has no rows"),
        ("text-load.csv", "load \"many\" is not a number"),
        ("truncated.json.zst", "zstd"),
        ("garbage.json.zst", "zstd"),
        ("bomb.csv.zst", "zstd: decompresses to more than \(LoadProfile.maxBytes) bytes"),
    ])
    func malformedRefused(_ file: String, _ message: String) {
        do {
            _ = try LoadProfile.read(path: Fixtures.path("profiles/malformed/" + file))
            Issue.record("\(file) was accepted")
        } catch {
            #expect(error.description.contains(message), "\(file): \(error.description)")
            #expect(error.description.contains(file), "\(file): the message names the file: \(error.description)")
        }
    }
}

extension LoadProfileTests {
    func refusal(_ text: String, name: String = "inline.json", expectedExperts: Int? = nil) -> String {
        do {
            _ = try LoadProfile.parse(Array(text.utf8), name: name, expectedExperts: expectedExperts)
            return "accepted"
        } catch {
            return error.description
        }
    }

    /// Loads each in range whose sums are not (1e308 twice, passes or CSV rows adding up past
    /// the largest double) are refused naming the file and layer, so no infinity or NaN reaches
    /// a metric, the report or the placement file.
    @Test func overflowingTotalsRefused() throws {
        let limit = "above the most moetool plans (\(LoadProfile.maxLayerTotal))"
        #expect(refusal(#"{"layers": [[1, 2], [1e308, 1e308]]}"#).hasPrefix("inline.json: layer 1: the loads add up to more than the largest float, \(limit)"))
        #expect(refusal(#"{"layers": [[6e29, 6e29]]}"#) == "inline.json: layer 0: the loads add up to 1.2e+30, \(limit); divide every load by one factor (only their ratios matter)")
        #expect(refusal(#"{"logical_count": [[[1e308, 1]], [[1e308, 1]]]}"#).hasPrefix("inline.json: layer 0: the loads add up to more than the largest float"))
        #expect(refusal("0,0,1e308\n0,0,1e308\n", name: "inline.csv").hasPrefix("inline.csv: layer 0: the loads add up"))
        // Many of the largest 64-bit counts stay far below the limit and are planned.
        let big = Array(repeating: "18446744073709551615", count: 64).joined(separator: ", ")
        #expect(refusal(#"{"layers": [[\#(big)]]}"#) == "accepted")
        // The planner checks loads handed to it directly too.
        let t = try Topology(experts: 2, slots: 2, gpus: 1, nodes: 1, groups: 1)
        #expect(throws: PlacementError.self) { try PlacementPlanner.plan([[1e308, 1e308]], PlanRequest(topology: t, policy: .global)) }
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
        #expect(refusal("0,0,1\n", name: "inline.csv", expectedExperts: Int.max).hasPrefix("inline.csv: 1 layers x \(Int.max) experts is more than"))
        // Repeated rows add up in place: a million rows of one expert are one load.
        let rows = String(repeating: "0,0,1\n", count: 1_000_000)
        #expect(try LoadProfile.parse(Array(rows.utf8), name: "rows.csv").loads == [[1_000_000]])
    }

    /// A zstd bomb (90 KB that would expand to 1 GiB) is refused once its output passes the
    /// limit, in well under the time it would take to expand it all.
    @Test func zstdBombStopsAtTheLimit() throws {
        let start = ContinuousClock.now
        #expect(throws: PlacementError.self) { try LoadProfile.read(path: Fixtures.path("profiles/malformed/bomb.csv.zst")) }
        #expect(ContinuousClock.now - start < .seconds(20))
    }
}

@Suite struct IncrementalTests {
    /// Loads shift; re-planning from the deployed placement reaches the target while changing
    /// fewer slots than a fresh plan laid over the old one would.
    @Test func fewerMovesThanAFreshPlan() throws {
        let c = ReferenceCase.all.first { $0.profile == "dsv3_lognormal" && $0.slots == 288 && $0.policy == .global }!
        let t = c.topology
        let old = c.loads[0]
        // The same experts a little later: 10% of the load moves between neighbours.
        var shifted = old
        for i in stride(from: 0, to: old.count - 1, by: 2) {
            let m = 0.1 * old[i]
            shifted[i] -= m
            shifted[i + 1] += m
        }
        let deployed = Planner.place(old, topology: t, policy: .global)
        let fresh = Planner.place(shifted, topology: t, policy: .global)
        let freshImbalance = PlacementMetrics.measure(fresh, loads: shifted, topology: t, routing: nil).imbalance
        let target = freshImbalance * 1.01
        let r = Incremental.reach(target: target, from: deployed, fresh: fresh, loads: shifted, topology: t, policy: .global)
        let reached = PlacementMetrics.measure(r.placement, loads: shifted, topology: t, routing: nil)
        #expect(reached.imbalance <= target * (1 + 1e-12))
        #expect(reached.colocatedDuplicates == 0)
        let naive = Incremental.changed(fresh.phy2log, deployed.phy2log)
        #expect(r.moved == Incremental.changed(r.placement.phy2log, deployed.phy2log))
        #expect(r.moved < naive, "moved \(r.moved) of \(t.slots) slots; a fresh plan as is moves \(naive)")
        #expect(r.placement.logcnt.reduce(0, +) == t.slots && r.placement.logcnt.allSatisfy { $0 >= 1 })
    }

    /// Hierarchical: moves stay inside nodes, so every group still lives on one node.
    @Test func hierarchicalKeepsGroupsOnNodes() throws {
        let c = ReferenceCase.all.first { $0.profile == "dsv3_lognormal" && $0.slots == 288 && $0.policy == .hierarchical }!
        let t = c.topology
        let deployed = c.loads.map { Planner.place($0, topology: t, policy: .hierarchical) }
        // Next week's loads: the layers rotated, a big change.
        let next = Array(c.loads[1...]) + [c.loads[0]]
        let plan = try PlacementPlanner.plan(next, PlanRequest(topology: t, policy: .hierarchical, previous: deployed))
        for (i, layer) in plan.layers.enumerated() {
            var nodeOfGroup = [Int: Int]()
            for (s, e) in layer.placement.phy2log.enumerated() {
                let node = t.node(ofGPU: t.gpu(ofSlot: s))
                #expect(nodeOfGroup[e / t.expertsPerGroup, default: node] == node, "layer \(i)")
                nodeOfGroup[e / t.expertsPerGroup] = node
            }
            let fresh = Planner.place(next[i], topology: t, policy: .hierarchical)
            let freshImbalance = PlacementMetrics.measure(fresh, loads: next[i], topology: t, routing: nil).imbalance
            #expect(layer.metrics.imbalance <= freshImbalance * 1.01 + 1e-12)
            #expect(layer.moved! <= Incremental.changed(Incremental.align(fresh, to: deployed[i], topology: t).phy2log, deployed[i].phy2log))
            #expect(layer.metrics.colocatedDuplicates == 0)
        }
    }

    /// A deployed placement that already meets the target is kept as it is.
    @Test func keepsAGoodPlacement() throws {
        let c = ReferenceCase.all.first { $0.profile == "dsv3_lognormal" && $0.slots == 288 && $0.policy == .global }!
        let t = c.topology
        // Deployed for another layer's loads, so that a fresh plan for these loads would differ.
        let deployed = Planner.place(c.loads[0], topology: t, policy: .global)
        let loads = c.loads[1]
        #expect(Planner.place(loads, topology: t, policy: .global).phy2log != deployed.phy2log)
        let kept = PlacementMetrics.measure(deployed, loads: loads, topology: t, routing: nil).imbalance
        let plan = try PlacementPlanner.plan([loads], PlanRequest(topology: t, policy: .global, previous: [deployed],
                                                                  targetImbalance: kept * 1.01))
        #expect(plan.layers[0].moved == 0)
        #expect(plan.layers[0].placement.phy2log == deployed.phy2log)
    }

    /// Auto follows EPLB's rule (hierarchical here); with a traffic limit it takes, per layer,
    /// the better balance within the limit: global when the limit is loose, hierarchical when
    /// global's expected nodes per token are above it.
    @Test func maxNodesPerTokenTradesBalanceForTraffic() throws {
        let c = ReferenceCase.all.first { $0.profile == "dsv3_lognormal" && $0.slots == 288 && $0.policy == .hierarchical }!
        let t = c.topology
        let routing = Routing(topk: 8, topkGroup: 4)
        let auto = try PlacementPlanner.plan(c.loads, PlanRequest(topology: t, policy: nil, routing: routing))
        let loose = try PlacementPlanner.plan(c.loads, PlanRequest(topology: t, policy: nil, routing: routing, maxNodesPerToken: 4))
        let tight = try PlacementPlanner.plan(c.loads, PlanRequest(topology: t, policy: nil, routing: routing, maxNodesPerToken: 3.2))
        #expect(auto.layers.allSatisfy { $0.policy == .hierarchical })
        #expect(loose.layers.allSatisfy { $0.policy == .global })
        #expect(tight.layers.allSatisfy { $0.policy == .hierarchical })
        #expect(tight.meanNodesPerToken! <= 3.2)
        #expect(loose.meanNodesPerToken! > 3.2)
        #expect(loose.meanImbalance < tight.meanImbalance)
    }
}
