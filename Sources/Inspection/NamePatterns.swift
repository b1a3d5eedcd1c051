import SafetensorsFormat

/// A set of tensors sharing a name template, dtype and shape, whose numeric name
/// parts form a full Cartesian product, e.g.
/// `model.layers.{3..60}.mlp.experts.{0..255}.down_proj.weight  F8_E4M3 [7168,2048] x14848`.
public struct NamePattern: Sendable, Equatable {
    /// The name with each numeric part replaced by its set of values, like `{3..60}`.
    public let pattern: String
    public let dtype: Dtype
    public let shape: [UInt64]
    public let count: Int
    /// The first member in natural name order (used for sorting and as an example).
    public let firstName: String
}

/// Collapses tensor names into patterns. Only whole dot-separated parts made of
/// digits (without leading zeros) are numeric, so `w1` or `layers.01` stay literal.
///
/// Positions are merged from the last to the first: members differing only in the
/// last number merge into a set, then members differing only in the next number
/// *and* having equal sets merge, and so on. Every resulting pattern is therefore
/// an exact product: it stands for exactly the names it lists, no more.
///
/// Time is linear in the numeric parts (names x numbers per name) plus sorting: at
/// position p, members are grouped by one interned id for their numbers before p and
/// one for their sets after p, never by comparing the whole list (which made a 2.8 MB
/// header of names with many numbers take minutes).
public enum NamePatterns {
    public static func collapse(_ tensors: [TensorInfo]) -> [NamePattern] {
        struct Item {
            var template: Int  // index into `templates`: the name with "#" at numeric parts
            var numbers: [Int]  // the first member's number at each numeric position
            /// prefixes[p]: the interned id of numbers[0..<p], the positions not merged yet at step p.
            var prefixes: [Int]
            /// The sets at the positions merged so far (those after the current one): an id in `chains`,
            /// (the first set's id in `sets`, the rest's id), 0 for none.
            var suffix: Int
            var dtype: Dtype
            var shape: Int  // index into `shapes`
            var count: Int
            /// The input index of the first member, to order equal first names as they came.
            var order: Int
        }
        struct Pair: Hashable { var a: Int, b: Int }
        struct Key: Hashable {
            var template: Int
            var prefix: Int
            var suffix: Int
            var dtype: Dtype
            var shape: Int
        }
        var templates = Interner<String>()
        var shapes = Interner<[UInt64]>()
        var items: [Item] = []
        items.reserveCapacity(tensors.count)
        var templateBytes: [UInt8] = []
        for (order, t) in tensors.enumerated() {
            let numbers = parse(t.name, template: &templateBytes)
            items.append(Item(template: templates.id(String(decoding: templateBytes, as: UTF8.self)), numbers: numbers,
                              prefixes: [], suffix: 0, dtype: t.dtype, shape: shapes.id(t.shape), count: 1, order: order))
        }
        // Id 0 is the empty prefix and the empty suffix; each (id, next part) gets an id of its own: at most
        // one per number for the prefixes and one per number for the suffixes (sized once, not grown).
        let numberCount = items.reduce(0) { $0 + $1.numbers.count }
        var chains = Interner<Pair>(capacity: 2 * numberCount + 1)
        _ = chains.id(Pair(a: -1, b: -1))
        var sets = Interner<[Int]>()
        for i in items.indices {
            var prefixes = [0]
            prefixes.reserveCapacity(items[i].numbers.count)
            for v in items[i].numbers.dropLast() { prefixes.append(chains.id(Pair(a: prefixes.last!, b: v))) }
            items[i].prefixes = prefixes
        }
        // Only items with a number at `position` take part in its step: they join, most numbers first,
        // when the steps reach their last number.
        let pending = items.sorted { ($0.numbers.count, $1.order) > ($1.numbers.count, $0.order) }
        var joined = 0
        var active: [Item] = []
        for position in stride(from: (pending.first?.numbers.count ?? 0) - 1, through: 0, by: -1) {
            while joined < pending.count, pending[joined].numbers.count > position {
                active.append(pending[joined])
                joined += 1
            }
            var groups: [Key: Int] = [:]
            groups.reserveCapacity(active.count)
            var merged: [Item] = []
            var values: [[Int]] = []  // per merged item, the numbers its members have at `position`
            for item in active {
                let key = Key(template: item.template, prefix: item.prefixes[position], suffix: item.suffix,
                              dtype: item.dtype, shape: item.shape)
                if let g = groups[key] {
                    values[g].append(item.numbers[position])
                    merged[g].count += item.count
                    merged[g].order = min(merged[g].order, item.order)
                } else {
                    groups[key] = merged.count
                    merged.append(item)
                    values.append([item.numbers[position]])
                }
            }
            for i in merged.indices {
                let set = values[i].count > 1 ? Array(Set(values[i])).sorted() : values[i]
                merged[i].suffix = chains.id(Pair(a: sets.id(set), b: merged[i].suffix))
            }
            active = merged
        }
        let results = active + pending[joined...]
        let patterns = results.map { item -> (pattern: NamePattern, order: Int) in
            var members: [[Int]] = []
            var link = item.suffix
            while link != 0 {
                members.append(sets.values[chains.values[link].a])
                link = chains.values[link].b
            }
            // Members share the template, so natural order is the order of their numbers: the first
            // member has the smallest number at every position (the pattern is a product).
            let template = templates.values[item.template]
            return (NamePattern(pattern: fill(template) { formatSet(members[$0]) }, dtype: item.dtype,
                                shape: shapes.values[item.shape], count: item.count,
                                firstName: fill(template) { String(members[$0][0]) }), item.order)
        }
        return patterns.sorted {
            naturalLess($0.pattern.firstName, $1.pattern.firstName)
                || (!naturalLess($1.pattern.firstName, $0.pattern.firstName) && $0.order < $1.order)
        }.map(\.pattern)
    }

    /// The numbers of a name's numeric parts; `template` receives the name with "#" at each of them
    /// (and literal "#" and "\\" escaped with "\\").
    static func parse(_ name: String, template: inout [UInt8]) -> [Int] {
        var name = name
        var numbers: [Int] = []
        template.removeAll(keepingCapacity: true)
        name.withUTF8 { p in
            var start = 0
            for i in 0...p.count where i == p.count || p[i] == UInt8(ascii: ".") {
                let part = UnsafeBufferPointer(rebasing: p[start..<i])
                if start > 0 { template.append(UInt8(ascii: ".")) }
                if let v = numericPart(part) {
                    template.append(UInt8(ascii: "#"))
                    numbers.append(v)
                } else {
                    // Escape a literal '#' so it cannot be mistaken for a numeric slot.
                    for c in part {
                        if c == UInt8(ascii: "#") || c == UInt8(ascii: "\\") { template.append(UInt8(ascii: "\\")) }
                        template.append(c)
                    }
                }
                start = i + 1
            }
        }
        return numbers
    }

    /// The template with its k-th numeric slot replaced by `slot(k)`, escapes undone.
    static func fill(_ template: String, _ slot: (Int) -> String) -> String {
        var out = ""
        var index = 0
        var escaped = false
        for c in template.unicodeScalars {
            if escaped {
                out.unicodeScalars.append(c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "#" {
                out += slot(index)
                index += 1
            } else {
                out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func numericPart(_ part: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !part.isEmpty, part.count <= 9 else { return nil }
        if part.count > 1 && part[0] == UInt8(ascii: "0") { return nil }
        var v = 0
        for c in part {
            guard c >= 0x30 && c <= 0x39 else { return nil }
            v = v * 10 + Int(c - 0x30)
        }
        return v
    }

    /// `{0..255}` for a run, `{0..3,7,9..10}` for several, a plain number for one.
    static func formatSet(_ values: [Int]) -> String {
        if values.count == 1 { return String(values[0]) }
        var runs: [String] = []
        var i = 0
        while i < values.count {
            var j = i
            while j + 1 < values.count && values[j + 1] == values[j] + 1 { j += 1 }
            if j == i {
                runs.append(String(values[i]))
            } else if j == i + 1 {
                runs.append(String(values[i]))
                runs.append(String(values[j]))
            } else {
                runs.append("\(values[i])..\(values[j])")
            }
            i = j + 1
        }
        return "{" + runs.joined(separator: ",") + "}"
    }
}

/// Orders names so that `layers.2` comes before `layers.10`.
public func naturalLess(_ a: String, _ b: String) -> Bool {
    var ai = a.utf8.makeIterator()
    var bi = b.utf8.makeIterator()
    var ca = ai.next()
    var cb = bi.next()
    while let x = ca, let y = cb {
        let xd = x >= 0x30 && x <= 0x39
        let yd = y >= 0x30 && y <= 0x39
        if xd && yd {
            var nx: UInt64 = 0
            var ny: UInt64 = 0
            var lx = 0
            var ly = 0
            var cx: UInt8? = x
            var cy: UInt8? = y
            while let d = cx, d >= 0x30 && d <= 0x39 { nx = nx &* 10 &+ UInt64(d - 0x30); lx += 1; cx = ai.next() }
            while let d = cy, d >= 0x30 && d <= 0x39 { ny = ny &* 10 &+ UInt64(d - 0x30); ly += 1; cy = bi.next() }
            if nx != ny { return nx < ny }
            if lx != ly { return lx < ly }
            ca = cx
            cb = cy
            continue
        }
        if x != y { return x < y }
        ca = ai.next()
        cb = bi.next()
    }
    return ca == nil && cb != nil
}
