import Testing

@testable import ExpertPlacement

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
