/// Gives each distinct value a small dense id, in order of first appearance.
struct Interner<Value: Hashable> {
    private(set) var values: [Value] = []
    private var ids: [Value: Int] = [:]

    /// The id of `value`, assigning the next one when it is new.
    mutating func id(_ value: Value) -> Int {
        if let id = ids[value] { return id }
        ids[value] = values.count
        values.append(value)
        return values.count - 1
    }
}
