import Support

/// How tokens are routed, for the traffic estimate: `topk` experts per token, chosen inside
/// `topkGroup` of the topology's groups when group-limited (DeepSeek-V3: 8 in 4 of 8 groups).
public struct Routing: Sendable, Equatable {
    public let topk: Int
    public let topkGroup: Int?

    public init(topk: Int, topkGroup: Int?) {
        self.topk = topk
        self.topkGroup = topkGroup
    }
}

/// Balance and traffic of one layer's placement.
public struct LayerMetrics: Sendable, Equatable {
    /// Token load per GPU: each expert's load split evenly over its replicas.
    public var gpuLoads: [Double]
    public var maxGPULoad: Double
    public var meanGPULoad: Double
    /// max / mean GPU load (1 = perfect); balancedness, as vLLM and SGLang log it, is 1 / this.
    public var imbalance: Double
    /// max / mean node load.
    public var nodeImbalance: Double
    /// No placement with these slots can have a lighter heaviest GPU than this.
    public var lowerBound: Double
    /// maxGPULoad / lowerBound - 1.
    public var gap: Double
    /// Replicas sharing a GPU with another replica of the same expert.
    public var colocatedDuplicates: Int
    /// Mean distinct nodes a token's experts are on (nil without a routing model).
    public var nodesPerToken: Double?
}

public enum PlacementMetrics {
    public static func gpuLoads(_ p: LayerPlacement, loads: [Double], topology t: Topology) -> [Double] {
        var out = [Double](repeating: 0, count: t.gpus)
        for (s, e) in p.phy2log.enumerated() { out[s / t.slotsPerGPU] += loads[e] / Double(p.logcnt[e]) }
        return out
    }

    public static func colocatedDuplicates(_ p: LayerPlacement, topology t: Topology) -> Int {
        var n = 0
        for g in 0..<t.gpus {
            let experts = p.phy2log[(g * t.slotsPerGPU)..<((g + 1) * t.slotsPerGPU)]
            n += experts.count - Set(experts).count
        }
        return n
    }

    /// max(total / GPUs, the smallest achievable heaviest load per replica).
    public static func lowerBound(loads: [Double], topology t: Topology) -> Double {
        let total = loads.reduce(0, +)
        return max(total / Double(t.gpus), Planner.minMaxPerReplica(loads, slots: t.slots))
    }

    public static func measure(_ p: LayerPlacement, loads: [Double], topology t: Topology,
                               routing: Routing?, layerSeed: UInt64 = 0) -> LayerMetrics {
        let g = gpuLoads(p, loads: loads, topology: t)
        let maxLoad = g.max() ?? 0
        let mean = g.reduce(0, +) / Double(t.gpus)
        var nodeLoads = [Double](repeating: 0, count: t.nodes)
        for (i, l) in g.enumerated() { nodeLoads[t.node(ofGPU: i)] += l }
        let nodeMean = nodeLoads.reduce(0, +) / Double(t.nodes)
        let bound = lowerBound(loads: loads, topology: t)
        return LayerMetrics(
            gpuLoads: g, maxGPULoad: maxLoad, meanGPULoad: mean,
            imbalance: mean > 0 ? maxLoad / mean : 1,
            nodeImbalance: nodeMean > 0 ? (nodeLoads.max() ?? 0) / nodeMean : 1,
            lowerBound: bound,
            gap: bound > 0 ? maxLoad / bound - 1 : 0,
            colocatedDuplicates: colocatedDuplicates(p, topology: t),
            nodesPerToken: routing.map { nodesPerToken(p, loads: loads, topology: t, routing: $0, seed: layerSeed) })
    }

    /// Expected distinct nodes per token under a sampling model of routing: a token picks
    /// `topkGroup` groups without replacement in proportion to group load (all groups when not
    /// group-limited), then `topk` experts among theirs in proportion to load, then one replica
    /// of each uniformly. Estimated from `tokens` sampled tokens with a fixed seed, so the same
    /// inputs always give the same figure.
    public static func nodesPerToken(_ p: LayerPlacement, loads: [Double], topology t: Topology, routing: Routing,
                                     tokens: Int = 512, seed: UInt64 = 0) -> Double {
        let total = loads.reduce(0, +)
        guard total > 0 else { return 0 }
        let replicas = ReplicaNodes(p, topology: t)
        let cumulative = CumulativeLoads(loads, topology: t)
        var rng = SplitMix64(seed: 0x9E37_79B9_7F4A_7C15 ^ seed)
        let touched = sampleTokens(tokens, loads: loads, total: total, topology: t, routing: routing,
                                   replicas: replicas, cumulative: cumulative, rng: &rng)
        return Double(touched) / Double(tokens)
    }

    /// Each expert's replica nodes, flat: nodes[first[e] ..< first[e + 1]].
    struct ReplicaNodes {
        var first: [Int]
        var nodes: [Int]

        init(_ p: LayerPlacement, topology t: Topology) {
            first = [Int](repeating: 0, count: t.experts + 1)
            for e in p.phy2log { first[e + 1] += 1 }
            for e in 0..<t.experts { first[e + 1] += first[e] }
            var fill = first
            nodes = [Int](repeating: 0, count: p.phy2log.count)
            for (s, e) in p.phy2log.enumerated() {
                nodes[fill[e]] = t.node(ofGPU: t.gpu(ofSlot: s))
                fill[e] += 1
            }
        }
    }

    /// Cumulative loads, of the groups and of the experts inside each group, for drawing in
    /// proportion to load by binary search. All: [group] but `expert`: [expert].
    struct CumulativeLoads {
        var group: [Double]
        var expert: [Double]
        var groupLoad: [Double]
        /// Experts with load, per group.
        var groupExperts: [Int]

        init(_ loads: [Double], topology t: Topology) {
            let groupSize = t.expertsPerGroup
            group = [Double](repeating: 0, count: t.groups)
            expert = [Double](repeating: 0, count: t.experts)
            groupLoad = [Double](repeating: 0, count: t.groups)
            groupExperts = [Int](repeating: 0, count: t.groups)
            var running = 0.0
            for g in 0..<t.groups {
                var inGroup = 0.0
                for k in 0..<groupSize {
                    inGroup += loads[g * groupSize + k]
                    if loads[g * groupSize + k] > 0 { groupExperts[g] += 1 }
                    expert[g * groupSize + k] = inGroup
                }
                groupLoad[g] = inGroup
                running += inGroup
                group[g] = running
            }
        }
    }

    /// Draws `tokens` tokens and returns the distinct nodes they touched, added up. Drawing with
    /// replacement and redrawing repeats is drawing without replacement in proportion to what
    /// is left.
    static func sampleTokens(_ tokens: Int, loads: [Double], total: Double, topology t: Topology, routing: Routing,
                             replicas: ReplicaNodes, cumulative: CumulativeLoads, rng: inout SplitMix64) -> Int {
        let groupSize = t.expertsPerGroup
        let pickGroups = min(routing.topkGroup ?? t.groups, cumulative.groupLoad.filter { $0 > 0 }.count)
        var sum = 0
        loads.withUnsafeBufferPointer { loads in
        cumulative.group.withUnsafeBufferPointer { groupCumulative in
        cumulative.expert.withUnsafeBufferPointer { expertCumulative in
        cumulative.groupLoad.withUnsafeBufferPointer { groupLoad in
        replicas.nodes.withUnsafeBufferPointer { nodes in
        replicas.first.withUnsafeBufferPointer { first in
            /// The first index whose cumulative value exceeds r, in cumulative[lo..<hi].
            func search(_ cumulative: UnsafeBufferPointer<Double>, _ lo: Int, _ hi: Int, _ r: Double) -> Int {
                var lo = lo, hi = hi - 1
                while lo < hi {
                    let mid = (lo + hi) >> 1
                    if cumulative[mid] > r { hi = mid } else { lo = mid + 1 }
                }
                return lo
            }
            withUnsafeTemporaryAllocation(of: Int.self, capacity: t.groups + routing.topk + 1) { scratch in
            withUnsafeTemporaryAllocation(of: Bool.self, capacity: t.nodes) { touched in
                let chosenGroups = UnsafeMutableBufferPointer(rebasing: scratch[0..<t.groups])
                let chosenExperts = UnsafeMutableBufferPointer(rebasing: scratch[t.groups...])
                for _ in 0..<tokens {
                    // The token's groups.
                    var groups = 0
                    var available = 0.0
                    var availableExperts = 0
                    draw: while groups < pickGroups {
                        let g = search(groupCumulative, 0, t.groups, rng.unit() * total)
                        if groupLoad[g] == 0 { continue }
                        for i in 0..<groups where chosenGroups[i] == g { continue draw }
                        chosenGroups[groups] = g
                        available += groupLoad[g]
                        availableExperts += cumulative.groupExperts[g]
                        groups += 1
                    }
                    // Its experts in those groups, and a replica of each.
                    let picks = min(routing.topk, availableExperts)
                    for i in 0..<t.nodes { touched[i] = false }
                    var experts = 0
                    pick: while experts < picks {
                        var r = rng.unit() * available
                        var gi = 0
                        while gi < groups - 1 && r >= groupLoad[chosenGroups[gi]] {
                            r -= groupLoad[chosenGroups[gi]]
                            gi += 1
                        }
                        let g = chosenGroups[gi]
                        let e = search(expertCumulative, g * groupSize, g * groupSize + groupSize, min(r, groupLoad[g].nextDown))
                        if loads[e] == 0 { continue }
                        for i in 0..<experts where chosenExperts[i] == e { continue pick }
                        chosenExperts[experts] = e
                        experts += 1
                        let count = UInt64(first[e + 1] - first[e])
                        touched[nodes[first[e] + Int(rng.next() % count)]] = true
                    }
                    for i in 0..<t.nodes where touched[i] { sum += 1 }
                }
            }
            }
        }
        }
        }
        }
        }
        }
        return sum
    }
}

extension PlacementMetrics {
    /// [gpu]: the loads of a placement made without looking at loads, the "before" of a plan:
    /// no replica, experts in index order in equal runs (expert e on GPU e x GPUs / experts).
    public static func contiguousGPULoads(_ loads: [Double], gpus: Int) -> [Double] {
        var out = [Double](repeating: 0, count: gpus)
        for (e, w) in loads.enumerated() { out[e * gpus / loads.count] += w }
        return out
    }
}
