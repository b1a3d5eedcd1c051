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
                                     tokens: Int = 2048, seed: UInt64 = 0) -> Double {
        let total = loads.reduce(0, +)
        guard total > 0 else { return 0 }
        var replicaNodes = [[Int]](repeating: [], count: t.experts)
        for (s, e) in p.phy2log.enumerated() { replicaNodes[e].append(t.node(ofGPU: t.gpu(ofSlot: s))) }
        let groupSize = t.expertsPerGroup
        let groupLoads = (0..<t.groups).map { g in (0..<groupSize).reduce(0.0) { $0 + loads[g * groupSize + $1] } }
        let pickGroups = min(routing.topkGroup ?? t.groups, t.groups)
        var rng = SplitMix64(seed: 0x9E37_79B9_7F4A_7C15 ^ seed)
        var touched = [Bool](repeating: false, count: t.nodes)
        var sum = 0
        var groupWeight = groupLoads
        var candidates: [Int] = []
        var weights: [Double] = []
        for _ in 0..<tokens {
            for i in groupWeight.indices { groupWeight[i] = groupLoads[i] }
            candidates.removeAll(keepingCapacity: true)
            for _ in 0..<pickGroups {
                guard let g = rng.pick(groupWeight) else { break }
                groupWeight[g] = 0
                for k in 0..<groupSize where loads[g * groupSize + k] > 0 { candidates.append(g * groupSize + k) }
            }
            weights = candidates.map { loads[$0] }
            for i in touched.indices { touched[i] = false }
            for _ in 0..<min(routing.topk, candidates.count) {
                guard let c = rng.pick(weights) else { break }
                weights[c] = 0
                let nodes = replicaNodes[candidates[c]]
                touched[nodes[Int(rng.next() % UInt64(nodes.count))]] = true
            }
            sum += touched.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        return Double(sum) / Double(tokens)
    }
}

/// A small, fast, seedable generator (SplitMix64).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A uniform double in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// An index drawn in proportion to the non-negative weights; nil when they sum to zero.
    mutating func pick(_ weights: [Double]) -> Int? {
        let total = weights.reduce(0, +)
        guard total > 0 else { return nil }
        var r = unit() * total
        var last = -1
        for (i, w) in weights.enumerated() where w > 0 {
            last = i
            if r < w { return i }
            r -= w
        }
        return last
    }
}
