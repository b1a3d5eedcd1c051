/// The shape of an expert-parallel deployment: physical expert slots per MoE layer spread
/// evenly over GPUs, GPUs spread evenly over nodes, logical experts in equal-sized groups.
public struct Topology: Sendable, Equatable {
    public let experts: Int
    public let slots: Int
    public let gpus: Int
    public let nodes: Int
    public let groups: Int

    public var slotsPerGPU: Int { slots / gpus }
    public var gpusPerNode: Int { gpus / nodes }
    public var expertsPerGroup: Int { experts / groups }
    public var redundantSlots: Int { slots - experts }

    /// The most physical expert slots a plan may have, per layer and over all its layers
    /// together (memory and the placement file grow with slots x layers; DeepSeek-V3 on 32 GPUs
    /// has 58 x 288).
    public static let maxSlots = 1 << 22
    /// The most GPUs a plan spreads one layer over (expert-parallel deployments use tens to
    /// hundreds): the swap search takes seconds per layer at this size.
    public static let maxGPUs = 4096

    /// Checks every constraint and names the first one broken.
    public init(experts: Int, slots: Int, gpus: Int, nodes: Int, groups: Int) throws(PlacementError) {
        guard experts >= 1 else { throw PlacementError(.invalidTopology, "the profile has no experts") }
        guard gpus >= 1, gpus <= Topology.maxGPUs else { throw PlacementError(.invalidTopology, "GPUs must be 1 to \(Topology.maxGPUs) (got \(gpus))") }
        guard nodes >= 1 else { throw PlacementError(.invalidTopology, "nodes must be at least 1 (got \(nodes))") }
        guard groups >= 1 else { throw PlacementError(.invalidTopology, "expert groups must be at least 1 (got \(groups))") }
        guard slots <= Topology.maxSlots else {
            throw PlacementError(.planTooLarge, "\(slots) slots per layer is more than moetool plans (\(Topology.maxSlots))")
        }
        guard slots >= experts else {
            throw PlacementError(.invalidTopology, "slots (\(slots)) must be at least the number of logical experts (\(experts)): every expert needs a slot")
        }
        guard slots % gpus == 0 else {
            throw PlacementError(.invalidTopology, "slots (\(slots)) must be a multiple of the GPU count (\(gpus)): every GPU holds the same number of slots")
        }
        guard slots / gpus <= experts else {
            throw PlacementError(.invalidTopology, "\(slots / gpus) slots per GPU is more than the \(experts) experts: a GPU would hold two replicas of an expert, which balances nothing; use at most \(experts) slots per GPU")
        }
        guard gpus % nodes == 0 else {
            throw PlacementError(.invalidTopology, "GPUs (\(gpus)) must be a multiple of the node count (\(nodes)): every node has the same number of GPUs")
        }
        guard experts % groups == 0 else {
            throw PlacementError(.invalidTopology, "experts (\(experts)) must be divisible by the expert groups (\(groups))")
        }
        self.experts = experts
        self.slots = slots
        self.gpus = gpus
        self.nodes = nodes
        self.groups = groups
    }

    /// Whether whole groups can be kept on nodes: groups divide evenly over nodes and every
    /// node has at least as many slots as the experts it must hold.
    public var hierarchicalProblem: PlacementError? {
        if groups % nodes != 0 {
            return PlacementError(.hierarchicalImpossible, "expert groups (\(groups)) must be divisible by nodes (\(nodes)) for the hierarchical policy")
        }
        return nil
    }

    /// The same deployment seen as one node with one group (the global policy).
    public var flattened: Topology {
        try! Topology(experts: experts, slots: slots, gpus: gpus, nodes: 1, groups: 1)
    }

    /// Bytes the redundant replicas of `layers` layers take at `bytesPerExpert` each, or nil
    /// above 2^64 - 1.
    public func redundantBytes(bytesPerExpert: UInt64, layers: Int) -> UInt64? {
        let (total, overflow) = bytesPerExpert.multipliedReportingOverflow(by: UInt64(redundantSlots) * UInt64(layers))
        return overflow ? nil : total
    }

    public func node(ofGPU g: Int) -> Int { g / gpusPerNode }
    public func gpu(ofSlot s: Int) -> Int { s / slotsPerGPU }
}

public enum Policy: String, Sendable, CaseIterable {
    /// Whole expert groups on nodes: group-limited routing reaches at most topk_group nodes.
    case hierarchical
    /// One pool of slots over all GPUs: the best balance, traffic to any node.
    case global
}

/// Where every physical expert of one MoE layer lives.
public struct LayerPlacement: Sendable, Equatable {
    /// The logical expert in each physical slot, GPU-major (GPU 0's slots first).
    public var phy2log: [Int]
    /// Each slot's replica rank among the replicas of its expert (0 = first).
    public var phyrank: [Int]
    /// Replicas per logical expert.
    public var logcnt: [Int]

    public init(phy2log: [Int], phyrank: [Int], logcnt: [Int]) {
        self.phy2log = phy2log
        self.phyrank = phyrank
        self.logcnt = logcnt
    }

    /// Builds ranks and counts from slot order.
    public init(phy2log: [Int], experts: Int) {
        var cnt = [Int](repeating: 0, count: experts)
        var rank = [Int](repeating: 0, count: phy2log.count)
        for (s, e) in phy2log.enumerated() {
            rank[s] = cnt[e]
            cnt[e] += 1
        }
        self.init(phy2log: phy2log, phyrank: rank, logcnt: cnt)
    }

    /// Each logical expert's slots ordered by replica rank, padded with -1 to `width`.
    public func log2phy(width: Int) -> [[Int]] {
        var out = [[Int]](repeating: [Int](repeating: -1, count: width), count: logcnt.count)
        for (s, e) in phy2log.enumerated() where phyrank[s] < width {
            out[e][phyrank[s]] = s
        }
        return out
    }
}
