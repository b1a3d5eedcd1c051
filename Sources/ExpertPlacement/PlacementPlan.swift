import Support

/// Which algorithm places the experts.
public enum Algorithm: String, Sendable, CaseIterable {
    /// DeepSeek's EPLB, reproduced (the baseline).
    case eplb
    /// moetool's own: never worse than the baseline.
    case moetool
}

/// What a plan is asked to do.
public struct PlanRequest: Sendable {
    public var topology: Topology
    /// nil: auto. EPLB's rule (hierarchical when groups divide evenly over several nodes, else
    /// global); with `maxNodesPerToken`, per layer the better balanced of the two within the limit.
    public var policy: Policy?
    public var algorithm: Algorithm
    public var routing: Routing?
    /// With auto: the most expected nodes per token a layer may have (needs `routing`).
    public var maxNodesPerToken: Double?
    /// An existing placement to move as little as possible from.
    public var previous: [LayerPlacement]?
    /// With `previous`: the per-layer imbalance to reach; nil: within 1% of a fresh plan's.
    public var targetImbalance: Double?
    public var threads: Int

    public init(topology: Topology, policy: Policy?, algorithm: Algorithm = .moetool, routing: Routing? = nil,
                maxNodesPerToken: Double? = nil, previous: [LayerPlacement]? = nil, targetImbalance: Double? = nil,
                threads: Int = 0) {
        self.topology = topology
        self.policy = policy
        self.algorithm = algorithm
        self.routing = routing
        self.maxNodesPerToken = maxNodesPerToken
        self.previous = previous
        self.targetImbalance = targetImbalance
        self.threads = threads
    }
}

/// One layer's placement, the policy that made it and its metrics.
public struct PlannedLayer: Sendable {
    public var placement: LayerPlacement
    public var policy: Policy
    public var metrics: LayerMetrics
    /// Slots whose expert differs from the previous placement (with `previous`).
    public var moved: Int?
}

public struct Plan: Sendable {
    public var request: PlanRequest
    public var layers: [PlannedLayer]

    public var meanImbalance: Double { layers.map(\.metrics.imbalance).reduce(0, +) / Double(max(layers.count, 1)) }
    public var worstImbalance: Double { layers.map(\.metrics.imbalance).max() ?? 1 }
    public var meanNodeImbalance: Double { layers.map(\.metrics.nodeImbalance).reduce(0, +) / Double(max(layers.count, 1)) }
    public var meanGap: Double { layers.map(\.metrics.gap).reduce(0, +) / Double(max(layers.count, 1)) }
    public var worstGap: Double { layers.map(\.metrics.gap).max() ?? 0 }
    public var duplicates: Int { layers.reduce(0) { $0 + $1.metrics.colocatedDuplicates } }
    public var moved: Int? {
        request.previous == nil ? nil : layers.reduce(0) { $0 + ($1.moved ?? 0) }
    }
    public var meanNodesPerToken: Double? {
        let v = layers.compactMap(\.metrics.nodesPerToken)
        return v.isEmpty ? nil : v.reduce(0, +) / Double(v.count)
    }
    /// Replica width of log2phy: the most replicas any expert has in any layer.
    public var log2phyWidth: Int { layers.map { $0.placement.logcnt.max() ?? 1 }.max() ?? 1 }
}

public enum PlacementPlanner {
    /// Plans every layer of `loads` ([layer][expert]); layers are independent and run in parallel.
    public static func plan(_ loads: [[Double]], _ request: PlanRequest) throws(PlacementError) -> Plan {
        let t = request.topology
        try LoadProfile.check(loads, file: nil)
        guard loads[0].count == t.experts else {
            throw PlacementError(.expertCountMismatch, "the loads have \(loads[0].count) experts per layer, the topology \(t.experts)")
        }
        guard loads.count * t.slots <= Topology.maxSlots else {
            throw PlacementError(.planTooLarge, "\(counted(loads.count, "layer")) x \(counted(t.slots, "slot")) is more than moetool plans (\(Topology.maxSlots) slots in all)")
        }
        if let r = request.routing {
            guard r.topk >= 1, r.topk <= t.experts else {
                throw PlacementError(.invalidRouting, "top-k (\(r.topk)) must be 1 to the experts per layer (\(t.experts))")
            }
            if let g = r.topkGroup, g < 1 || g > t.groups {
                throw PlacementError(.invalidRouting, "topk_group (\(g)) must be 1 to the expert groups (\(t.groups))")
            }
        }
        let policies: [Policy]
        if let p = request.policy {
            if p == .hierarchical, let problem = t.hierarchicalProblem { throw problem }
            policies = [p]
        } else if t.hierarchicalProblem != nil || t.nodes == 1 {
            policies = [.global]
        } else if request.maxNodesPerToken != nil {
            policies = [.hierarchical, .global]
        } else {
            policies = [.hierarchical]  // EPLB's rule: groups stay on nodes when they divide evenly
        }
        if let prev = request.previous {
            guard t.slots <= Incremental.maxSlots else {
                throw PlacementError(.planTooLarge, "re-planning from a previous placement weighs every pair of slots per move: at most \(Incremental.maxSlots) slots per layer (this plan has \(t.slots)); plan without a previous placement")
            }
            guard prev.count == loads.count else {
                throw PlacementError(.otherDeployment, "the previous placement has \(counted(prev.count, "layer")), the profile \(loads.count)")
            }
            for (i, p) in prev.enumerated() {
                guard p.phy2log.count == t.slots else {
                    throw PlacementError(.otherDeployment, "the previous placement's layer \(i) has \(p.phy2log.count) slots, the plan \(t.slots)")
                }
                guard p.logcnt.count == t.experts, p.logcnt.allSatisfy({ $0 >= 1 }) else {
                    throw PlacementError(.expertWithoutSlot, "the previous placement's layer \(i) does not give every one of the \(t.experts) experts a slot")
                }
            }
        }
        let layers = parallelMap(loads.count, threads: request.threads) { i in
            planLayer(loads[i], index: i, request: request, policies: policies)
        }
        return Plan(request: request, layers: layers)
    }

    /// EPLB's plan of the same loads under the same policies, for comparison (nil when the plan
    /// is EPLB's already). It starts afresh: the baseline of a re-plan is a fresh plan.
    public static func baseline(_ loads: [[Double]], _ request: PlanRequest) throws(PlacementError) -> Plan? {
        guard request.algorithm != .eplb else { return nil }
        var baseline = request
        baseline.algorithm = .eplb
        baseline.previous = nil
        return try plan(loads, baseline)
    }

    static func place(_ loads: [Double], _ request: PlanRequest, _ policy: Policy) -> LayerPlacement {
        switch request.algorithm {
        case .eplb: return EPLBBaseline.place(loads, topology: request.topology, policy: policy)
        case .moetool: return Planner.place(loads, topology: request.topology, policy: policy)
        }
    }

    static func planLayer(_ loads: [Double], index: Int, request: PlanRequest, policies: [Policy]) -> PlannedLayer {
        let t = request.topology
        let seed = UInt64(index)
        // Every allowed policy; auto keeps the best balance within the traffic limit (or, if none
        // meets it, the least traffic).
        var options = policies.map { policy -> PlannedLayer in
            let p = place(loads, request, policy)
            return PlannedLayer(placement: p, policy: policy,
                                metrics: PlacementMetrics.measure(p, loads: loads, topology: t, routing: request.routing, layerSeed: seed))
        }
        if let limit = request.maxNodesPerToken, options.count > 1 {
            let within = options.filter { ($0.metrics.nodesPerToken ?? 0) <= limit }
            options = within.isEmpty ? [options.min { ($0.metrics.nodesPerToken ?? 0) < ($1.metrics.nodesPerToken ?? 0) }!] : within
        }
        var chosen = options.min { $0.metrics.maxGPULoad < $1.metrics.maxGPULoad }!
        guard let previous = request.previous?[index] else { return chosen }
        let target = (request.targetImbalance ?? chosen.metrics.imbalance * 1.01)
        let incremental = Incremental.reach(target: target, from: previous, fresh: chosen.placement, loads: loads,
                                            topology: t, policy: chosen.policy)
        chosen.placement = incremental.placement
        chosen.moved = incremental.moved
        chosen.metrics = PlacementMetrics.measure(incremental.placement, loads: loads, topology: t, routing: request.routing, layerSeed: seed)
        return chosen
    }
}
