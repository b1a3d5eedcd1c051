import Checkpoint
import SafetensorsFormat
import ShardCompression

/// A stored tensor's bytes (or a range of them), wherever they are: a view into a mapped shard, or, for a
/// moetool compressed shard, the chunks that cover them decompressed into memory of its own. The bytes
/// are valid while this object lives, so they are lent out only inside `withUnsafeBytes`; they may sit
/// at any alignment (read them with `loadUnaligned`).
public final class TensorBytes: @unchecked Sendable {
    /// Used only while `self` is known to be alive (decoders hold their TensorBytes).
    let buffer: UnsafeRawBufferPointer
    private let owned: UnsafeMutableRawBufferPointer?
    /// The mapped file and the file offsets these bytes come from (nil when decompressed).
    private let mapped: (file: SafetensorsFile, range: Range<UInt64>)?

    init(mapped file: SafetensorsFile, tensor: TensorInfo, range: Range<UInt64>) {
        let all = file.data(tensor)
        buffer = UnsafeRawBufferPointer(rebasing: all[Int(range.lowerBound)..<Int(range.upperBound)])
        let start = file.fileRange(tensor).lowerBound
        mapped = (file, (start + range.lowerBound)..<(start + range.upperBound))
        owned = nil
    }

    init(decompressed bytes: [UInt8]) {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0) }
        owned = copy
        buffer = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(copy)[0..<bytes.count])
        mapped = nil
    }

    deinit { owned?.deallocate() }

    public var count: Int { buffer.count }

    /// The bytes, for the duration of `body`.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        defer { withExtendedLifetime(self) {} }
        return try body(buffer)
    }

    /// A copy of the bytes.
    public var array: [UInt8] { withUnsafeBytes { Array($0) } }

    /// Done with these bytes: the pages of a mapped shard are let go, so that reading a whole checkpoint
    /// keeps memory at the size of what is being worked on.
    public func release() {
        if let mapped { mapped.file.mapping.adviseDone(mapped.range) }
    }
}

/// Where one shard's tensor bytes are: in the mapped file itself, or in the chunks of a moetool compressed
/// shard (Docs/compress.md), decompressed on demand and checked as they are.
public enum ShardStorage: Sendable {
    case mapped(SafetensorsFile)
    case compressed(SafetensorsFile, CompressedShard)

    public var file: SafetensorsFile {
        switch self {
        case .mapped(let f), .compressed(let f, _): return f
        }
    }

    public var isCompressed: Bool {
        if case .compressed = self { return true }
        return false
    }

    /// Opens the compressed frame of `file` when it has one (its chunk table is checked now).
    public init(_ file: SafetensorsFile) throws(CompressionError) {
        self = file.isCompressed ? .compressed(file, try CompressedShard(file.mapping)) : .mapped(file)
    }

    /// Bytes `range` of `tensor` (offsets within the tensor; the whole tensor by default).
    public func bytes(_ tensor: TensorInfo, _ range: Range<UInt64>? = nil) throws(WeightReadError) -> TensorBytes {
        let range = range ?? 0..<tensor.byteCount
        precondition(range.upperBound <= tensor.byteCount, "bytes \(range) past the end of \(tensor.name)")
        switch self {
        case .mapped(let f):
            return TensorBytes(mapped: f, tensor: tensor, range: range)
        case .compressed(let f, let shard):
            do throws(CompressionError) {
                return TensorBytes(decompressed: try shard.bytes(tensor, range))
            } catch {
                throw WeightReadError(.damagedChunk, file: f.path, tensor: tensor.name, error.message,
                                      hint: "the compressed shard is damaged: compress the original again")
            }
        }
    }

    /// Byte ranges of `tensor` (offsets within it), in order and covering it, each about `bytes` long and a
    /// multiple of `granule` bytes: units of work. In a compressed shard they follow the chunks, so that
    /// each chunk is decompressed once.
    public func pieces(_ tensor: TensorInfo, about bytes: UInt64, granule: UInt64 = 1) -> [Range<UInt64>] {
        if case .compressed(_, let shard) = self { return shard.chunkAlignedRanges(tensor, about: bytes) }
        let step = max(granule, bytes / granule * granule)
        return stride(from: UInt64(0), to: tensor.byteCount, by: Int(step)).map { $0..<min(tensor.byteCount, $0 + step) }
    }
}
