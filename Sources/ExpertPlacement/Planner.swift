/// moetool's placement (`--algorithm moetool`): for each layer,
/// 1. (hierarchical) a search over ways to put whole expert groups on nodes, scored by the
///    best heaviest GPU each node could reach;
/// 2. replicas per expert by min-max load per replica (capped at one per GPU of the node),
///    then moved one at a time while that lowers the heaviest GPU after packing;
/// 3. packing with no two replicas of an expert on one GPU, improved by swaps;
/// and the same swaps run from EPLB's own placement: the better of the two is kept, so the
/// result is never worse than the baseline.
public enum Planner {
    public static func place(_ loads: [Double], topology t: Topology, policy: Policy) -> LayerPlacement {
        let nodesUsed = policy == .global ? 1 : t.nodes
        let own = nodesUsed == 1
            ? assemble(nodeExperts: [Array(0..<t.experts)], loads: loads, topology: t, nodes: 1)
            : placeGroupsOnNodes(loads, topology: t)
        return betterOfOwnAndBaseline(own, loads: loads, topology: t, policy: policy, nodes: nodesUsed)
    }

    /// Hierarchical: the best few ways to put groups on nodes, and EPLB's, each planned in full;
    /// the lightest heaviest GPU wins.
    static func placeGroupsOnNodes(_ loads: [Double], topology t: Topology) -> LayerPlacement {
        let groupLoads = (0..<t.groups).map { g in
            (0..<t.expertsPerGroup).reduce(0.0) { $0 + loads[g * t.expertsPerGroup + $1] }
        }
        var candidates = groupAssignments(groupLoads: groupLoads, loads: loads, topology: t)
        let eplbParts = eplbGroupAssignment(groupLoads: groupLoads, nodes: t.nodes)
        let canonical = { (parts: [[Int]]) in Set(parts.map { Set($0) }) }
        if !candidates.contains(where: { canonical($0.parts) == canonical(eplbParts) }) {
            candidates.append((eplbParts, -Double.infinity))
        }
        var bestPlacement: LayerPlacement? = nil
        var bestPeak = Double.infinity
        for (parts, score) in candidates {
            // An assignment whose best possible heaviest GPU is no lighter cannot win.
            if score >= bestPeak { continue }
            let nodeExperts = parts.map { groups in groups.flatMap { g in (0..<t.expertsPerGroup).map { g * t.expertsPerGroup + $0 } } }
            let p = assemble(nodeExperts: nodeExperts, loads: loads, topology: t, nodes: t.nodes)
            let peak = PlacementMetrics.gpuLoads(p, loads: loads, topology: t).max() ?? 0
            if peak < bestPeak { bestPeak = peak; bestPlacement = p }
        }
        return bestPlacement!
    }

    /// EPLB's placement, with its co-located duplicates swapped apart and then improved, when
    /// ours is not already at least as good.
    static func betterOfOwnAndBaseline(_ own: LayerPlacement, loads: [Double], topology t: Topology, policy: Policy,
                                       nodes: Int) -> LayerPlacement {
        let baseline = EPLBBaseline.place(loads, topology: t, policy: policy)
        let ownPeak = PlacementMetrics.gpuLoads(own, loads: loads, topology: t).max() ?? 0
        let baselinePeak = PlacementMetrics.gpuLoads(baseline, loads: loads, topology: t).max() ?? 0
        if ownPeak <= baselinePeak { return own }
        let improved = improveWithinNodes(baseline, loads: loads, topology: t, nodes: nodes)
        let improvedPeak = PlacementMetrics.gpuLoads(improved, loads: loads, topology: t).max() ?? 0
        let ownDup = PlacementMetrics.colocatedDuplicates(own, topology: t)
        let improvedDup = PlacementMetrics.colocatedDuplicates(improved, topology: t)
        if (improvedDup, improvedPeak) < (ownDup, ownPeak) { return improved }
        return own
    }

    /// Replicas per expert minimising the heaviest load per replica; no expert gets more than
    /// `cap` (one per GPU) unless the slots leave no other choice. Ties: the lowest index.
    static func allocate(_ loads: [Double], slots: Int, cap: Int) -> [Int] {
        var count = [Int](repeating: 1, count: loads.count)
        var belowCap = Heap(loads.indices.filter { count[$0] < cap }.map { PerReplica(load: loads[$0], count: 1, index: $0) })
        var atCap: Heap<Heaviest<Double>>? = nil  // once every expert is at the cap
        for _ in loads.count..<slots {
            if let best = belowCap.popFirst()?.index {
                count[best] += 1
                if count[best] < cap { belowCap.insert(PerReplica(load: loads[best], count: count[best], index: best)) }
            } else {
                if atCap == nil { atCap = Heap(loads.indices.map { Heaviest(load: loads[$0] / Double(count[$0]), index: $0) }) }
                let best = atCap!.popFirst()!.index
                count[best] += 1
                atCap!.insert(Heaviest(load: loads[best] / Double(count[best]), index: best))
            }
        }
        return count
    }

    /// An expert's load per replica, heaviest first, then lowest index; compared as
    /// load x other count, which is exact for integer loads (no division to round).
    struct PerReplica: Comparable {
        let load: Double
        let count: Int
        let index: Int

        static func < (a: Self, b: Self) -> Bool {
            let (l, r) = (a.load * Double(b.count), b.load * Double(a.count))
            return l > r || (l == r && a.index < b.index)
        }
    }

    /// The smallest achievable heaviest per-replica load for `slots` replicas.
    public static func minMaxPerReplica(_ loads: [Double], slots: Int) -> Double {
        let count = allocate(loads, slots: slots, cap: Int.max)
        return loads.indices.map { loads[$0] / Double(count[$0]) }.max() ?? 0
    }

    /// The most experts whose count vectors are enumerated (one level of recursion each): a pool
    /// of 65536 experts with no redundant slot has one vector, and recursing 65536 deep overflowed
    /// the stack.
    static let exhaustiveExperts = 256
    /// The most candidates (count vectors, ways to put groups on nodes) tried one by one; above
    /// it, a search.
    static let exhaustiveLimit = 20_000
    /// The most packings the search over replica counts tries beyond the first, when the
    /// candidates are too many to try all (each is a full packing of the node).
    static let countSearchBudget = 32
    /// Packing stops within this fraction of the bound for any counts, the search over counts
    /// within `searchStopsWithin`: closer is below the noise of any load profile.
    static let packingStopsWithin = 1e-4
    static let searchStopsWithin = 2.5e-3

    /// Plans one node: its experts (global ids), its slots and GPUs; returns each GPU's experts.
    ///
    /// Replica counts start as min-max load per replica; when packing them leaves the heaviest
    /// GPU short of the bound, other counts are tried: every possible one for small pools,
    /// otherwise single replicas moved toward the heaviest GPU's experts and counts built from
    /// target loads per replica, within a budget of packings.
    static func planNode(experts: [Int], loads allLoads: [Double], gpus: Int, slotsPerGPU: Int) -> [[Int]] {
        var search = CountSearch(loads: experts.map { allLoads[$0] }, gpus: gpus, slotsPerGPU: slotsPerGPU)
        if search.searching {
            if !search.tryEveryCount() {
                search.moveReplicasTowardHeaviest()
                search.tryTargetLoads()
            }
        }
        return order(search.best, experts)
    }

    /// The search over one node's replica counts: the best packing so far, its counts, and the
    /// packings left to try. Loads: [node expert].
    struct CountSearch {
        let loads: [Double]
        let gpus: Int
        let slotsPerGPU: Int
        var slots: Int { gpus * slotsPerGPU }
        /// No packing of any replica counts beats the mean GPU load.
        let mean: Double
        /// The lightest heaviest replica any counts reach.
        let lightestPeak: Double
        /// Packing stops here; the search over counts at `enough`.
        let floor: Double
        let enough: Double
        var count: [Int]
        var best: Packing
        var budget = Planner.countSearchBudget

        init(loads: [Double], gpus: Int, slotsPerGPU: Int) {
            self.loads = loads
            self.gpus = gpus
            self.slotsPerGPU = slotsPerGPU
            mean = loads.reduce(0, +) / Double(gpus)
            lightestPeak = minMaxPerReplica(loads, slots: gpus * slotsPerGPU)
            let lowest = max(mean, lightestPeak)
            floor = lowest * (1 + Planner.packingStopsWithin)
            enough = lowest * (1 + Planner.searchStopsWithin)
            count = allocate(loads, slots: gpus * slotsPerGPU, cap: gpus)
            best = pack(loads, count: count, gpus: gpus, slotsPerGPU: slotsPerGPU, goodEnough: floor)
        }

        /// Whether the best packing is still far enough from the bound to try other counts.
        var searching: Bool { best.maxLoad > enough }

        /// No packing of these counts beats its heaviest replica, nor the mean.
        func bound(_ count: [Int]) -> Double {
            max(mean, loads.indices.map { loads[$0] / Double(count[$0]) }.max() ?? 0)
        }

        /// Packs `trial` unless its bound rules it out; keeps it if it is better.
        mutating func attempt(_ trial: [Int]) -> Bool {
            guard budget > 0, bound(trial).isClearlyBelow(best.maxLoad) else { return false }
            budget -= 1
            let p = pack(loads, count: trial, gpus: gpus, slotsPerGPU: slotsPerGPU, goodEnough: floor)
            guard p.maxLoad.isClearlyBelow(best.maxLoad) else { return false }
            best = p
            count = trial
            return true
        }

        /// Every count vector, pruned by its heaviest replica, when there are few enough;
        /// false (nothing tried) otherwise.
        mutating func tryEveryCount() -> Bool {
            guard loads.count <= exhaustiveExperts,
                  let ways = compositionCount(extra: slots - loads.count, parts: loads.count, cap: gpus - 1,
                                              limit: Planner.exhaustiveLimit) else { return false }
            budget = ways
            var trial = [Int](repeating: 1, count: loads.count)
            assign(0, slots - loads.count, 0, &trial)
            return true
        }

        /// Counts for experts `j...` with `left` extra replicas to give, the heaviest replica so far `peak`.
        private mutating func assign(_ j: Int, _ left: Int, _ peak: Double, _ trial: inout [Int]) {
            if !peak.isClearlyBelow(best.maxLoad) { return }
            if j == loads.count - 1 {
                guard left + 1 <= gpus else { return }
                trial[j] = left + 1
                _ = attempt(trial)
                return
            }
            for c in 1...min(gpus, left + 1) {
                trial[j] = c
                assign(j + 1, left - (c - 1), max(peak, loads[j] / Double(c)), &trial)
            }
        }

        /// Single replicas moved toward the experts on the heaviest GPU while that helps.
        mutating func moveReplicasTowardHeaviest() {
            search: while budget > 0, searching {
                var heaviest = 0
                for g in best.gpuLoad.indices where best.gpuLoad[g] > best.gpuLoad[heaviest] { heaviest = g }
                let onTop = best.items[heaviest].map { best.expert[$0] }.sorted {
                    loads[$0] / Double(count[$0]) > loads[$1] / Double(count[$1])
                }
                for receiver in onTop where count[receiver] < gpus {
                    // The donor whose load per replica grows least when it gives one up.
                    var donor = -1
                    for j in loads.indices where j != receiver && count[j] > 1 {
                        if donor < 0 || loads[j] * Double(count[donor] - 1) < loads[donor] * Double(count[j] - 1) { donor = j }
                    }
                    guard donor >= 0 else { break search }
                    var trial = count
                    trial[receiver] += 1
                    trial[donor] -= 1
                    if attempt(trial) { continue search }
                }
                break
            }
        }

        /// Counts from a target load per replica T (each expert split until its replicas are at
        /// most T), the slots left over going either to the heaviest replicas or, as small
        /// fillers, to the lightest experts. Low targets first.
        mutating func tryTargetLoads() {
            guard searching else { return }
            var targets = Set<Double>()
            for w in loads {
                for j in 1...min(gpus, 8) where w / Double(j) >= lightestPeak && w / Double(j) < best.maxLoad {
                    targets.insert(w / Double(j))
                }
            }
            for target in targets.sorted() where budget > 0 && searching {
                // Shaved by the tolerance: a load exactly k times the target needs k replicas, not k + 1.
                var base = loads.map { w in min(gpus, max(1, Int((w / target * (1 - Tolerance.relative)).rounded(.up)))) }
                var left = slots - base.reduce(0, +)
                guard left >= 0 else { continue }
                var fillers = base
                while left > 0 {
                    var heavy = -1, light = -1
                    for j in loads.indices {
                        if base[j] < gpus, heavy < 0 || loads[j] * Double(base[heavy]) > loads[heavy] * Double(base[j]) { heavy = j }
                        if fillers[j] < gpus, light < 0 || loads[j] * Double(fillers[light]) < loads[light] * Double(fillers[j]) { light = j }
                    }
                    guard heavy >= 0, light >= 0 else { break }
                    base[heavy] += 1
                    fillers[light] += 1
                    left -= 1
                }
                guard left == 0 else { continue }
                _ = attempt(base)
                _ = attempt(fillers)
            }
        }
    }

    /// Each GPU's experts (global ids), heaviest replica first.
    static func order(_ p: Packing, _ experts: [Int]) -> [[Int]] {
        p.items.map { slots in
            slots.sorted { p.load[$0] > p.load[$1] || (p.load[$0] == p.load[$1] && $0 < $1) }
                .map { experts[p.expert[$0]] }
        }
    }

    /// Ways to add `extra` replicas to `parts` experts with at most `cap` extra each, or nil
    /// above `limit`.
    static func compositionCount(extra: Int, parts: Int, cap: Int, limit: Int) -> Int? {
        guard extra >= 0, parts >= 1, cap >= 0 else { return nil }
        // ways[e]: ways to place e extras over the experts seen so far, held at most limit + 1.
        // Each expert takes 0 to cap: next[e] is the sum of ways over a window of cap + 1.
        var ways = [Int](repeating: 0, count: extra + 1)
        ways[0] = 1
        for p in 1...parts {
            var next = [Int](repeating: 0, count: extra + 1)
            var window = 0
            for e in 0...extra {
                window += ways[e]
                if e > cap { window -= ways[e - cap - 1] }
                next[e] = min(limit + 1, window)
            }
            ways = next
            // Any way over the experts so far that the others can complete is part of at least
            // one full way: past the limit there, past the limit in all.
            let rest = (parts - p) * min(cap, extra)
            if ways[max(0, extra - rest)...].contains(where: { $0 > limit }) { return nil }
        }
        return ways[extra] <= limit ? ways[extra] : nil
    }

    static func pack(_ loads: [Double], count: [Int], gpus: Int, slotsPerGPU: Int, goodEnough: Double = 0) -> Packing {
        var expert: [Int] = []
        var load: [Double] = []
        for (j, c) in count.enumerated() {
            for _ in 0..<c {
                expert.append(j)
                load.append(loads[j] / Double(c))
            }
        }
        return Packing(expert: expert, load: load, gpus: gpus, slotsPerGPU: slotsPerGPU, goodEnough: goodEnough)
    }

    /// Node by node, GPU by GPU: the slots in GPU-major order.
    static func assemble(nodeExperts: [[Int]], loads: [Double], topology t: Topology, nodes: Int) -> LayerPlacement {
        let gpusPerNode = t.gpus / nodes
        var phy2log: [Int] = []
        phy2log.reserveCapacity(t.slots)
        for experts in nodeExperts {
            for gpu in planNode(experts: experts, loads: loads, gpus: gpusPerNode, slotsPerGPU: t.slotsPerGPU) {
                phy2log.append(contentsOf: gpu)
            }
        }
        return LayerPlacement(phy2log: phy2log, experts: t.experts)
    }

    /// Swaps within each node (so groups stay where the placement put them) until the
    /// heaviest GPU of the node cannot be lowered; keeps the replica counts.
    static func improveWithinNodes(_ p: LayerPlacement, loads: [Double], topology t: Topology, nodes: Int) -> LayerPlacement {
        let gpusPerNode = t.gpus / nodes
        let slotsPerNode = t.slots / nodes
        var phy2log: [Int] = []
        for n in 0..<nodes {
            let slots = Array(p.phy2log[(n * slotsPerNode)..<((n + 1) * slotsPerNode)])
            let load = slots.map { loads[$0] / Double(p.logcnt[$0]) }
            let assignment = (0..<gpusPerNode).map { g in Array((g * t.slotsPerGPU)..<((g + 1) * t.slotsPerGPU)) }
            let packing = Packing(expert: slots, load: load, assignment: assignment, slotsPerGPU: t.slotsPerGPU)
            for gpu in packing.items { phy2log.append(contentsOf: gpu.map { slots[$0] }) }
        }
        return LayerPlacement(phy2log: phy2log, experts: t.experts)
    }

    /// EPLB's way of putting groups on nodes, as lists of groups per node.
    static func eplbGroupAssignment(groupLoads: [Double], nodes: Int) -> [[Int]] {
        let (pack, rank) = EPLBBaseline.balancedPacking(groupLoads.map { Float($0) }, packs: nodes)
        var parts = [[Int]](repeating: [], count: nodes)
        for g in groupLoads.indices { parts[pack[g]].append(g) }
        for n in 0..<nodes { parts[n].sort { rank[$0] < rank[$1] } }
        return parts
    }

    /// Ways to put groups on nodes (equal counts), best first by the heaviest GPU each node could
    /// at best reach: every way when there are few (at most `exhaustiveLimit`), otherwise pair
    /// swaps from EPLB's assignment while they help. Returns the best few.
    static func groupAssignments(groupLoads: [Double], loads: [Double], topology t: Topology,
                                 exhaustiveLimit: Int = Planner.exhaustiveLimit, keep: Int = 3) -> [(parts: [[Int]], score: Double)] {
        let perNode = t.groups / t.nodes
        let slotsPerNode = t.slots / t.nodes
        func score(_ parts: [[Int]]) -> Double {
            var worst = 0.0
            for groups in parts {
                var nodeLoads: [Double] = []
                for g in groups { for k in 0..<t.expertsPerGroup { nodeLoads.append(loads[g * t.expertsPerGroup + k]) } }
                let total = nodeLoads.reduce(0, +)
                let count = allocate(nodeLoads, slots: slotsPerNode, cap: t.gpusPerNode)
                let perReplica = nodeLoads.indices.map { nodeLoads[$0] / Double(count[$0]) }.max() ?? 0
                worst = max(worst, total / Double(t.gpusPerNode), perReplica)
            }
            return worst
        }
        var scored: [(parts: [[Int]], score: Double)] = []
        if partitionCount(items: t.groups, parts: t.nodes, limit: exhaustiveLimit) != nil {
            var parts = [[Int]](repeating: [], count: t.nodes)
            func assign(_ g: Int, opened: Int) {
                if g == t.groups {
                    scored.append((parts, score(parts)))
                    return
                }
                for n in 0..<min(opened + 1, t.nodes) where parts[n].count < perNode {
                    parts[n].append(g)
                    assign(g + 1, opened: max(opened, n + 1))
                    parts[n].removeLast()
                }
            }
            assign(0, opened: 0)
        } else {
            var parts = eplbGroupAssignment(groupLoads: groupLoads, nodes: t.nodes)
            var current = score(parts)
            var improved = true
            while improved {
                improved = false
                for a in 0..<t.nodes {
                    for b in (a + 1)..<t.nodes {
                        for i in parts[a].indices {
                            for j in parts[b].indices {
                                var trial = parts
                                (trial[a][i], trial[b][j]) = (parts[b][j], parts[a][i])
                                let s = score(trial)
                                if s.isClearlyBelow(current) { parts = trial; current = s; improved = true }
                            }
                        }
                    }
                }
            }
            scored.append((parts, current))
        }
        scored.sort { $0.score < $1.score }
        return Array(scored.prefix(keep))
    }

    /// The number of ways to split `items` into `parts` unlabeled equal parts, or nil above `limit`.
    static func partitionCount(items: Int, parts: Int, limit: Int) -> Int? {
        // items! / ((items/parts)!^parts * parts!) built as a product of binomials.
        let size = items / parts
        var total = 1.0
        var remaining = items
        for _ in 0..<parts {
            total *= binomial(remaining - 1, size - 1)  // the lowest remaining item picks its partners
            remaining -= size
            if total > Double(limit) { return nil }
        }
        return Int(total)
    }

    private static func binomial(_ n: Int, _ k: Int) -> Double {
        guard k >= 0, k <= n else { return k == 0 ? 1 : 0 }
        var r = 1.0
        for i in 0..<k { r = r * Double(n - i) / Double(i + 1) }
        return r.rounded()
    }
}
