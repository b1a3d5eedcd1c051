/// Re-planning from a placement already deployed: reach a balance target while changing as few
/// slots as possible (every changed slot is an expert's weights copied to a GPU).
enum Incremental {
    /// The most slots per layer re-planned from a previous placement: the greedy search weighs
    /// every pair of slots per move (768 slots x 58 layers took 31 s, 512 slots 5 s).
    static let maxSlots = 512

    struct Result {
        var placement: LayerPlacement
        var moved: Int
    }

    static func reach(target: Double, from previous: LayerPlacement, fresh: LayerPlacement, loads: [Double],
                      topology t: Topology, policy: Policy) -> Result {
        let total = loads.reduce(0, +)
        let mean = total / Double(t.gpus)
        guard mean > 0 else { return Result(placement: previous, moved: 0) }
        let aligned = align(fresh, to: previous, topology: t)
        let alignedMoves = changed(aligned.phy2log, previous.phy2log)
        var state = State(previous.phy2log, loads: loads, topology: t)
        while state.maxLoad / mean > target {
            guard state.moved < alignedMoves, state.step(sameNode: policy == .hierarchical) else { break }
        }
        let greedy = LayerPlacement(phy2log: state.phy2log, experts: t.experts)
        let greedyMoves = state.moved
        if state.maxLoad / mean <= target, greedyMoves <= alignedMoves {
            return Result(placement: greedy, moved: greedyMoves)
        }
        return Result(placement: aligned, moved: alignedMoves)
    }

    static func changed(_ a: [Int], _ b: [Int]) -> Int {
        zip(a, b).reduce(0) { $0 + ($1.0 != $1.1 ? 1 : 0) }
    }

    /// Greedy single moves from the deployed placement: a swap of two slots (two copies) or one
    /// slot handed from an expert with replicas to spare to an expert on the heaviest GPU.
    struct State {
        let loads: [Double]
        let t: Topology
        let original: [Int]
        var phy2log: [Int]
        var count: [Int]
        var gpuLoad: [Double]

        init(_ phy2log: [Int], loads: [Double], topology: Topology) {
            self.loads = loads
            self.t = topology
            self.original = phy2log
            self.phy2log = phy2log
            count = [Int](repeating: 0, count: topology.experts)
            for e in phy2log { count[e] += 1 }
            gpuLoad = []
            recompute()
        }

        var maxLoad: Double { gpuLoad.max() ?? 0 }
        var moved: Int { changed(phy2log, original) }

        mutating func recompute() {
            gpuLoad = [Double](repeating: 0, count: t.gpus)
            for (s, e) in phy2log.enumerated() { gpuLoad[t.gpu(ofSlot: s)] += loads[e] / Double(count[e]) }
        }

        func gpuHolds(_ g: Int, _ e: Int) -> Bool {
            phy2log[(g * t.slotsPerGPU)..<((g + 1) * t.slotsPerGPU)].contains(e)
        }

        /// Applies the move that lowers the heaviest GPU most per slot changed; false when none does.
        mutating func step(sameNode: Bool) -> Bool {
            var a = 0
            for g in gpuLoad.indices where gpuLoad[g] > gpuLoad[a] { a = g }
            let top = gpuLoad[a]
            let k = t.slotsPerGPU
            // The two heaviest GPUs other than a: the heaviest left untouched by a swap with b.
            var first = -1, second = -1
            for g in gpuLoad.indices where g != a {
                if first < 0 || gpuLoad[g] > gpuLoad[first] { second = first; first = g } else if second < 0 || gpuLoad[g] > gpuLoad[second] { second = g }
            }
            func othersMax(except b: Int) -> Double {
                let g = b == first ? second : first
                return g < 0 ? -Double.infinity : gpuLoad[g]
            }
            var best: (gain: Double, apply: (inout State) -> Void)? = nil
            func consider(_ newMax: Double, cost: Int, _ apply: @escaping (inout State) -> Void) {
                let gain = (top - newMax) / Double(cost)
                if newMax.isClearlyBelow(top), best == nil || gain > best!.gain { best = (gain, apply) }
            }
            // Swaps.
            for xs in (a * k)..<((a + 1) * k) {
                let x = phy2log[xs]
                let lx = loads[x] / Double(count[x])
                for b in 0..<t.gpus where b != a && (!sameNode || t.node(ofGPU: b) == t.node(ofGPU: a)) {
                    guard !gpuHolds(b, x) else { continue }
                    for ys in (b * k)..<((b + 1) * k) {
                        let y = phy2log[ys]
                        let d = lx - loads[y] / Double(count[y])
                        guard d > 0, !gpuHolds(a, y) else { continue }
                        let newMax = max(top - d, gpuLoad[b] + d, othersMax(except: b))
                        consider(newMax, cost: 2) { s in
                            s.phy2log.swapAt(xs, ys)
                            s.recompute()
                        }
                    }
                }
            }
            // One slot from a donor expert to a receiver on the heaviest GPU.
            for xs in (a * k)..<((a + 1) * k) {
                let r = phy2log[xs]
                guard count[r] < t.gpus else { continue }
                for d in 0..<t.experts where d != r && count[d] > 1 {
                    var base = gpuLoad
                    for (s, e) in phy2log.enumerated() where e == r || e == d {
                        let g = t.gpu(ofSlot: s)
                        if e == r { base[g] += loads[r] / Double(count[r] + 1) - loads[r] / Double(count[r]) }
                        else { base[g] += loads[d] / Double(count[d] - 1) - loads[d] / Double(count[d]) }
                    }
                    for (zs, e) in phy2log.enumerated() where e == d {
                        let g = t.gpu(ofSlot: zs)
                        if gpuHolds(g, r) { continue }
                        if sameNode && t.node(ofGPU: g) != t.node(ofGPU: a) { continue }
                        var loadsAfter = base
                        loadsAfter[g] += loads[r] / Double(count[r] + 1) - loads[d] / Double(count[d] - 1)
                        consider(loadsAfter.max() ?? 0, cost: 1) { s in
                            s.phy2log[zs] = r
                            s.count[r] += 1
                            s.count[d] -= 1
                            s.recompute()
                        }
                    }
                }
            }
            guard let best else { return false }
            best.apply(&self)
            return true
        }
    }

    /// The fresh placement with its nodes, GPUs and slots renumbered to keep as many slots as
    /// possible where the previous placement had them (whole nodes, then GPUs within a node).
    static func align(_ fresh: LayerPlacement, to previous: LayerPlacement, topology t: Topology) -> LayerPlacement {
        let k = t.slotsPerGPU
        func gpuSlots(_ p: LayerPlacement, _ g: Int) -> [Int] { Array(p.phy2log[(g * k)..<((g + 1) * k)]) }
        func overlap(_ a: [Int], _ b: [Int]) -> Int {
            var counts: [Int: Int] = [:]
            for e in a { counts[e, default: 0] += 1 }
            var n = 0
            for e in b where (counts[e] ?? 0) > 0 { counts[e]! -= 1; n += 1 }
            return n
        }
        /// Greedy matching: the pair with the most in common first.
        func match(_ n: Int, _ score: (Int, Int) -> Int) -> [Int] {
            var pairs: [(Int, Int, Int)] = []
            for i in 0..<n { for j in 0..<n { pairs.append((score(i, j), i, j)) } }
            pairs.sort { $0.0 > $1.0 || ($0.0 == $1.0 && ($0.1, $0.2) < ($1.1, $1.2)) }
            var target = [Int](repeating: -1, count: n)
            var taken = [Bool](repeating: false, count: n)
            for (_, i, j) in pairs where target[i] < 0 && !taken[j] {
                target[i] = j
                taken[j] = true
            }
            return target
        }
        let gpn = t.gpusPerNode
        let nodeSlots = { (p: LayerPlacement, n: Int) in Array(p.phy2log[(n * gpn * k)..<((n + 1) * gpn * k)]) }
        let nodeTarget = match(t.nodes) { overlap(nodeSlots(fresh, $0), nodeSlots(previous, $1)) }
        var out = [Int](repeating: 0, count: t.slots)
        for n in 0..<t.nodes {
            let m = nodeTarget[n]
            let gpuTarget = match(gpn) { overlap(gpuSlots(fresh, n * gpn + $0), gpuSlots(previous, m * gpn + $1)) }
            for g in 0..<gpn {
                let dst = m * gpn + gpuTarget[g]
                var pending = gpuSlots(fresh, n * gpn + g)
                let old = gpuSlots(previous, dst)
                var slot = [Int?](repeating: nil, count: k)
                for (i, e) in old.enumerated() {
                    if let j = pending.firstIndex(of: e) { slot[i] = e; pending.remove(at: j) }
                }
                for i in 0..<k where slot[i] == nil { slot[i] = pending.removeFirst() }
                for i in 0..<k { out[dst * k + i] = slot[i]! }
            }
        }
        return LayerPlacement(phy2log: out, experts: t.experts)
    }
}
