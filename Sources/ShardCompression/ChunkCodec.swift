import CKernels
import CZstd
import SafetensorsFormat
import Support
#if canImport(Glibc)
import Glibc
#endif

/// Encodes and decodes one chunk: byte planes, each stored raw or as a zstd frame.
public enum ChunkCodec {
    /// How planes are compressed. Level 0 (the default) is moetool's entropy setting: zstd's
    /// fastest strategy with matches of at least 7 bytes and a tiny hash table, so nearly every
    /// byte goes through zstd's Huffman literals, 128 KiB blocks. Planes of float bytes have
    /// few long repeats, and this beats every zstd level on them (Docs/compress.md). Levels 1-19
    /// are zstd's own.
    public struct Levels: Sendable, Equatable {
        public var exponent: Int32
        public var other: Int32
        public init(exponent: Int32 = 0, other: Int32 = 0) {
            self.exponent = exponent
            self.other = other
        }
    }

    public struct Encoded: Sendable {
        public var encoding: CompressedFormat.Encoding
        /// The stored bytes of each plane and how they are stored.
        public var planes: [(bytes: [UInt8], rawLength: Int, method: CompressedFormat.Method)]
        public var checksum: UInt64
        public var storedBytes: Int { planes.reduce(0) { $0 + $1.bytes.count } }
    }

    public static func encode(_ data: UnsafeRawBufferPointer, dtype: Dtype, levels: Levels) -> Encoded {
        let checksum = moe_xxh64(data.baseAddress, data.count, 0)
        var best: Encoded? = nil
        for encoding in CompressedFormat.Encoding.candidates(for: dtype) {
            let lengths = encoding.planeLengths(data.count)
            let planes = split(data, encoding)
            var stored: [(bytes: [UInt8], rawLength: Int, method: CompressedFormat.Method)] = []
            planes.withUnsafeBytes { all in
                var start = 0
                for (i, n) in lengths.enumerated() {
                    let plane = UnsafeRawBufferPointer(rebasing: all[start..<(start + n)])
                    stored.append(store(plane, level: i == 0 && encoding != .bytes ? levels.exponent : levels.other))
                    start += n
                }
            }
            let e = Encoded(encoding: encoding, planes: stored, checksum: checksum)
            if best == nil || e.storedBytes < best!.storedBytes { best = e }
        }
        return best!
    }

    /// The planes, back to back in one buffer (lengths from `encoding.planeLengths`).
    static func split(_ data: UnsafeRawBufferPointer, _ encoding: CompressedFormat.Encoding) -> [UInt8] {
        let n = data.count
        let lengths = encoding.planeLengths(n)
        let total = lengths.reduce(0, +)
        guard n > 0 else { return [] }
        let src = data.baseAddress!
        if encoding == .bytes { return Array(data) }
        return [UInt8](unsafeUninitializedCapacity: total) { out, count in
            let base = out.baseAddress!
            switch encoding {
            case .bytes:
                break
            case .split16:
                moe_split16(src, n / 2, base, base + lengths[0])
            case .split32:
                let q = lengths[0]
                moe_split32(src, n / 4, base, base + q, base + 2 * q, base + 3 * q)
            case .nibbles:
                moe_split_nibbles(src.assumingMemoryBound(to: UInt8.self), n, base, base + lengths[0])
            }
            count = total
        }
    }

    /// A zstd frame if it is smaller than the plane, else the plane itself. Planes whose bytes
    /// are close to uniform (over 7.9 bits of entropy per byte) are stored without trying.
    static func store(_ plane: UnsafeRawBufferPointer, level: Int32) -> (bytes: [UInt8], rawLength: Int, method: CompressedFormat.Method) {
        guard plane.count > 0 else { return ([], 0, .raw) }
        if entropyBits(plane) > 7.9 { return (Array(plane), plane.count, .raw) }
        let bound = ZSTD_compressBound(plane.count)
        var out = [UInt8](repeating: 0, count: bound)
        guard let cctx = ZSTD_createCCtx() else { return (Array(plane), plane.count, .raw) }
        defer { ZSTD_freeCCtx(cctx) }
        if level == 0 {
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_strategy, Int32(ZSTD_fast.rawValue))
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 17)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, 6)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_chainLog, 6)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_searchLog, 1)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_minMatch, 7)
        } else {
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
        }
        let n = out.withUnsafeMutableBytes { dst in ZSTD_compress2(cctx, dst.baseAddress, bound, plane.baseAddress, plane.count) }
        if ZSTD_isError(n) != 0 || n >= plane.count { return (Array(plane), plane.count, .raw) }
        out.removeSubrange(n...)
        return (out, plane.count, .zstd)
    }

    /// Order-0 entropy of the bytes, in bits per byte (from a sample of up to 64 KiB).
    static func entropyBits(_ bytes: UnsafeRawBufferPointer) -> Double {
        var counts = [Int](repeating: 0, count: 256)
        let step = max(1, bytes.count / 65536)
        var n = 0
        var i = 0
        while i < bytes.count {
            counts[Int(bytes[i])] += 1
            n += 1
            i += step
        }
        var h = 0.0
        for c in counts where c > 0 {
            let p = Double(c) / Double(n)
            h -= p * log2(p)
        }
        return h
    }

    public enum DecodeError: Error, Sendable, CustomStringConvertible {
        case corrupt(String)
        public var description: String {
            switch self { case .corrupt(let m): m }
        }
    }

    /// Decodes a chunk whose stored planes are `stored` into `out` (exactly the chunk's original
    /// length) and checks its checksum.
    public static func decode(_ chunk: CompressedFormat.Chunk, stored: [UnsafeRawBufferPointer],
                              into out: UnsafeMutableRawBufferPointer) throws(DecodeError) {
        let n = Int(chunk.length)
        precondition(out.count == n)
        guard n > 0 else { return }
        // One zstd plane holding the bytes as they are: straight into the output.
        if chunk.encoding == .bytes, chunk.planes[0].method == .zstd {
            let got = ZSTD_decompress(out.baseAddress, n, stored[0].baseAddress, stored[0].count)
            if ZSTD_isError(got) != 0 { throw .corrupt("plane 0: zstd: \(String(cString: ZSTD_getErrorName(got)))") }
            guard got == n else { throw .corrupt("plane 0 decompresses to \(counted(got, "byte")), \(n) expected") }
            let sum = moe_xxh64(out.baseAddress, n, 0)
            guard sum == chunk.checksum else {
                throw .corrupt("checksum mismatch (XXH64 \(hex(sum)), recorded \(hex(chunk.checksum)))")
            }
            return
        }
        // Planes stored raw are used in place; zstd planes are decompressed into one scratch buffer.
        let scratchBytes = chunk.planes.reduce(0) { $0 + ($1.method == .zstd ? Int($1.rawLength) : 0) }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(scratchBytes, 1), alignment: 16)
        defer { scratch.deallocate() }
        var planes: [UnsafePointer<UInt8>] = []
        var used = 0
        for (i, plane) in chunk.planes.enumerated() {
            let raw = Int(plane.rawLength)
            switch plane.method {
            case .raw:
                guard stored[i].count == raw else { throw .corrupt("plane \(i) holds \(counted(stored[i].count, "byte")), \(raw) expected") }
                planes.append(stored[i].baseAddress!.assumingMemoryBound(to: UInt8.self))
            case .zstd:
                let dst = scratch.baseAddress! + used
                let got = ZSTD_decompress(dst, raw, stored[i].baseAddress, stored[i].count)
                if ZSTD_isError(got) != 0 {
                    throw .corrupt("plane \(i): zstd: \(String(cString: ZSTD_getErrorName(got)))")
                }
                guard got == raw else { throw .corrupt("plane \(i) decompresses to \(counted(got, "byte")), \(raw) expected") }
                planes.append(UnsafePointer(dst.assumingMemoryBound(to: UInt8.self)))
                used += raw
            }
        }
        let dst = out.baseAddress!
        switch chunk.encoding {
        case .bytes:
            dst.copyMemory(from: planes[0], byteCount: n)
        case .split16:
            moe_join16(planes[0], planes[1], n / 2, dst)
        case .split32:
            moe_join32(planes[0], planes[1], planes[2], planes[3], n / 4, dst)
        case .nibbles:
            moe_join_nibbles(planes[0], planes[1], n, dst.assumingMemoryBound(to: UInt8.self))
        }
        let sum = moe_xxh64(dst, n, 0)
        guard sum == chunk.checksum else {
            throw .corrupt("checksum mismatch (XXH64 \(hex(sum)), recorded \(hex(chunk.checksum)))")
        }
    }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
