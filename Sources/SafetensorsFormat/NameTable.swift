#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An insertion-ordered hash table from tensor names to values, with a fast
/// non-cryptographic hash of the name's bytes. Checkpoints hold ~100k names and
/// each is looked up a few times while validating, which makes the standard
/// dictionary's SipHash the largest cost of `inspect`; names come from files we
/// validate, and a crafted set of colliding names only slows this table down
/// (linear probing), it cannot make it wrong.
@frozen public struct NameTable<Value> {
    public var keys: [String] { storedKeys }
    @usableFromInline var storedKeys: [String] = []
    public var values: [Value] = []
    @usableFromInline var hashes: [UInt64] = []
    /// 0 when empty, else the hash's top 32 bits << 32 | (entry + 1): most probes end without touching the keys.
    @usableFromInline var slots: [UInt64]
    @usableFromInline var mask: Int

    public init(minimumCapacity: Int = 16) {
        var size = 16
        while size < minimumCapacity * 2 { size <<= 1 }
        slots = Array(repeating: 0, count: size)
        mask = size - 1
        storedKeys.reserveCapacity(minimumCapacity)
        values.reserveCapacity(minimumCapacity)
        hashes.reserveCapacity(minimumCapacity)
    }

    @inlinable public var count: Int { storedKeys.count }

    /// Position of `key`, or nil.
    @inlinable public func index(of key: String) -> Int? {
        let h = NameTable.hash(key)
        let tag = h & 0xFFFF_FFFF_0000_0000
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { return nil }
            if slot & 0xFFFF_FFFF_0000_0000 == tag {
                let e = Int(slot & 0xFFFF_FFFF) - 1
                if NameTable.same(storedKeys[e], key) { return e }
            }
            i = (i + 1) & mask
        }
    }

    @inlinable public subscript(key: String) -> Value? {
        index(of: key).map { values[$0] }
    }

    /// Inserts `key` if absent. Returns its position and whether it was inserted.
    @discardableResult @inlinable
    public mutating func insert(_ key: String, _ value: @autoclosure () -> Value) -> (index: Int, inserted: Bool) {
        let h = NameTable.hash(key)
        let tag = h & 0xFFFF_FFFF_0000_0000
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { break }
            if slot & 0xFFFF_FFFF_0000_0000 == tag {
                let e = Int(slot & 0xFFFF_FFFF) - 1
                if NameTable.same(storedKeys[e], key) { return (e, false) }
            }
            i = (i + 1) & mask
        }
        let e = storedKeys.count
        slots[i] = tag | UInt64(e + 1)
        storedKeys.append(key)
        values.append(value())
        hashes.append(h)
        if storedKeys.count * 2 > slots.count { grow() }
        return (e, true)
    }

    @usableFromInline mutating func grow() {
        let size = slots.count * 2
        slots = Array(repeating: 0, count: size)
        mask = size - 1
        for (e, h) in hashes.enumerated() {
            var i = Int(truncatingIfNeeded: h) & mask
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = (h & 0xFFFF_FFFF_0000_0000) | UInt64(e + 1)
        }
    }

    @inlinable static func same(_ a: String, _ b: String) -> Bool {
        var a = a
        var b = b
        return a.withUTF8 { pa in
            b.withUTF8 { pb in
                pa.count == pb.count && (pa.count == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0)
            }
        }
    }

    /// A multiply-xorshift hash over 8-byte words of the UTF-8 bytes.
    @inlinable static func hash(_ s: String) -> UInt64 {
        var s = s
        return s.withUTF8 { p in
            let raw = UnsafeRawBufferPointer(p)
            var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(raw.count)
            var i = 0
            while i + 8 <= raw.count {
                h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
                h ^= h >> 32
                i += 8
            }
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while i < raw.count {
                tail |= UInt64(raw[i]) << shift
                shift += 8
                i += 1
            }
            h = (h ^ tail) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
            h = h &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 32
            return h
        }
    }
}

extension NameTable: Sendable where Value: Sendable {}
