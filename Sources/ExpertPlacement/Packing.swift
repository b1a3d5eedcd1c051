/// Replicas of one pool of experts packed onto GPUs with equal slot counts: the heaviest
/// first onto the lightest GPU with room that does not hold that expert yet, then swaps
/// between the heaviest GPU and any other until no swap lowers it.
struct Packing {
    /// Expert and load of each replica.
    let expert: [Int]
    let load: [Double]
    let slotsPerGPU: Int
    private(set) var items: [[Int]]
    private(set) var gpuLoad: [Double]

    var maxLoad: Double { gpuLoad.max() ?? 0 }

    /// Packs `expert`/`load` replicas onto `gpus` GPUs of `slotsPerGPU` slots.
    init(expert: [Int], load: [Double], gpus: Int, slotsPerGPU: Int, goodEnough: Double = 0) {
        self.expert = expert
        self.load = load
        self.slotsPerGPU = slotsPerGPU
        items = [[Int]](repeating: [], count: gpus)
        gpuLoad = [Double](repeating: 0, count: gpus)
        let order = (0..<expert.count).sorted {
            load[$0] > load[$1] || (load[$0] == load[$1] && (expert[$0] < expert[$1] || (expert[$0] == expert[$1] && $0 < $1)))
        }
        // Replicas of one expert are adjacent in this order, so the GPUs holding the current
        // expert are the ones used since its first replica: they wait in `holding` until the
        // next expert, and the lightest GPU with room is the first of `free`. Only when every
        // GPU with room holds the expert does a replica go beside another (the lightest of them).
        var free = Heap((0..<gpus).map { Lightest(load: 0.0, index: $0) })
        var holding = Heap<Lightest<Double>>()
        var current = -1
        for i in order {
            if expert[i] != current {
                while let g = holding.popFirst() { free.insert(g) }
                current = expert[i]
            }
            guard let g = (free.popFirst() ?? holding.popFirst())?.index else { break }
            place(i, on: g)
            if items[g].count < slotsPerGPU { holding.insert(Lightest(load: gpuLoad[g], index: g)) }
        }
        repairDuplicates()
        improve(goodEnough: goodEnough)
    }

    /// Starts from a given assignment (slots of each GPU) and improves it.
    init(expert: [Int], load: [Double], assignment: [[Int]], slotsPerGPU: Int) {
        self.expert = expert
        self.load = load
        self.slotsPerGPU = slotsPerGPU
        items = assignment
        gpuLoad = assignment.map { $0.reduce(0) { $0 + load[$1] } }
        repairDuplicates()
        improve()
    }

    private mutating func place(_ i: Int, on g: Int) {
        items[g].append(i)
        gpuLoad[g] += load[i]
    }

    func holds(_ g: Int, _ e: Int) -> Bool {
        items[g].contains { expert[$0] == e }
    }

    private func holdsOther(_ g: Int, _ e: Int, except i: Int) -> Bool {
        items[g].contains { $0 != i && expert[$0] == e }
    }

    /// Two replicas of one expert on a GPU spend memory for no balance: swap one away, to the
    /// GPU and partner whose loads change least. Left as it is only when no such swap exists.
    private mutating func repairDuplicates() {
        guard items.contains(where: { slots in Set(slots.map { expert[$0] }).count < slots.count }) else { return }
        for a in 0..<items.count {
            var k = 0
            while k < items[a].count {
                let x = items[a][k]
                guard holdsOther(a, expert[x], except: x) else { k += 1; continue }
                var best: (b: Int, j: Int, cost: Double)? = nil
                for b in 0..<items.count where b != a && !holds(b, expert[x]) {
                    for (j, y) in items[b].enumerated() where !holdsOther(a, expert[y], except: x) && expert[y] != expert[x] {
                        let d = load[x] - load[y]
                        let cost = max(gpuLoad[a] - d, gpuLoad[b] + d)
                        if best == nil || cost < best!.cost { best = (b, j, cost) }
                    }
                }
                if let best { swap(a, k, best.b, best.j) }
                k += 1
            }
        }
    }

    private mutating func swap(_ a: Int, _ k: Int, _ b: Int, _ j: Int) {
        let x = items[a][k], y = items[b][j]
        items[a][k] = y
        items[b][j] = x
        gpuLoad[a] += load[y] - load[x]
        gpuLoad[b] += load[x] - load[y]
    }

    /// Repeatedly swaps a replica on the heaviest GPU with a lighter one elsewhere when both
    /// GPUs end below the old maximum; stops when the heaviest GPU cannot be lowered or is
    /// down to `goodEnough`. Each step takes the swap that lowers the pair's maximum most (the
    /// first replica of the heaviest GPU, then the first GPU, then the first slot on ties).
    ///
    /// For a replica x (load lx) of the heaviest GPU (load top) and a GPU b (load lb), a swap
    /// with y moves d = lx - ly and leaves max(top - d, lb + d): the first term grows with ly,
    /// the second shrinks, so over b's replicas sorted by load the best is next to where they
    /// cross, found by binary search: a step costs O(slots log slotsPerGPU), not
    /// O(slots x slotsPerGPU). A replica y is usable when the heaviest GPU does not hold its
    /// expert (which also rules out x's own expert), and b is usable when it does not hold x's.
    mutating func improve(maxSteps: Int = 100_000, goodEnough: Double = 0) {
        let gpus = items.count
        guard gpus > 1 else { return }
        let k = slotsPerGPU
        guard items.allSatisfy({ $0.count == k }) else { return }
        var slot = items.flatMap { $0 }  // gpu g owns slot[g*k ..< g*k+k]
        var slotLoad = slot.map { load[$0] }
        var slotExpert = slot.map { expert[$0] }
        var gl = gpuLoad
        // Stamps that mark, in O(1) per look-up, the experts of the heaviest GPU and of the GPU
        // b being tried.
        let experts = (expert.max() ?? -1) + 1
        var onTopStamp = [Int](repeating: -1, count: experts)
        var onBStamp = [Int](repeating: -1, count: experts)
        var bStamp = 0
        // Per GPU, its slot positions by load, then position: byLoad[g*k ..< g*k+k].
        var byLoad = [Int](repeating: 0, count: slot.count)
        func sortGPU(_ g: Int) {
            let sorted = ((g * k)..<(g * k + k)).sorted { slotLoad[$0] < slotLoad[$1] || (slotLoad[$0] == slotLoad[$1] && $0 < $1) }
            for (i, s) in sorted.enumerated() { byLoad[g * k + i] = s }
        }
        for g in 0..<gpus { sortGPU(g) }
        // The GPUs lightest first (then by index); a swap changes two loads, which move within it.
        var byGPULoad = (0..<gpus).sorted { gl[$0] < gl[$1] || (gl[$0] == gl[$1] && $0 < $1) }
        func reposition(_ g: Int, from old: Double) {
            func before(_ l: Double, _ i: Int, _ h: Int) -> Bool { h != i && (gl[h] < l || (gl[h] == l && h < i)) }
            var lo = 0, hi = gpus  // where g is now, found by its old load
            while lo < hi { let m = (lo + hi) / 2; if before(old, g, byGPULoad[m]) { lo = m + 1 } else { hi = m } }
            byGPULoad.remove(at: lo)
            lo = 0; hi = gpus - 1
            while lo < hi { let m = (lo + hi) / 2; if before(gl[g], g, byGPULoad[m]) { lo = m + 1 } else { hi = m } }
            byGPULoad.insert(g, at: lo)
        }

        for step in 0..<maxSteps {
            var a = 0
            for g in 1..<gpus where gl[g] > gl[a] { a = g }
            let top = gl[a]
            if top <= goodEnough { break }
            let threshold = top - max(top * Tolerance.relative, Tolerance.absolute)
            for s in (a * k)..<(a * k + k) { onTopStamp[slotExpert[s]] = step }
            func usable(_ ys: Int) -> Bool { onTopStamp[slotExpert[ys]] != step }
            var bestPeak = threshold
            var bestX = -1
            var bestY = -1
            // The swap chosen is the least by (peak, x, b, y), so GPUs may be tried lightest
            // first: a swap with b leaves at least the midpoint of top and lb, and once that
            // midpoint (less a margin for rounding) is above the best peak, no heavier GPU can win.
            for b in byGPULoad {
                let lb = gl[b]
                if lb >= top || (top + lb) * 0.5 - top * 1e-14 > bestPeak { break }
                let room = top - lb  // d must stay below this to keep b under top
                let start = b * k, end = start + k
                bStamp += 1
                for s in start..<end { onBStamp[slotExpert[s]] = bStamp }
                for xs in (a * k)..<(a * k + k) where onBStamp[slotExpert[xs]] != bStamp {
                    let lx = slotLoad[xs]
                    func loadAt(_ i: Int) -> Double { slotLoad[byLoad[i]] }
                    /// The first index of the run of equal loads holding i, or just past it.
                    func runStart(_ i: Int) -> Int {
                        var lo = start, hi = i
                        while lo < hi { let m = (lo + hi) / 2; if loadAt(m) < loadAt(i) { lo = m + 1 } else { hi = m } }
                        return lo
                    }
                    func runEnd(_ i: Int) -> Int {
                        var lo = i, hi = end
                        while lo < hi { let m = (lo + hi) / 2; if loadAt(m) > loadAt(i) { hi = m } else { lo = m + 1 } }
                        return lo
                    }
                    /// The lowest usable slot position in byLoad[run] (positions ascend inside a run).
                    func firstUsable(_ run: Range<Int>) -> Int? {
                        for i in run where usable(byLoad[i]) { return byLoad[i] }
                        return nil
                    }
                    // Where top - d reaches lb + d.
                    var lo = start, hi = end
                    while lo < hi {
                        let m = (lo + hi) / 2
                        let d = lx - loadAt(m)
                        if top - d >= lb + d { hi = m } else { lo = m + 1 }
                    }
                    var pairPeak = Double.infinity
                    var pairY = -1
                    /// Keeps the lowest peak, then the lowest slot; false once peaks only grow.
                    func consider(_ d: Double, _ ys: Int) -> Bool {
                        let peak = max(top - d, lb + d)
                        if peak < pairPeak { pairPeak = peak; pairY = ys } else if peak == pairPeak { pairY = min(pairY, ys) } else { return false }
                        return true
                    }
                    // Heavier replicas: the peak is top - d, growing with their load.
                    var i = lo
                    right: while i < end {
                        let d = lx - loadAt(i)
                        guard d > 0 else { break }
                        let next = runEnd(i)
                        if d < room, let ys = firstUsable(i..<next), !consider(d, ys) { break right }
                        i = next
                    }
                    // Lighter replicas: the peak is lb + d, growing as their load falls.
                    i = lo - 1
                    while i >= start {
                        let d = lx - loadAt(i)
                        guard d < room else { break }
                        let first = runStart(i)
                        if d > 0, let ys = firstUsable(first..<(i + 1)), !consider(d, ys) { break }
                        i = first - 1
                    }
                    if pairY >= 0 && (pairPeak < bestPeak || (pairPeak == bestPeak && bestX >= 0 && (xs, b) < (bestX, bestY / k))) {
                        bestPeak = pairPeak
                        bestX = xs
                        bestY = pairY
                    }
                }
            }
            guard bestX >= 0 else { break }
            let b = bestY / k
            let d = slotLoad[bestX] - slotLoad[bestY]
            let (oldA, oldB) = (gl[a], gl[b])
            gl[a] -= d
            reposition(a, from: oldA)
            gl[b] += d
            reposition(b, from: oldB)
            slot.swapAt(bestX, bestY)
            slotLoad.swapAt(bestX, bestY)
            slotExpert.swapAt(bestX, bestY)
            sortGPU(a)
            sortGPU(b)
        }
        for g in 0..<gpus { items[g] = Array(slot[(g * k)..<(g * k + k)]) }
        gpuLoad = items.map { $0.reduce(0) { $0 + load[$1] } }
    }

    /// Co-located duplicate replicas left (only when no swap could separate them).
    var duplicates: Int {
        items.reduce(0) { n, slots in
            let experts = slots.map { expert[$0] }
            return n + experts.count - Set(experts).count
        }
    }
}
