/// Gives each distinct value a small dense id, in order of first appearance.
struct Interner<Value: Hashable> {
    private(set) var values: [Value] = []
    private var ids: [Value: Int] = [:]

    init(capacity: Int = 0) {
        values.reserveCapacity(capacity)
        ids.reserveCapacity(capacity)
    }

    /// The id of `value`, assigning the next one when it is new (one hash look-up either way).
    mutating func id(_ value: Value) -> Int {
        let next = values.count
        let id = Interner.read(&ids[value, default: next])
        if id == next { values.append(value) }
        return id
    }

    private static func read(_ slot: inout Int) -> Int { slot }
}
