import Support

/// One window's imbalance (max / mean GPU load, per layer) under three placements.
public struct WindowImbalance: Sendable {
    /// [layer]: the one placement planned for every window.
    public var robust: [Double]
    /// [layer]: EPLB's placement of the mean load.
    public var eplbMean: [Double]
    /// [layer]: a placement planned for this window alone (from the previous window's, with `--previous`).
    public var replanned: [Double]
    /// With a previous placement: slots the re-plan for this window changed (from the previous
    /// window's re-plan; the first from the deployed placement).
    public var moved: Int?

    /// The mean of `v` (1 for none: no load, no imbalance).
    public static func mean(_ v: [Double]) -> Double { v.isEmpty ? 1 : v.reduce(0, +) / Double(v.count) }
    public var meanRobust: Double { Self.mean(robust) }
    public var meanEPLBMean: Double { Self.mean(eplbMean) }
    public var meanReplanned: Double { Self.mean(replanned) }
}

/// A placement planned for a series of windows, and how it fares in each.
public struct DriftPlan: Sendable {
    public var objective: RobustObjective
    /// The chosen placement, its metrics measured on the mean load (what `-o` writes). With a
    /// previous placement, its slots are renumbered to keep as many as possible where they were,
    /// and `moved` counts the rest.
    public var robust: Plan
    /// EPLB's placement of the mean load, its metrics on the mean load.
    public var eplbMean: Plan
    public var windows: [WindowImbalance]

    /// [layer]: the objective over the windows of each placement's imbalance.
    public func objectivePerLayer(_ column: KeyPath<WindowImbalance, [Double]>) -> [Double] {
        (0..<robust.layers.count).map { l in objective.of(windows.map { $0[keyPath: column][l] }) }
    }
}

/// Planning one placement for loads that drift: the windows of a `LoadSeries`.
///
/// Per layer, with each window's loads scaled so its mean GPU load is 1 (its imbalance is then
/// its heaviest GPU's load, and a busy window does not outweigh a quiet one):
/// 1. **Replica counts** by the min-max rule applied to each expert's robust load: its largest
///    scaled load over the windows (for `max`; its percentile for `pNN`). For `max` this gives
///    the counts that minimise the heaviest replica of the worst window, a lower bound of the
///    objective for any packing, just as the single-profile planner's counts do for one profile.
/// 2. **Packing against every window at once**: replicas, heaviest robust load first, each onto
///    the GPU (with a free slot, not holding the expert) whose load after it is lowest in its
///    worst window (then lowest summed over windows). One window's greedy would pack each GPU
///    to the same total, blind to whether its experts peak together later.
/// 3. **Swaps** between the GPU at the objective's peak and any other (inside its node for the
///    hierarchical policy), the swap that lowers the objective most first (ties: the lowest
///    mean over windows of the heaviest GPU), while one lowers it; when none from that GPU does,
///    swaps from the heaviest GPU of each other window that lower the mean without raising the
///    objective.
/// The same swaps also run from moetool's and EPLB's placements of the mean load, which keep
/// their own replica counts; the best of the three by the objective is kept, so the result is
/// never worse, per layer, than planning the mean. The groups-to-nodes split of the hierarchical
/// policy starts from the mean plan's and moves groups between nodes, two at a time, while that
/// lowers the objective of the heaviest node over the windows (a bound on the heaviest GPU).
public enum DriftPlanner {
    /// The most swap steps per layer and start, beyond which the search stops (each step weighs
    /// slots-per-GPU^2 x GPUs candidate swaps against every window).
    static let maxSwapSteps = 400

    public static func plan(_ series: LoadSeries, _ request: PlanRequest, objective: RobustObjective) throws(PlacementError) -> DriftPlan {
        let mean = series.mean.loads
        var fresh = request
        fresh.previous = nil
        let meanPlan = try PlacementPlanner.plan(mean, fresh)
        var eplbRequest = fresh
        eplbRequest.algorithm = .eplb
        let eplbMean = request.algorithm == .eplb ? meanPlan : try PlacementPlanner.plan(mean, eplbRequest)

        // Re-planned per window; with a previous placement, each from the one before.
        var replans: [Plan] = []
        var previous = request.previous
        for w in series.windows {
            var r = request
            r.previous = previous
            let p = try PlacementPlanner.plan(w.loads, r)
            if request.previous != nil { previous = p.layers.map(\.placement) }
            replans.append(p)
        }

        let t = request.topology
        let chosen: [LayerPlacement] = request.algorithm == .eplb
            ? eplbMean.layers.map(\.placement)
            : parallelMap(mean.count, threads: request.threads) { l in
                let windowLoads = series.windows.map { $0.loads[l] }
                return place(windowLoads, topology: t, policy: meanPlan.layers[l].policy, objective: objective,
                             starts: [meanPlan.layers[l].placement, eplbMean.layers[l].placement])
            }
        var robust = meanPlan
        robust.request.previous = request.previous
        for l in robust.layers.indices {
            var p = chosen[l]
            if let prev = request.previous?[l] {
                p = Incremental.align(p, to: prev, topology: t)
                robust.layers[l].moved = Incremental.changed(p.phy2log, prev.phy2log)
            }
            robust.layers[l].placement = p
            robust.layers[l].metrics = PlacementMetrics.measure(p, loads: mean[l], topology: t, routing: request.routing, layerSeed: UInt64(l))
        }

        let windows = series.windows.enumerated().map { w, profile in
            WindowImbalance(
                robust: imbalances(robust, profile.loads),
                eplbMean: imbalances(eplbMean, profile.loads),
                replanned: replans[w].layers.map(\.metrics.imbalance),
                moved: replans[w].moved)
        }
        return DriftPlan(objective: objective, robust: robust, eplbMean: eplbMean, windows: windows)
    }

    /// [layer]: each layer's imbalance of `plan`'s placement under `loads` [layer][expert].
    static func imbalances(_ plan: Plan, _ loads: [[Double]]) -> [Double] {
        let t = plan.request.topology
        return plan.layers.enumerated().map { l, layer in imbalance(layer.placement, loads[l], t) }
    }

    static func imbalance(_ p: LayerPlacement, _ loads: [Double], _ t: Topology) -> Double {
        let g = PlacementMetrics.gpuLoads(p, loads: loads, topology: t)
        let mean = g.reduce(0, +) / Double(t.gpus)
        return mean > 0 ? (g.max() ?? 0) / mean : 1
    }

    /// One layer: windowLoads [window][expert]; `starts`, placements of the same layer the
    /// result must be at least as good as (searched from too).
    static func place(_ windowLoads: [[Double]], topology t: Topology, policy: Policy, objective: RobustObjective,
                      starts: [LayerPlacement]) -> LayerPlacement {
        // Windows with no load have imbalance 1 under any placement: they constrain nothing.
        let scaled: [[Double]] = windowLoads.compactMap { loads in
            let total = loads.reduce(0, +)
            return total > 0 ? loads.map { $0 * Double(t.gpus) / total } : nil
        }
        guard !scaled.isEmpty else { return starts[0] }
        let nodes = policy == .hierarchical ? t.nodes : 1
        var nodeOf = nodeOfExpert(starts[0], t)
        if nodes > 1 { nodeOf = robustGroupSplit(scaled, topology: t, objective: objective, from: nodeOf) }
        var candidates = [greedy(scaled, topology: t, nodes: nodes, objective: objective, nodeOf: nodeOf)]
        candidates += starts
        var best: (placement: LayerPlacement, score: Score)? = nil
        for c in candidates {
            var search = SwapSearch(c, scaled: scaled, topology: t, nodes: nodes, objective: objective)
            search.run(maxSteps: maxSwapSteps)
            let result = (search.placement, search.score)
            if best == nil || result.1 < best!.score { best = result }
        }
        return best!.placement
    }

    /// The node of each expert's first replica (under the hierarchical policy, all its replicas').
    static func nodeOfExpert(_ p: LayerPlacement, _ t: Topology) -> [Int] {
        var node = [Int](repeating: -1, count: t.experts)
        for (s, e) in p.phy2log.enumerated() where node[e] < 0 { node[e] = t.node(ofGPU: t.gpu(ofSlot: s)) }
        return node
    }

    /// Hierarchical: groups moved between nodes, two at a time (the pair that lowers it most
    /// first), while that lowers the objective of the heaviest node's load over the windows: a
    /// bound on the heaviest GPU that no placement inside the nodes can beat. Starts from the
    /// mean plan's split (`nodeOf` [expert]); returns the new one.
    static func robustGroupSplit(_ scaled: [[Double]], topology t: Topology, objective: RobustObjective, from nodeOf: [Int]) -> [Int] {
        let size = t.expertsPerGroup
        var groupNode = (0..<t.groups).map { nodeOf[$0 * size] }
        let groupLoad = scaled.map { w in (0..<t.groups).map { g in (0..<size).reduce(0.0) { $0 + w[g * size + $1] } } }
        func score(_ groupNode: [Int]) -> Score {
            let peaks = groupLoad.map { loads -> Double in
                var node = [Double](repeating: 0, count: t.nodes)
                for (g, n) in groupNode.enumerated() { node[n] += loads[g] }
                return node.max()!
            }
            return Score(objective: objective.of(peaks), mean: peaks.reduce(0, +) / Double(peaks.count))
        }
        var current = score(groupNode)
        for _ in 0..<(4 * t.groups) {
            var best: (score: Score, a: Int, b: Int)? = nil
            for a in 0..<t.groups {
                for b in (a + 1)..<t.groups where groupNode[a] != groupNode[b] {
                    var trial = groupNode
                    trial.swapAt(a, b)
                    let s = score(trial)
                    if s < (best?.score ?? current) { best = (s, a, b) }
                }
            }
            guard let best else { break }
            groupNode.swapAt(best.a, best.b)
            current = best.score
        }
        return (0..<t.experts).map { groupNode[$0 / size] }
    }

    /// The objective and, to break its ties, the mean over windows of the heaviest GPU.
    struct Score: Comparable {
        var objective: Double
        var mean: Double

        static func < (a: Score, b: Score) -> Bool {
            a.objective.isClearlyBelow(b.objective) || (!b.objective.isClearlyBelow(a.objective) && a.mean.isClearlyBelow(b.mean))
        }
    }

    /// Steps 1 and 2: robust replica counts per node, packed against every window.
    /// scaled: [window][expert]; nodeOf: [expert] (all 0 with one node).
    static func greedy(_ scaled: [[Double]], topology t: Topology, nodes: Int, objective: RobustObjective, nodeOf: [Int]) -> LayerPlacement {
        let windows = scaled.count
        let robustLoad = (0..<t.experts).map { e in objective.of(scaled.map { $0[e] }) }
        let gpusPerNode = t.gpus / nodes
        var phy2log: [Int] = []
        phy2log.reserveCapacity(t.slots)
        for n in 0..<nodes {
            let experts = nodes == 1 ? Array(0..<t.experts) : (0..<t.experts).filter { nodeOf[$0] == n }
            let count = Planner.allocate(experts.map { robustLoad[$0] }, slots: t.slots / nodes, cap: gpusPerNode)
            // Replicas, heaviest robust load first (then expert index).
            var replicas: [(expert: Int, count: Int)] = []
            for (i, e) in experts.enumerated() { for _ in 0..<count[i] { replicas.append((e, count[i])) } }
            replicas.sort { a, b in
                let (la, lb) = (robustLoad[a.expert] / Double(a.count), robustLoad[b.expert] / Double(b.count))
                return la > lb || (la == lb && a.expert < b.expert)
            }
            var load = [Double](repeating: 0, count: gpusPerNode * windows)  // [gpu][window]
            var held = [[Int]](repeating: [], count: gpusPerNode)
            for r in replicas {
                var best = -1
                var bestKey = (Double.infinity, Double.infinity)
                for pass in 0..<2 {  // a GPU already holding the expert only when no other has room
                    for g in 0..<gpusPerNode where held[g].count < t.slotsPerGPU && (pass == 1 || !held[g].contains(r.expert)) {
                        var peak = 0.0, sum = 0.0
                        for w in 0..<windows {
                            let v = load[g * windows + w] + scaled[w][r.expert] / Double(r.count)
                            peak = Swift.max(peak, v)
                            sum += v
                        }
                        if peak < bestKey.0 || (peak == bestKey.0 && sum < bestKey.1) { best = g; bestKey = (peak, sum) }
                    }
                    if best >= 0 { break }
                }
                held[best].append(r.expert)
                for w in 0..<windows { load[best * windows + w] += scaled[w][r.expert] / Double(r.count) }
            }
            for g in held { phy2log.append(contentsOf: g) }
        }
        return LayerPlacement(phy2log: phy2log, experts: t.experts)
    }

    /// Step 3: swaps that lower the objective over windows, from a placement (its replica counts kept).
    struct SwapSearch {
        let t: Topology
        let windows: Int
        let nodes: Int
        let objective: RobustObjective
        var phy2log: [Int]
        /// [slot][window]: the replica's scaled load.
        var slotLoad: [Double]
        /// [gpu][window].
        var gpuLoad: [Double]
        var score: Score

        init(_ p: LayerPlacement, scaled: [[Double]], topology: Topology, nodes: Int, objective: RobustObjective) {
            t = topology
            windows = scaled.count
            self.nodes = nodes
            self.objective = objective
            phy2log = p.phy2log
            slotLoad = [Double](repeating: 0, count: t.slots * windows)
            gpuLoad = [Double](repeating: 0, count: t.gpus * windows)
            for (s, e) in p.phy2log.enumerated() {
                for w in 0..<windows {
                    let v = scaled[w][e] / Double(p.logcnt[e])
                    slotLoad[s * windows + w] = v
                    gpuLoad[t.gpu(ofSlot: s) * windows + w] += v
                }
            }
            score = Score(objective: 0, mean: 0)
            score = measure(peaks())
        }

        var placement: LayerPlacement { LayerPlacement(phy2log: phy2log, experts: t.experts) }

        /// [window]: the heaviest GPU.
        func peaks() -> [Double] {
            var peak = [Double](repeating: 0, count: windows)
            for g in 0..<t.gpus { for w in 0..<windows { peak[w] = Swift.max(peak[w], gpuLoad[g * windows + w]) } }
            return peak
        }

        func measure(_ peak: [Double]) -> Score {
            Score(objective: objective.of(peak), mean: peak.reduce(0, +) / Double(windows))
        }

        func holds(_ g: Int, _ e: Int, except slot: Int) -> Bool {
            let k = t.slotsPerGPU
            for s in (g * k)..<(g * k + k) where s != slot && phy2log[s] == e { return true }
            return false
        }

        /// Each step tries the heaviest GPU of the window that sets the objective first; when no
        /// swap of its replicas improves the score, the heaviest GPUs of the other windows, heaviest
        /// window first (lowering one of them lowers the mean, the tie-breaker, and can open a way
        /// for the critical window later).
        mutating func run(maxSteps: Int) {
            for _ in 0..<maxSteps {
                let peak = peaks()
                let order = (0..<windows).sorted { peak[$0] < peak[$1] || (peak[$0] == peak[$1] && $0 < $1) }
                let critical = order[objective.rank(windows)]
                var tried = Set<Int>()
                var found: (score: Score, x: Int, y: Int)? = nil
                for w in [critical] + order.reversed() where found == nil {
                    var a = 0
                    for g in 1..<t.gpus where gpuLoad[g * windows + w] > gpuLoad[a * windows + w] { a = g }
                    guard tried.insert(a).inserted else { continue }
                    found = bestSwap(from: a, lowering: w)
                }
                guard let best = found else { return }
                let a = t.gpu(ofSlot: best.x), b = t.gpu(ofSlot: best.y)
                for w in 0..<windows {
                    let d = slotLoad[best.x * windows + w] - slotLoad[best.y * windows + w]
                    gpuLoad[a * windows + w] -= d
                    gpuLoad[b * windows + w] += d
                    slotLoad.swapAt(best.x * windows + w, best.y * windows + w)
                }
                phy2log.swapAt(best.x, best.y)
                score = measure(peaks())
            }
        }

        /// The swap of a replica on GPU a with one on another GPU (of a's node, for the
        /// hierarchical policy) that improves the score most, among those that lower GPU a in
        /// window `target`; nil if none improves it.
        func bestSwap(from a: Int, lowering target: Int) -> (score: Score, x: Int, y: Int)? {
            let k = t.slotsPerGPU
            let gpusPerNode = t.gpus / nodes
            // Per window, the heaviest GPU other than a, and the one after (the peak left
            // untouched by a swap between a and b).
            var first = [Double](repeating: 0, count: windows), firstGPU = [Int](repeating: -1, count: windows)
            var second = [Double](repeating: 0, count: windows)
            for g in 0..<t.gpus where g != a {
                for w in 0..<windows {
                    let v = gpuLoad[g * windows + w]
                    if firstGPU[w] < 0 || v > first[w] { second[w] = first[w]; first[w] = v; firstGPU[w] = g }
                    else if v > second[w] { second[w] = v }
                }
            }
            let bRange = nodes == 1 ? 0..<t.gpus : (t.node(ofGPU: a) * gpusPerNode)..<((t.node(ofGPU: a) + 1) * gpusPerNode)
            var best: (score: Score, x: Int, y: Int)? = nil
            var trial = [Double](repeating: 0, count: windows)
            for b in bRange where b != a {
                for xs in (a * k)..<(a * k + k) where !holds(b, phy2log[xs], except: -1) {
                    for ys in (b * k)..<(b * k + k) where phy2log[ys] != phy2log[xs] && !holds(a, phy2log[ys], except: xs) {
                        guard slotLoad[xs * windows + target] > slotLoad[ys * windows + target] else { continue }
                        // With the max objective, a window above the best objective so far rules the swap out.
                        let limit = objective == .max ? (best?.score ?? score).objective * (1 + Tolerance.relative) : .infinity
                        var over = false
                        for w in 0..<windows {
                            let d = slotLoad[xs * windows + w] - slotLoad[ys * windows + w]
                            let others = firstGPU[w] == b ? second[w] : first[w]
                            trial[w] = Swift.max(others, gpuLoad[a * windows + w] - d, gpuLoad[b * windows + w] + d)
                            if trial[w] > limit { over = true; break }
                        }
                        if over { continue }
                        let s = measure(trial)
                        if s < (best?.score ?? score) { best = (s, xs, ys) }
                    }
                }
            }
            return best
        }
    }
}
