import CKernels
import CZstd
import Checkpoint
import SafetensorsFormat
import Support
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Statistics of one compressed file.
public struct ShardStats: Sendable {
    public var originalBytes: UInt64 = 0
    public var storedBytes: UInt64 = 0
    /// Original and stored data bytes per dtype name.
    public var byDtype: [String: (original: UInt64, stored: UInt64)] = [:]

    public init() {}

    /// The figures of a chunk table (`tensors`: the shard's, which the chunks index).
    init(_ chunks: [CompressedFormat.Chunk], tensors: [TensorInfo]) {
        for c in chunks {
            let dtype = tensors[Int(c.tensor)].dtype.rawValue
            originalBytes += UInt64(c.length)
            storedBytes += c.storedBytes
            byDtype[dtype, default: (0, 0)].original += UInt64(c.length)
            byDtype[dtype, default: (0, 0)].stored += c.storedBytes
        }
    }
}

public enum ShardCompressor {
    /// Compresses the safetensors file at `input` into `output` (written under a temporary name,
    /// renamed when complete). `progress` receives original bytes as chunks are written.
    public static func compress(input: String, output: String, levels: ChunkCodec.Levels = .init(), threads: Int = 0,
                                progress: (@Sendable (UInt64) -> Void)? = nil) throws -> ShardStats {
        let file: SafetensorsFile
        do {
            file = try SafetensorsFile(path: input)
        } catch {
            throw CompressionError(.notSafetensors, file: input, "not a valid safetensors file: \(error.problems.first.map { "\($0)" } ?? "")")
        }
        // A compressed shard opens as a header-only safetensors file; its data section is not there.
        if file.isCompressed { throw DirectoryCompression.alreadyCompressed(input) }
        var jobs: [(tensor: Int, begin: UInt64, end: UInt64)] = []
        for (i, t) in file.tensors.enumerated() {
            var b = t.begin
            while b < t.end {
                let e = min(t.end, b + UInt64(CompressedFormat.chunkBytes))
                jobs.append((i, b, e))
                b = e
            }
        }
        let out = try AtomicFile(path: output)
        out.sources = [file.mapping]
        do {
            let n = file.header.headerLength
            var head = CompressedFormat.magic
            head.appendLE(CompressedFormat.version)
            head.appendLE(UInt32(0))
            head.appendLE(n)
            try out.write(head)
            let headerBytes = file.mapping.bytes(8..<(8 + n))
            try out.write(headerBytes)
            let headerChecksum = moe_xxh64(headerBytes.baseAddress, headerBytes.count, 0)
            var offset = UInt64(CompressedFormat.prefixBytes) + n
            var entries: [CompressedFormat.Chunk] = []
            let window = max(1, (threads > 0 ? threads : Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) * 4)
            var start = 0
            while start < jobs.count {
                let batch = Array(jobs[start..<min(jobs.count, start + window)])
                let encoded = parallelMap(batch.count, threads: threads) { k -> ChunkCodec.Encoded in
                    let j = batch[k]
                    let bytes = file.mapping.bytes((file.header.dataStart + j.begin)..<(file.header.dataStart + j.end))
                    return ChunkCodec.encode(bytes, dtype: file.tensors[j.tensor].dtype, levels: levels)
                }
                for (k, e) in encoded.enumerated() {
                    let j = batch[k]
                    var planes: [CompressedFormat.Plane] = []
                    for p in e.planes {
                        try out.write(p.bytes)
                        planes.append(.init(offset: offset, storedLength: UInt32(p.bytes.count), rawLength: UInt32(p.rawLength), method: p.method))
                        offset += UInt64(p.bytes.count)
                    }
                    entries.append(.init(dataOffset: j.begin, length: UInt32(j.end - j.begin), tensor: UInt32(j.tensor),
                                         checksum: e.checksum, encoding: e.encoding, planes: planes))
                    progress?(j.end - j.begin)
                }
                let range = (file.header.dataStart + batch.first!.begin)..<(file.header.dataStart + batch.last!.end)
                file.mapping.adviseDone(range)
                start += batch.count
            }
            var table: [UInt8] = []
            table.reserveCapacity(entries.count * CompressedFormat.entryBytes + CompressedFormat.tailBytes)
            for e in entries { e.serialize(into: &table) }
            table.appendLE(UInt64(entries.count))
            table.appendLE(offset)
            table.appendLE(file.header.dataBytes)
            table.appendLE(fileChecksum(header: headerChecksum, chunks: entries.map(\.checksum)))
            table.appendLE(headerChecksum)
            table.append(contentsOf: [UInt8](repeating: 0, count: 16))
            table.append(contentsOf: CompressedFormat.endMagic)
            try out.write(table)
            try out.commit()
            return ShardStats(entries, tensors: file.tensors)
        } catch {
            out.abort()
            throw error
        }
    }

    static func fileChecksum(header: UInt64, chunks: [UInt64]) -> UInt64 {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 * (chunks.count + 1))
        bytes.appendLE(header)
        for c in chunks { bytes.appendLE(c) }
        return moe_xxh64(bytes, bytes.count, 0)
    }
}

/// A compressed shard opened for reading: its safetensors header without decompressing anything,
/// any tensor's bytes by decompressing only its chunks, or the whole original file.
public final class CompressedShard: @unchecked Sendable {
    public let path: String
    public let mapping: MappedFile
    public let header: SafetensorsHeader
    public let chunks: [CompressedFormat.Chunk]
    public let fileChecksum: UInt64
    let headerChecksum: UInt64

    public var tensors: [TensorInfo] { header.tensors }
    public var storedBytes: UInt64 { mapping.size }
    public var originalBytes: UInt64 { 8 + header.headerLength + header.dataBytes }

    /// Whether `original` is the file this shard restores to: same size, same header, and every chunk
    /// of its data has the checksum the table records (one read of `original`, nothing decompressed).
    public func restores(_ original: MappedFile, threads: Int = 0) -> Bool {
        let prefix = UInt64(CompressedFormat.prefixBytes)
        guard original.size == originalBytes,
              Array(original.bytes(8..<(8 + header.headerLength))) == Array(mapping.bytes(prefix..<(prefix + header.headerLength)))
        else { return false }
        let dataStart = 8 + header.headerLength
        let matches = parallelMap(chunks.count, threads: threads) { k -> Bool in
            let c = self.chunks[k]
            let range = (dataStart + c.dataOffset)..<(dataStart + c.dataOffset + UInt64(c.length))
            let bytes = original.bytes(range)
            defer { original.adviseDone(range) }
            return moe_xxh64(bytes.baseAddress, bytes.count, 0) == c.checksum
        }
        return !matches.contains(false)
    }

    /// Original and stored bytes, in total and per dtype, from the chunk table.
    public func statistics() -> ShardStats { ShardStats(chunks, tensors: header.tensors) }

    /// Whether the file starts with the compressed format's magic number.
    public static func isCompressed(path: String) -> Bool {
        guard let m = try? MappedFile(path: path), m.size >= 8 else { return false }
        return Array(m.bytes(0..<8)) == CompressedFormat.magic
    }

    public convenience init(path: String) throws(CompressionError) {
        let mapping: MappedFile
        do {
            mapping = try MappedFile(path: path)
        } catch {
            throw CompressionError(.unreadable, file: path, error.description)
        }
        try self.init(mapping)
    }

    /// A compressed shard already mapped (e.g. by the SafetensorsFile that read its header). Validated
    /// front to back, prefix, tail, header, table, so that nothing past here checks again.
    public init(_ mapping: MappedFile) throws(CompressionError) {
        path = mapping.path
        self.mapping = mapping
        let headerLength = try Self.readPrefix(mapping)
        let tail = try Self.readTail(mapping, headerLength: headerLength)
        fileChecksum = tail.fileChecksum
        headerChecksum = tail.headerChecksum
        header = try Self.readHeader(mapping, length: headerLength, tail: tail)
        let payload = (UInt64(CompressedFormat.prefixBytes) + headerLength)..<tail.tableOffset
        chunks = try Self.readTable(mapping, tail: tail, header: header, payload: payload)
        guard ShardCompressor.fileChecksum(header: headerChecksum, chunks: chunks.map(\.checksum)) == fileChecksum else {
            throw CompressionError(.damagedTable, file: path, "the chunk table does not match the file checksum")
        }
    }

    /// What the 64-byte tail says (layout: CompressedFormat).
    struct Tail {
        var chunkCount: UInt64
        var tableOffset: UInt64
        var dataBytes: UInt64
        var fileChecksum: UInt64
        var headerChecksum: UInt64
    }

    /// The prefix: magic number, version, flags; returns the safetensors header's length.
    static func readPrefix(_ mapping: MappedFile) throws(CompressionError) -> UInt64 {
        let path = mapping.path, size = mapping.size
        let minimum = UInt64(CompressedFormat.prefixBytes + CompressedFormat.tailBytes)
        guard size >= minimum else {
            throw CompressionError(.truncated, file: path, "\(counted(size, "byte")) is too short for a compressed shard (truncated?)")
        }
        let head = mapping.bytes(0..<UInt64(CompressedFormat.prefixBytes))
        guard Array(head[0..<8]) == CompressedFormat.magic else {
            throw CompressionError(.notCompressed, file: path, "not a moetool compressed shard (no magic number)")
        }
        let version = head.le(8, as: UInt32.self)
        guard version == CompressedFormat.version else {
            throw CompressionError(.unsupportedVersion, file: path, "format version \(version); this moetool reads version \(CompressedFormat.version)")
        }
        guard head.le(12, as: UInt32.self) == 0 else {
            throw CompressionError(.unsupportedVersion, file: path, "unknown flags \(head.le(12, as: UInt32.self)) (version 1 has none)")
        }
        return head.le(16, as: UInt64.self)
    }

    /// The tail: end marker, counts and checksums, and a table that fits between the header and the tail.
    static func readTail(_ mapping: MappedFile, headerLength n: UInt64) throws(CompressionError) -> Tail {
        let path = mapping.path, size = mapping.size
        let tailBytes = UInt64(CompressedFormat.tailBytes)
        let bytes = mapping.bytes((size - tailBytes)..<size)
        guard Array(bytes[56..<64]) == CompressedFormat.endMagic else {
            throw CompressionError(.truncated, file: path, "no end marker: the file is truncated or was not written completely")
        }
        let tail = Tail(chunkCount: bytes.le(0, as: UInt64.self), tableOffset: bytes.le(8, as: UInt64.self),
                        dataBytes: bytes.le(16, as: UInt64.self), fileChecksum: bytes.le(24, as: UInt64.self),
                        headerChecksum: bytes.le(32, as: UInt64.self))
        guard bytes[40..<56].allSatisfy({ $0 == 0 }) else {
            throw CompressionError(.damagedTable, file: path, "the reserved bytes of the tail are not zero: the file is damaged")
        }
        let minimum = UInt64(CompressedFormat.prefixBytes) + tailBytes
        let tableEnd = size - tailBytes
        let count = tail.chunkCount, tableOffset = tail.tableOffset
        guard n <= SafetensorsLimits.maxHeaderBytes, UInt64(CompressedFormat.prefixBytes) + n <= tableOffset,
              tableOffset <= tableEnd, count <= (size - minimum) / UInt64(CompressedFormat.entryBytes),
              count * UInt64(CompressedFormat.entryBytes) == tableEnd - tableOffset,
              tail.dataBytes <= UInt64(Int64.max) / 2
        else {
            throw CompressionError(.damagedTable, file: path,
                "the chunk table does not fit the file (header \(counted(n, "byte")), \(counted(count, "chunk")) at \(tableOffset) in \(counted(size, "byte")))")
        }
        return tail
    }

    /// The safetensors header: its checksum, then the full validation every safetensors header gets.
    static func readHeader(_ mapping: MappedFile, length n: UInt64, tail: Tail) throws(CompressionError) -> SafetensorsHeader {
        let path = mapping.path
        let start = UInt64(CompressedFormat.prefixBytes)
        let bytes = mapping.bytes(start..<(start + n))
        guard moe_xxh64(bytes.baseAddress, bytes.count, 0) == tail.headerChecksum else {
            throw CompressionError(.headerChecksumMismatch, file: path, "the safetensors header does not match its checksum")
        }
        let header: SafetensorsHeader
        do {
            header = try HeaderParser.parse(bytes, fileSize: 8 + n + tail.dataBytes, file: path)
        } catch {
            throw CompressionError(.invalidHeader, file: path, "invalid safetensors header: \(error.problems.first.map { "\($0)" } ?? "")")
        }
        guard header.dataBytes == tail.dataBytes else {
            throw CompressionError(.invalidHeader, file: path, "the table says \(tail.dataBytes) data bytes, the header \(header.dataBytes)")
        }
        return header
    }

    /// The chunk table: chunks in data order, covering every tensor exactly, in whole values, planes inside `payload`.
    static func readTable(_ mapping: MappedFile, tail: Tail, header: SafetensorsHeader,
                          payload: Range<UInt64>) throws(CompressionError) -> [CompressedFormat.Chunk] {
        let table = mapping.bytes(tail.tableOffset..<(tail.tableOffset + tail.chunkCount * UInt64(CompressedFormat.entryBytes)))
        var chunks: [CompressedFormat.Chunk] = []
        chunks.reserveCapacity(Int(tail.chunkCount))
        var expected: UInt64 = 0
        for k in 0..<Int(tail.chunkCount) {
            let chunk = try readEntry(k, of: table, mapping: mapping, header: header, payload: payload, expectedOffset: expected)
            chunks.append(chunk)
            expected = chunk.dataOffset + UInt64(chunk.length)
        }
        guard expected == tail.dataBytes else {
            throw CompressionError(.damagedTable, file: mapping.path, "the chunks cover \(expected) of \(tail.dataBytes) data bytes (truncated table?)")
        }
        return chunks
    }

    /// Entry `k` of the table, which must start at `expectedOffset` of the data.
    static func readEntry(_ k: Int, of table: UnsafeRawBufferPointer, mapping: MappedFile, header: SafetensorsHeader,
                          payload: Range<UInt64>, expectedOffset expected: UInt64) throws(CompressionError) -> CompressedFormat.Chunk {
        let base = k * CompressedFormat.entryBytes
        let dataOffset = table.le(base, as: UInt64.self)
        let length = table.le(base + 8, as: UInt32.self)
        let tensor = table.le(base + 12, as: UInt32.self)
        let checksum = table.le(base + 16, as: UInt64.self)
        // The tensor is named once its index is known to be in range.
        var named: String? = nil
        func problem(_ what: String) -> CompressionError {
            CompressionError(.damagedTable, file: mapping.path, tensor: named, chunk: k, "chunk \(k): \(what)")
        }
        guard let encoding = CompressedFormat.Encoding(rawValue: table[base + 24]) else { throw problem("unknown encoding \(table[base + 24])") }
        let planeCount = Int(table[base + 25])
        guard planeCount == encoding.planes else { throw problem("\(counted(planeCount, "plane")) for encoding \(encoding)") }
        // Padding and unused plane slots are zero: a flipped bit anywhere in the table is caught.
        let padding = [(base + 26)..<(base + 32)] + (0..<planeCount).map { (base + 32 + $0 * 24 + 17)..<(base + 32 + $0 * 24 + 24) }
            + [(base + 32 + planeCount * 24)..<(base + CompressedFormat.entryBytes)]
        guard padding.allSatisfy({ r in table[r].allSatisfy { $0 == 0 } }) else { throw problem("non-zero padding: the table is damaged") }
        guard Int(tensor) < header.tensors.count else { throw problem("tensor index \(tensor) out of range") }
        let t = header.tensors[Int(tensor)]
        named = t.name
        // Bounded before anything is allocated for it: a chunk of 4 GiB made decompress take 7.8 GB.
        guard length <= CompressedFormat.chunkBytes else {
            throw problem("holds \(counted(length, "byte")), more than the \(CompressedFormat.chunkBytes) a chunk may hold (damaged or not made by moetool)")
        }
        guard dataOffset == expected, length > 0, dataOffset >= t.begin, dataOffset + UInt64(length) <= t.end else {
            throw problem("covers \(counted(length, "byte")) from \(dataOffset) of tensor \(escapeForDisplay(t.name)) (\(t.begin)..<\(t.end)); expected to start at \(expected)")
        }
        let width = encoding == .split16 ? 2 : encoding == .split32 ? 4 : 1
        guard Int(length) % width == 0 else { throw problem("\(counted(length, "byte")) is not a whole number of \(width)-byte values") }
        // Whole values of the tensor's dtype, as the writer cuts them: a reader can take chunks as units.
        let valueBytes = t.dtype.bits % 8 == 0 ? UInt64(t.dtype.bits / 8) : 1
        guard (dataOffset - t.begin) % valueBytes == 0, UInt64(length) % valueBytes == 0 else {
            throw problem("bytes \(dataOffset - t.begin)..<\(dataOffset - t.begin + UInt64(length)) of tensor \(escapeForDisplay(t.name)) "
                + "cut its \(t.dtype.rawValue) values apart")
        }
        let lengths = encoding.planeLengths(Int(length))
        var planes: [CompressedFormat.Plane] = []
        for i in 0..<planeCount {
            let p = base + 32 + i * 24
            let offset = table.le(p, as: UInt64.self)
            let stored = table.le(p + 8, as: UInt32.self)
            let raw = table.le(p + 12, as: UInt32.self)
            guard let method = CompressedFormat.Method(rawValue: table[p + 16]) else { throw problem("plane \(i): unknown method") }
            // (Subtractions, not additions: hostile offsets must not overflow.)
            guard Int(raw) == lengths[i], offset >= payload.lowerBound, offset <= payload.upperBound,
                  UInt64(stored) <= payload.upperBound - offset, method == .zstd ? stored < raw : stored == raw
            else { throw problem("plane \(i) is out of bounds or has the wrong length") }
            if method == .zstd {
                // The frame must say it holds exactly the plane (the writer always records the size).
                let frame = mapping.bytes(offset..<(offset + UInt64(stored)))
                let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
                guard declared == UInt64(raw) else {
                    let what = declared == ZSTD_CONTENTSIZE_ERROR ? "is not a zstd frame"
                        : declared == ZSTD_CONTENTSIZE_UNKNOWN ? "is a zstd frame that does not declare its size"
                        : "is a zstd frame of \(counted(declared, "byte")), not \(raw)"
                    throw problem("plane \(i) \(what)")
                }
            }
            // Planes are stored back to back, in order (readers rely on it to release a chunk's pages).
            if let previous = planes.last, offset != previous.offset + UInt64(previous.storedLength) {
                throw problem("plane \(i) does not follow plane \(i - 1)")
            }
            planes.append(.init(offset: offset, storedLength: stored, rawLength: raw, method: method))
        }
        return .init(dataOffset: dataOffset, length: length, tensor: tensor, checksum: checksum, encoding: encoding, planes: planes)
    }

    func stored(_ chunk: CompressedFormat.Chunk) -> [UnsafeRawBufferPointer] {
        chunk.planes.map { mapping.bytes($0.offset..<($0.offset + UInt64($0.storedLength))) }
    }

    func decode(_ k: Int, into out: UnsafeMutableRawBufferPointer) throws(CompressionError) {
        let c = chunks[k]
        do {
            try ChunkCodec.decode(c, stored: stored(c), into: out)
        } catch {
            let name = header.tensors[Int(c.tensor)].name
            throw CompressionError(.damagedChunk, file: path, tensor: name, chunk: k,
                "chunk \(k) (tensor \(escapeForDisplay(name)), bytes \(c.dataOffset)..<\(c.dataOffset + UInt64(c.length)) of the data): \(error)")
        }
    }

    /// Bytes `range` of one tensor (offsets within the tensor), decompressing only the chunks
    /// that cover them (each checked).
    public func bytes(_ tensor: TensorInfo, _ range: Range<UInt64>) throws(CompressionError) -> [UInt8] {
        precondition(range.upperBound <= tensor.byteCount, "range past the end of the tensor")
        guard !range.isEmpty else { return [] }
        let begin = tensor.begin + range.lowerBound, end = tensor.begin + range.upperBound
        // The last chunk starting at or before `begin`.
        var lo = 0, hi = chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if chunks[mid].dataOffset <= begin { lo = mid + 1 } else { hi = mid }
        }
        var failure: CompressionError? = nil
        // Not zero-filled first: the chunks covering the range write every byte (or the result is dropped).
        let out = [UInt8](unsafeUninitializedCapacity: Int(range.count)) { buffer, count in
            count = Int(range.count)
            var k = max(0, lo - 1)
            while k < chunks.count, chunks[k].dataOffset < end {
                let c = chunks[k]
                let from = max(begin, c.dataOffset), to = min(end, c.dataOffset + UInt64(c.length))
                let dst = UnsafeMutableRawPointer(buffer.baseAddress!) + Int(from - begin)
                do throws(CompressionError) {
                    if from == c.dataOffset && to == c.dataOffset + UInt64(c.length) {
                        // The whole chunk is wanted: decode it in place.
                        try decode(k, into: UnsafeMutableRawBufferPointer(start: dst, count: Int(c.length)))
                    } else {
                        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(c.length), alignment: 64)
                        defer { scratch.deallocate() }
                        try decode(k, into: scratch)
                        dst.copyMemory(from: scratch.baseAddress! + Int(from - c.dataOffset), byteCount: Int(to - from))
                    }
                } catch {
                    failure = error
                    return
                }
                // Done with this chunk's stored bytes: let their pages go (a scan stays at a few chunks).
                if let first = c.planes.first, let last = c.planes.last {
                    mapping.adviseDone(first.offset..<(last.offset + UInt64(last.storedLength)))
                }
                k += 1
            }
        }
        if let failure { throw failure }
        return out
    }

    /// Byte ranges of `tensor` (offsets within it), in order, covering it, each made of whole chunks and
    /// about `bytes` long (at least one chunk): units of work that decode every chunk exactly once. Chunks
    /// hold whole values (checked on open), so each range holds whole values too.
    public func chunkAlignedRanges(_ tensor: TensorInfo, about bytes: UInt64) -> [Range<UInt64>] {
        // The first chunk of the tensor.
        var lo = 0, hi = chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if chunks[mid].dataOffset < tensor.begin { lo = mid + 1 } else { hi = mid }
        }
        var ranges: [Range<UInt64>] = []
        var start = tensor.begin
        var k = lo
        while k < chunks.count, chunks[k].dataOffset < tensor.end {
            let end = chunks[k].dataOffset + UInt64(chunks[k].length)
            if end - start >= bytes || end == tensor.end {
                ranges.append((start - tensor.begin)..<(end - tensor.begin))
                start = end
            }
            k += 1
        }
        return ranges
    }

    /// One tensor's original bytes, decompressing only its chunks (each checked).
    public func data(_ tensor: TensorInfo) throws(CompressionError) -> [UInt8] {
        try bytes(tensor, 0..<tensor.byteCount)
    }

    /// Writes the original safetensors file to `output` (under a temporary name; renamed only
    /// after every chunk and the file checksum are verified). Chunks are decoded and written at
    /// their place in the file by all cores at once.
    public func decompress(to output: String, threads: Int = 0, progress: (@Sendable (UInt64) -> Void)? = nil) throws {
        let out = try AtomicFile(path: output)
        out.sources = [mapping]
        do {
            var head: [UInt8] = []
            head.appendLE(header.headerLength)
            let headerStart = UInt64(CompressedFormat.prefixBytes)
            head.append(contentsOf: mapping.bytes(headerStart..<(headerStart + header.headerLength)))
            try head.withUnsafeBytes { try out.write($0, at: 0) }
            let dataStart = 8 + header.headerLength
            nonisolated(unsafe) let file = out
            let failed = Atomic<Bool>(false)
            let failures = parallelMap(chunks.count, threads: threads) { k -> (any Error)? in
                // After the first failure the output is lost anyway: stop.
                guard !failed.load(ordering: .relaxed) else { return nil }
                let c = self.chunks[k]
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(c.length), alignment: 64)
                defer { buffer.deallocate() }
                do {
                    try self.decode(k, into: buffer)
                    try file.write(UnsafeRawBufferPointer(buffer), at: dataStart + c.dataOffset)
                } catch {
                    failed.store(true, ordering: .relaxed)
                    return error
                }
                if let first = c.planes.first, let last = c.planes.last {
                    self.mapping.adviseDone(first.offset..<(last.offset + UInt64(last.storedLength)))
                }
                progress?(UInt64(c.length))
                return nil
            }
            if let failure = failures.lazy.compactMap({ $0 }).first { throw failure }
            try out.commit()
        } catch {
            out.abort()
            throw error
        }
    }
}

