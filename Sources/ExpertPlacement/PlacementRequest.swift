/// A plan as it is asked for before the profile is read: the deployment in the counts a user
/// gives (nodes as a count or as GPUs per node; slots as a count or as redundant slots per GPU),
/// which become a `Topology` once the experts per layer are known, and the planner's choices.
public struct PlacementRequest: Sendable {
    /// How the GPUs split into nodes.
    public enum Nodes: Sendable, Equatable {
        case count(Int)
        case gpusPerNode(Int)
    }

    /// Physical expert slots per layer.
    public enum Slots: Sendable, Equatable {
        case count(Int)
        /// The experts plus this many redundant slots per GPU, rounded up to a multiple of the
        /// GPUs (every GPU holds the same number of slots). 0: the experts rounded up.
        case redundantPerGPU(Int)
        /// The experts plus this many redundant slots in all (SGLang's `--ep-num-redundant-experts`).
        case redundant(Int)
    }

    public var gpus: Int
    public var nodes: Nodes
    public var slots: Slots
    public var groups: Int
    public var policy: Policy?
    public var algorithm: Algorithm
    public var routing: Routing?
    public var maxNodesPerToken: Double?
    public var targetImbalance: Double?
    public var threads: Int

    public init(gpus: Int, nodes: Nodes = .count(1), slots: Slots = .redundantPerGPU(0), groups: Int = 1,
                policy: Policy? = nil, algorithm: Algorithm = .moetool, routing: Routing? = nil,
                maxNodesPerToken: Double? = nil, targetImbalance: Double? = nil, threads: Int = 0) {
        self.gpus = gpus
        self.nodes = nodes
        self.slots = slots
        self.groups = groups
        self.policy = policy
        self.algorithm = algorithm
        self.routing = routing
        self.maxNodesPerToken = maxNodesPerToken
        self.targetImbalance = targetImbalance
        self.threads = threads
    }

    /// The slots per layer for `experts` experts per layer.
    public func slotCount(experts: Int) -> Int {
        switch slots {
        case .count(let n): return n
        case .redundantPerGPU(let r):
            let wanted = experts + gpus * r
            return (wanted + gpus - 1) / gpus * gpus
        case .redundant(let r): return experts + r
        }
    }

    /// The deployment for a profile of `experts` experts per layer, every constraint checked.
    public func topology(experts: Int) throws(PlacementError) -> Topology {
        let nodeCount: Int
        switch nodes {
        case .count(let n): nodeCount = n
        case .gpusPerNode(let per):
            guard per >= 1, gpus % per == 0 else {
                throw PlacementError(.invalidTopology, "GPUs (\(gpus)) must be a multiple of the GPUs per node (\(per)): every node has the same number of GPUs")
            }
            nodeCount = gpus / per
        }
        return try Topology(experts: experts, slots: slotCount(experts: experts), gpus: gpus, nodes: nodeCount, groups: groups)
    }

    /// What the planner is handed once the topology is known (and the placement to re-plan
    /// from, if any).
    public func planRequest(topology: Topology, previous: [LayerPlacement]? = nil) -> PlanRequest {
        PlanRequest(topology: topology, policy: policy, algorithm: algorithm, routing: routing,
                    maxNodesPerToken: maxNodesPerToken, previous: previous, targetImbalance: targetImbalance,
                    threads: threads)
    }
}
