import Support
import Testing

@testable import ExpertPlacement

/// Synthetic drift: lognormal-like base loads whose hot experts move from window to window.
func driftingSeries(layers: Int, experts: Int, windows: Int, seed: UInt64) throws -> LoadSeries {
    var rng = SplitMix64(seed: seed)
    let base = (0..<layers).map { _ in (0..<experts).map { _ in 200 + 1000 * rng.unit() * rng.unit() } }
    var profiles: [LoadProfile] = []
    for w in 0..<windows {
        let loads = base.enumerated().map { l, layer in
            layer.enumerated().map { e, v in
                // A few hot experts per window, a different few each time.
                (e * 7 + l * 3 + w * 5) % experts < experts / 8 ? v * (4 + 2 * rng.unit()) : v * (0.8 + 0.4 * rng.unit())
            }
        }
        profiles.append(LoadProfile(loads: loads))
    }
    return try LoadSeries(profiles, names: (0..<windows).map { "w\($0).json" })
}

@Suite struct DriftPlanningTests {
    @Test func seriesChecksItsWindows() throws {
        let a = LoadProfile(loads: [[1, 2, 3, 4]])
        let b = LoadProfile(loads: [[1, 2, 3]])
        #expect(throws: PlacementError(.windowsDiffer, file: "b.json", "1 layer x 3 experts, but a.json has 1 x 4")) {
            try LoadSeries([a, b], names: ["a.json", "b.json"])
        }
        #expect(throws: PlacementError(.noLoads, "no load profile")) { try LoadSeries([], names: []) }
        let s = try LoadSeries([a, LoadProfile(loads: [[3, 2, 1, 0]])], names: ["a", "c"])
        #expect(s.mean.loads == [[2, 2, 2, 2]])
    }

    @Test func objectives() {
        #expect(RobustObjective("max") == .max)
        #expect(RobustObjective("p90") == .percentile(90))
        #expect(RobustObjective("p5") == .percentile(5))
        for bad in ["p0", "p100", "p", "p9x", "P90", "p090", "90", "max "] { #expect(RobustObjective(bad) == nil, "\(bad)") }
        #expect(RobustObjective.max.of([3, 1, 2]) == 3)
        // Nearest rank: p50 of 4 values is the 2nd smallest, p90 of 10 the 9th, p90 of 8 the 8th.
        #expect(RobustObjective.percentile(50).of([4, 1, 3, 2]) == 2)
        #expect(RobustObjective.percentile(90).of((1...10).map(Double.init).reversed()) == 9)
        #expect(RobustObjective.percentile(90).of((1...8).map(Double.init)) == 8)
        #expect(RobustObjective.percentile(1).of([5, 7]) == 5)
    }

    /// The robust placement is never worse per layer, by its objective, than EPLB's or moetool's
    /// placement of the mean load, and under drift it is clearly better than EPLB's on the mean.
    @Test(arguments: [RobustObjective.max, .percentile(75)])
    func robustBeatsPlanningTheMean(_ objective: RobustObjective) throws {
        let series = try driftingSeries(layers: 3, experts: 64, windows: 8, seed: 7)
        let t = try Topology(experts: 64, slots: 80, gpus: 16, nodes: 2, groups: 8)
        let request = PlanRequest(topology: t, policy: .global)
        let drift = try DriftPlanner.plan(series, request, objective: objective)
        let meanPlan = try PlacementPlanner.plan(series.mean.loads, request)
        let robust = drift.objectivePerLayer(\.robust)
        let eplb = drift.objectivePerLayer(\.eplbMean)
        for l in 0..<3 {
            let ours = objective.of(series.windows.map { DriftPlanner.imbalance(meanPlan.layers[l].placement, $0.loads[l], t) })
            #expect(robust[l] <= eplb[l] * (1 + 1e-12), "layer \(l)")
            #expect(robust[l] <= ours * (1 + 1e-12), "layer \(l)")
        }
        let gain = eplb.reduce(0, +) / robust.reduce(0, +)
        #expect(gain > 1.02, "robust \(robust), EPLB on the mean \(eplb)")
        // Every slot holds an expert, every expert has a slot.
        for l in drift.robust.layers {
            #expect(l.placement.phy2log.count == t.slots && l.placement.logcnt.allSatisfy { $0 >= 1 })
        }
    }

    /// The report's figures are what the placements give: recomputed here from GPU loads.
    @Test func windowFiguresAreThePlacementsImbalances() throws {
        let series = try driftingSeries(layers: 2, experts: 32, windows: 4, seed: 11)
        let t = try Topology(experts: 32, slots: 40, gpus: 8, nodes: 1, groups: 1)
        let request = PlanRequest(topology: t, policy: .global)
        let drift = try DriftPlanner.plan(series, request, objective: .max)
        for (w, window) in series.windows.enumerated() {
            let fresh = try PlacementPlanner.plan(window.loads, request)
            for l in 0..<2 {
                let g = PlacementMetrics.gpuLoads(drift.robust.layers[l].placement, loads: window.loads[l], topology: t)
                #expect(drift.windows[w].robust[l] == (g.max()! / (g.reduce(0, +) / 8)))
                #expect(drift.windows[w].replanned[l] == fresh.layers[l].metrics.imbalance)
                #expect(drift.windows[w].eplbMean[l] == DriftPlanner.imbalance(
                    EPLBBaseline.place(series.mean.loads[l], topology: t, policy: .global), window.loads[l], t))
            }
            #expect(drift.windows[w].moved == nil)
        }
        // Each window's re-plan is at least as good in that window as the one placement for all.
        for w in drift.windows { for l in 0..<2 { #expect(w.replanned[l] <= w.robust[l] * (1 + 1e-12)) } }
    }

    /// Hierarchical: every group of the robust placement lives on one node.
    @Test func hierarchicalKeepsGroupsOnNodes() throws {
        let series = try driftingSeries(layers: 2, experts: 64, windows: 6, seed: 3)
        // No redundant slot: the single-profile planner's search over replica counts is slow in debug builds.
        let t = try Topology(experts: 64, slots: 64, gpus: 16, nodes: 4, groups: 8)
        let drift = try DriftPlanner.plan(series, PlanRequest(topology: t, policy: .hierarchical), objective: .max)
        for l in drift.robust.layers {
            #expect(l.policy == .hierarchical)
            for g in 0..<8 {
                let nodes = Set(l.placement.phy2log.enumerated().filter { $0.element / 8 == g }.map { t.node(ofGPU: t.gpu(ofSlot: $0.offset)) })
                #expect(!nodes.isEmpty)
                #expect(nodes.count == 1, "group \(g) on nodes \(nodes)")
            }
        }
    }

    /// Groups that are hot in turn are split over the nodes, where the mean load sees no difference.
    @Test func groupSplitFollowsTheWindows() throws {
        let t = try Topology(experts: 4, slots: 4, gpus: 2, nodes: 2, groups: 4)
        let scaled: [[Double]] = [[4, 4, 0, 0], [0, 0, 4, 4]]
        let split = DriftPlanner.robustGroupSplit(scaled, topology: t, objective: .max, from: [0, 0, 1, 1])
        #expect(split[0] != split[1] && split[2] != split[3])
        #expect(split.filter { $0 == 0 }.count == 2)
        // Already the best: kept.
        #expect(DriftPlanner.robustGroupSplit(scaled, topology: t, objective: .max, from: [0, 1, 0, 1]) == [0, 1, 0, 1])
    }

    /// With a deployed placement: moves per re-plan, the first from it, each later one from the
    /// re-plan before; the robust placement's own moves counted against it.
    @Test func movesFromAPreviousPlacement() throws {
        let series = try driftingSeries(layers: 2, experts: 32, windows: 3, seed: 5)
        let t = try Topology(experts: 32, slots: 40, gpus: 8, nodes: 1, groups: 1)
        let deployed = series.windows[0].loads.map { Planner.place($0, topology: t, policy: .global) }
        let drift = try DriftPlanner.plan(series, PlanRequest(topology: t, policy: .global, previous: deployed), objective: .max)
        var previous = deployed
        for (w, window) in series.windows.enumerated() {
            let replan = try PlacementPlanner.plan(window.loads, PlanRequest(topology: t, policy: .global, previous: previous))
            #expect(drift.windows[w].moved == replan.moved)
            previous = replan.layers.map(\.placement)
        }
        for (l, layer) in drift.robust.layers.enumerated() {
            #expect(layer.moved == Incremental.changed(layer.placement.phy2log, deployed[l].phy2log))
        }
        // Re-planning from the robust placement itself moves nothing.
        let again = try DriftPlanner.plan(series, PlanRequest(topology: t, policy: .global, previous: drift.robust.layers.map(\.placement)), objective: .max)
        #expect(again.robust.moved == 0)
    }
}
