/// The zip container torch.save writes (PyTorch's `PyTorchStreamWriter`, miniz underneath): every
/// member stored uncompressed (method 0), data aligned by padding in the local header's extra
/// field, a ZIP64 end-of-directory record before the ordinary one. Read from the central
/// directory, each member's local header checked against it, its bytes against their CRC-32.
/// Only what torch writes is accepted; a compressed or encrypted member is refused, not guessed at.
struct ZipReader {
    struct Member {
        let name: String
        let data: Range<Int>
    }

    /// The most members: torch writes one per storage plus six.
    static let maxMembers = 1 << 16
    static let maxNameBytes = 4096

    let members: [Member]

    init(_ bytes: [UInt8], file: String) throws(TorchArchiveError) {
        func fail(_ m: String) -> TorchArchiveError { TorchArchiveError(.zipInvalid, file: file, m) }
        let r = ByteReader(bytes)
        // End of central directory: 22 bytes plus a comment of at most 65535, at the very end.
        var eocd = -1
        var i = bytes.count - 22
        while i >= max(0, bytes.count - 22 - 0xFFFF) {
            if r.u32(i) == 0x0605_4B50 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw fail("no end of central directory: not a whole zip file (cut short?)") }
        var count = Int(r.u16(eocd + 10)!)
        var directorySize = Int(r.u32(eocd + 12)!)
        var directoryOffset = Int(r.u32(eocd + 16)!)
        if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            // ZIP64: a locator just before the record names the ZIP64 end-of-directory record.
            guard eocd >= 20, r.u32(eocd - 20) == 0x0706_4B50, let at = r.u64(eocd - 12), at <= UInt64(bytes.count),
                  r.u32(Int(at)) == 0x0606_4B50,
                  let n = r.u64(Int(at) + 32), let size = r.u64(Int(at) + 40), let offset = r.u64(Int(at) + 48),
                  n <= UInt64(Self.maxMembers), size <= UInt64(bytes.count), offset <= UInt64(bytes.count)
            else { throw fail("a ZIP64 end of directory that is missing or out of the file") }
            (count, directorySize, directoryOffset) = (Int(n), Int(size), Int(offset))
        }
        guard count <= Self.maxMembers else {
            throw TorchArchiveError(.tooLarge, file: file, "\(count) members, more than \(Self.maxMembers)")
        }
        guard directoryOffset <= bytes.count, directorySize <= bytes.count - directoryOffset else {
            throw fail("the central directory (\(directorySize) bytes at \(directoryOffset)) is outside the file's \(bytes.count) bytes")
        }
        var members: [Member] = []
        var seen = Set<String>()
        var at = directoryOffset
        for k in 0..<count {
            guard let sig = r.u32(at), sig == 0x0201_4B50, let flags = r.u16(at + 8), let method = r.u16(at + 10),
                  let crc = r.u32(at + 16), let compressed32 = r.u32(at + 20), let size32 = r.u32(at + 24),
                  let nameLength = r.u16(at + 28), let extraLength = r.u16(at + 30), let commentLength = r.u16(at + 32),
                  let localOffset32 = r.u32(at + 42)
            else { throw fail("central directory entry \(k) at byte \(at) is damaged or cut short") }
            let nameStart = at + 46
            guard Int(nameLength) <= Self.maxNameBytes, let nameBytes = r.slice(nameStart, Int(nameLength)),
                  let name = String(validating: nameBytes, as: UTF8.self)
            else { throw fail("central directory entry \(k): a name that is cut short, too long or not UTF-8") }
            // ZIP64 sizes and offset, when the 32-bit fields are saturated, in extra field 0x0001.
            var compressed = UInt64(compressed32), size = UInt64(size32), localOffset = UInt64(localOffset32)
            if compressed32 == 0xFFFF_FFFF || size32 == 0xFFFF_FFFF || localOffset32 == 0xFFFF_FFFF {
                guard let extra = r.slice(nameStart + Int(nameLength), Int(extraLength)) else { throw fail("\(name): extra field cut short") }
                let e = ByteReader(Array(extra))
                var p = 0
                var found = false
                while p + 4 <= extra.count {
                    let id = e.u16(p)!, length = Int(e.u16(p + 2)!)
                    if id == 1 {
                        var q = p + 4
                        func next() throws(TorchArchiveError) -> UInt64 {
                            guard q + 8 <= p + 4 + length, let v = e.u64(q) else { throw fail("\(name): ZIP64 extra field cut short") }
                            q += 8
                            return v
                        }
                        if size32 == 0xFFFF_FFFF { size = try next() }
                        if compressed32 == 0xFFFF_FFFF { compressed = try next() }
                        if localOffset32 == 0xFFFF_FFFF { localOffset = try next() }
                        found = true
                        break
                    }
                    p += 4 + length
                }
                guard found else { throw fail("\(name): sizes marked ZIP64 without a ZIP64 extra field") }
            }
            guard flags & 0x41 == 0 else {
                throw TorchArchiveError(.zipUnsupported, file: file, "\(name): an encrypted member")
            }
            guard method == 0, compressed == size else {
                throw TorchArchiveError(.zipUnsupported, file: file, "\(name): compressed (method \(method)); torch.save stores members uncompressed")
            }
            guard seen.insert(name).inserted else { throw fail("\(name): named twice") }
            // The local header repeats the name; its extra field (torch's alignment padding) may differ.
            guard localOffset <= UInt64(bytes.count), let local = r.u32(Int(localOffset)), local == 0x0403_4B50,
                  let localNameLength = r.u16(Int(localOffset) + 26), let localExtraLength = r.u16(Int(localOffset) + 28),
                  localNameLength == nameLength, r.slice(Int(localOffset) + 30, Int(nameLength)).map(Array.init) == Array(nameBytes)
            else { throw fail("\(name): its local header at byte \(localOffset) is missing or names another member") }
            let dataStart = Int(localOffset) + 30 + Int(nameLength) + Int(localExtraLength)
            guard size <= UInt64(bytes.count), dataStart <= bytes.count, Int(size) <= bytes.count - dataStart else {
                throw fail("\(name): \(size) bytes at \(dataStart) run past the end of the file (\(bytes.count) bytes)")
            }
            let data = dataStart..<(dataStart + Int(size))
            guard CRC32.of(bytes[data]) == crc else { throw fail("\(name): the CRC-32 of its bytes does not match (damaged)") }
            members.append(Member(name: name, data: data))
            at = nameStart + Int(nameLength) + Int(extraLength) + Int(commentLength)
        }
        self.members = members
    }
}

/// Little-endian fields read at any offset, nil past the end (never a trap).
struct ByteReader {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func uint(_ at: Int, _ n: Int) -> UInt64? {
        guard at >= 0, at <= bytes.count - n else { return nil }
        var v: UInt64 = 0
        for k in 0..<n { v |= UInt64(bytes[at + k]) << (8 * UInt64(k)) }
        return v
    }
    func u16(_ at: Int) -> UInt16? { uint(at, 2).map { UInt16($0) } }
    func u32(_ at: Int) -> UInt32? { uint(at, 4).map { UInt32($0) } }
    func u64(_ at: Int) -> UInt64? { uint(at, 8) }
    func slice(_ at: Int, _ n: Int) -> ArraySlice<UInt8>? {
        guard at >= 0, n >= 0, at <= bytes.count - n else { return nil }
        return bytes[at..<(at + n)]
    }
}

/// CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320), as zip records it for every member.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func of(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}
