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
/// (linear probing), it cannot make it wrong: keys are always compared in full.
///
/// Keys are Strings, or byte ranges of a `backing` buffer (an index file's map)
/// so that 100k names can be keyed without making 100k Strings.
public struct NameTable<Value> {
    @usableFromInline enum Key {
        case text(String)
        case slice(offset: Int, count: Int)
    }

    @usableFromInline var storedKeys: [Key] = []
    public var values: [Value] = []
    @usableFromInline var hashes: [UInt64] = []
    /// 0 when empty, else the hash's top 32 bits << 32 | (entry + 1): most probes end without touching the keys.
    @usableFromInline var slots: [UInt64]
    @usableFromInline var mask: Int
    /// Owner of the bytes that `.slice` keys point into; kept alive with the table.
    @usableFromInline let backing: AnyObject?
    @usableFromInline let base: UnsafeRawBufferPointer

    public init(minimumCapacity: Int = 16) {
        self.init(minimumCapacity: minimumCapacity, backing: nil, bytes: UnsafeRawBufferPointer(start: nil, count: 0))
    }

    /// A table whose keys may be slices of `bytes`, which `backing` owns and keeps valid.
    public init(minimumCapacity: Int, backing: AnyObject?, bytes: UnsafeRawBufferPointer) {
        var size = 16
        while size < minimumCapacity * 2 { size <<= 1 }
        slots = Array(repeating: 0, count: size)
        mask = size - 1
        self.backing = backing
        base = bytes
        storedKeys.reserveCapacity(minimumCapacity)
        values.reserveCapacity(minimumCapacity)
        hashes.reserveCapacity(minimumCapacity)
    }

    @inlinable public var count: Int { storedKeys.count }

    /// The key at `index` as a String.
    public func key(at index: Int) -> String {
        switch storedKeys[index] {
        case .text(let s): return s
        case .slice(let offset, let count):
            return String(decoding: UnsafeRawBufferPointer(rebasing: base[offset..<(offset + count)]), as: UTF8.self)
        }
    }

    public var keys: [String] { (0..<count).map(key(at:)) }

    /// Position of `key`, or nil.
    @inlinable public func index(of key: String) -> Int? {
        var key = key
        return key.withUTF8 { index(ofBytes: UnsafeRawBufferPointer($0)) }
    }

    @inlinable public func index(ofBytes key: UnsafeRawBufferPointer) -> Int? {
        let h = NameTable.hash(key)
        let tag = h & 0xFFFF_FFFF_0000_0000
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { return nil }
            if slot & 0xFFFF_FFFF_0000_0000 == tag {
                let e = Int(slot & 0xFFFF_FFFF) - 1
                if same(e, key) { return e }
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
        var k = key
        return k.withUTF8 { bytes in
            insert(bytes: UnsafeRawBufferPointer(bytes), as: { .text(key) }, value)
        }
    }

    /// Inserts a key given as bytes: stored as a slice when the bytes lie inside the
    /// backing buffer, else as a String.
    @discardableResult @inlinable
    public mutating func insert(bytes: UnsafeRawBufferPointer, _ value: @autoclosure () -> Value) -> (index: Int, inserted: Bool) {
        let b = base
        return insert(bytes: bytes, as: {
            if let start = bytes.baseAddress, let lo = b.baseAddress, start >= lo, start + bytes.count <= lo + b.count {
                return .slice(offset: start - lo, count: bytes.count)
            }
            return .text(String(decoding: bytes, as: UTF8.self))
        }, value)
    }

    @inlinable
    mutating func insert(bytes: UnsafeRawBufferPointer, as makeKey: () -> Key, _ value: () -> Value)
        -> (index: Int, inserted: Bool)
    {
        let h = NameTable.hash(bytes)
        let tag = h & 0xFFFF_FFFF_0000_0000
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { break }
            if slot & 0xFFFF_FFFF_0000_0000 == tag {
                let e = Int(slot & 0xFFFF_FFFF) - 1
                if same(e, bytes) { return (e, false) }
            }
            i = (i + 1) & mask
        }
        let e = storedKeys.count
        slots[i] = tag | UInt64(e + 1)
        storedKeys.append(makeKey())
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

    @inlinable func same(_ e: Int, _ bytes: UnsafeRawBufferPointer) -> Bool {
        switch storedKeys[e] {
        case .slice(let offset, let count):
            return count == bytes.count && (count == 0 || memcmp(base.baseAddress! + offset, bytes.baseAddress!, count) == 0)
        case .text(let s):
            var s = s
            return s.withUTF8 { p in
                p.count == bytes.count && (p.count == 0 || memcmp(p.baseAddress!, bytes.baseAddress!, p.count) == 0)
            }
        }
    }

    /// A multiply-xorshift hash over 8-byte words of the bytes.
    @inlinable static func hash(_ raw: UnsafeRawBufferPointer) -> UInt64 {
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

extension NameTable: @unchecked Sendable where Value: Sendable {}

/// `bytes[range]` as a non-negative decimal number when it is all ASCII digits, at most `maxDigits` of them
/// (9 by default: the value always fits an Int); nil otherwise.
public func decimalValue(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, maxDigits: Int = 9) -> Int? {
    guard !range.isEmpty, range.count <= maxDigits else { return nil }
    var v = 0
    for i in range {
        let c = bytes[i]
        guard c >= 0x30 && c <= 0x39 else { return nil }
        v = v * 10 + Int(c - 0x30)
    }
    return v
}
