/// DeepSeek's Expert Parallelism Load Balancer (EPLB), reimplemented from its description as
/// the baseline `--algorithm eplb`: the same steps, float32 arithmetic and tie rules (a stable
/// descending sort; the lowest index wins equal packs and equal per-replica loads), so its
/// output matches EPLB's wherever EPLB's own sort leaves ties in index order (every sort of 16
/// items or fewer, and any input without equal loads).
public enum EPLBBaseline {
    /// One layer. The global policy is the hierarchical one with a single group and node.
    public static func place(_ loads: [Double], topology t: Topology, policy: Policy) -> LayerPlacement {
        let w = loads.map { Float($0) }
        switch policy {
        case .hierarchical:
            return hierarchical(w, slots: t.slots, groups: t.groups, nodes: t.nodes, gpus: t.gpus)
        case .global:
            return hierarchical(w, slots: t.slots, groups: 1, nodes: 1, gpus: t.gpus)
        }
    }

    /// Items heaviest first, each into the lightest pack with room; equal packs: lowest index.
    static func balancedPacking(_ w: [Float], packs: Int) -> (pack: [Int], rank: [Int]) {
        let n = w.count
        let capacity = n / packs
        if capacity == 1 { return (Array(0..<n), [Int](repeating: 0, count: n)) }
        let order = (0..<n).sorted { w[$0] > w[$1] || (w[$0] == w[$1] && $0 < $1) }
        var packWeight = [Float](repeating: 0, count: packs)
        var packItems = [Int](repeating: 0, count: packs)
        var pack = [Int](repeating: 0, count: n)
        var rank = [Int](repeating: 0, count: n)
        // The packs with room, lightest first (a scan for the first strict minimum, in O(log packs)).
        var open = Heap((0..<packs).map { Lightest(load: Float(0), index: $0) })
        for i in order {
            let best = open.popFirst()!.index
            pack[i] = best
            rank[i] = packItems[best]
            packWeight[best] += w[i]
            packItems[best] += 1
            if packItems[best] < capacity { open.insert(Lightest(load: packWeight[best], index: best)) }
        }
        return (pack, rank)
    }

    /// Each extra slot to the expert with the heaviest load per replica (first index on ties).
    static func replicate(_ w: [Float], slots: Int) -> (phy2log: [Int], rank: [Int], count: [Int]) {
        let m = w.count
        var phy2log = Array(0..<m)
        var rank = [Int](repeating: 0, count: m)
        var count = [Int](repeating: 1, count: m)
        // Load per replica, heaviest first (a scan for the first strict maximum, in O(log m)).
        var heaviest = Heap((0..<m).map { Heaviest(load: w[$0], index: $0) })
        for _ in m..<slots {
            let best = heaviest.popFirst()!.index
            phy2log.append(best)
            rank.append(count[best])
            count[best] += 1
            heaviest.insert(Heaviest(load: w[best] / Float(count[best]), index: best))
        }
        return (phy2log, rank, count)
    }

    static func hierarchical(_ w: [Float], slots: Int, groups: Int, nodes: Int, gpus: Int) -> LayerPlacement {
        let experts = w.count
        let groupSize = experts / groups
        let groupsPerNode = groups / nodes
        let slotsPerGPU = slots / gpus
        let expertsPerNode = experts / nodes
        let slotsPerNode = slots / nodes
        let gpusPerNode = gpus / nodes

        // 1. Groups to nodes, then a node-major numbering of the experts.
        var groupLoad = [Float](repeating: 0, count: groups)
        for g in 0..<groups { for k in 0..<groupSize { groupLoad[g] += w[g * groupSize + k] } }
        let (groupNode, groupRank) = balancedPacking(groupLoad, packs: nodes)
        var mlog2log = [Int](repeating: 0, count: experts)
        for g in 0..<groups {
            for k in 0..<groupSize {
                mlog2log[(groupNode[g] * groupsPerNode + groupRank[g]) * groupSize + k] = g * groupSize + k
            }
        }

        var phy2log = [Int](repeating: 0, count: slots)
        var phyrank = [Int](repeating: 0, count: slots)
        var logcnt = [Int](repeating: 0, count: experts)
        for n in 0..<nodes {
            // 2. Replicas within the node.
            let local = (0..<expertsPerNode).map { w[mlog2log[n * expertsPerNode + $0]] }
            let (phy2mlog, rank, count) = replicate(local, slots: slotsPerNode)
            for k in 0..<expertsPerNode { logcnt[mlog2log[n * expertsPerNode + k]] = count[k] }
            // 3. The node's replicas onto its GPUs.
            let perReplica = phy2mlog.map { local[$0] / Float(count[$0]) }
            let (gpu, position) = balancedPacking(perReplica, packs: gpusPerNode)
            for p in 0..<slotsPerNode {
                let s = n * slotsPerNode + gpu[p] * slotsPerGPU + position[p]
                phy2log[s] = mlog2log[n * expertsPerNode + phy2mlog[p]]
                phyrank[s] = rank[p]
            }
        }
        return LayerPlacement(phy2log: phy2log, phyrank: phyrank, logcnt: logcnt)
    }
}
