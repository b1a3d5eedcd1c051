/// A binary min-heap: `popFirst` returns the least element. The planners use it to find the
/// lightest GPU (or pack, or the heaviest replica) in O(log n) instead of a scan over all of
/// them; with keys that end in the index, the least element is the one a scan that keeps the
/// first strict minimum would pick, so results do not change.
struct Heap<Element: Comparable> {
    private var items: [Element] = []

    init() {}

    init(_ elements: [Element]) {
        items = elements
        for i in stride(from: items.count / 2 - 1, through: 0, by: -1) { siftDown(i) }
    }

    var isEmpty: Bool { items.isEmpty }
    var first: Element? { items.first }

    mutating func insert(_ e: Element) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i] < items[parent] else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func popFirst() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let e = items.removeLast()
        if !items.isEmpty { siftDown(0) }
        return e
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var least = i
            if l < items.count && items[l] < items[least] { least = l }
            if r < items.count && items[r] < items[least] { least = r }
            if least == i { return }
            items.swapAt(i, least)
            i = least
        }
    }
}

/// A load and the index of what carries it, ordered lightest first, then lowest index.
struct Lightest<Load: Comparable>: Comparable {
    let load: Load
    let index: Int

    static func < (a: Self, b: Self) -> Bool { a.load < b.load || (a.load == b.load && a.index < b.index) }
}

/// Ordered heaviest first, then lowest index.
struct Heaviest<Load: Comparable>: Comparable {
    let load: Load
    let index: Int

    static func < (a: Self, b: Self) -> Bool { a.load > b.load || (a.load == b.load && a.index < b.index) }
}
