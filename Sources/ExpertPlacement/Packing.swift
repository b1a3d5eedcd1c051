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
        // Replicas of one expert are adjacent in this order, so "GPU g holds expert e" is
        // "the last expert placed on g is e".
        var lastExpert = [Int](repeating: -1, count: gpus)
        for i in order {
            var best = -1
            var fallback = -1
            for g in 0..<gpus where items[g].count < slotsPerGPU {
                if fallback < 0 || gpuLoad[g] < gpuLoad[fallback] { fallback = g }
                if lastExpert[g] == expert[i] { continue }
                if best < 0 || gpuLoad[g] < gpuLoad[best] { best = g }
            }
            let g = best >= 0 ? best : fallback
            place(i, on: g)
            lastExpert[g] = expert[i]
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
    /// down to `goodEnough`. Works on flat copies of the slots for speed.
    mutating func improve(maxSteps: Int = 100_000, goodEnough: Double = 0) {
        let gpus = items.count
        guard gpus > 1 else { return }
        let k = slotsPerGPU
        guard items.allSatisfy({ $0.count == k }) else { return }
        var slot = items.flatMap { $0 }  // gpu g owns slot[g*k ..< g*k+k]
        var slotLoad = slot.map { load[$0] }
        var slotExpert = slot.map { expert[$0] }
        var gl = gpuLoad
        func holds(_ g: Int, _ e: Int, except: Int = -1) -> Bool {
            var i = g * k
            let end = i + k
            while i < end {
                if i != except && slotExpert[i] == e { return true }
                i += 1
            }
            return false
        }
        for _ in 0..<maxSteps {
            var a = 0
            for g in 1..<gpus where gl[g] > gl[a] { a = g }
            let top = gl[a]
            if top <= goodEnough { break }
            let threshold = top - max(top * 1e-12, 1e-300)
            var bestPeak = threshold
            var bestX = -1
            var bestY = -1
            for xs in (a * k)..<(a * k + k) {
                let lx = slotLoad[xs]
                let ex = slotExpert[xs]
                for b in 0..<gpus where b != a {
                    let lb = gl[b]
                    let room = top - lb  // d must stay below this to keep b under top
                    var ys = b * k
                    let end = ys + k
                    while ys < end {
                        let d = lx - slotLoad[ys]
                        if d > 0 && d < room {
                            let peak = max(top - d, lb + d)
                            if peak < bestPeak && slotExpert[ys] != ex && !holds(b, ex) && !holds(a, slotExpert[ys], except: xs) {
                                bestPeak = peak
                                bestX = xs
                                bestY = ys
                            }
                        }
                        ys += 1
                    }
                }
            }
            guard bestX >= 0 else { break }
            let b = bestY / k
            let d = slotLoad[bestX] - slotLoad[bestY]
            gl[a] -= d
            gl[b] += d
            slot.swapAt(bestX, bestY)
            slotLoad.swapAt(bestX, bestY)
            slotExpert.swapAt(bestX, bestY)
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
