/// Where a moetool compressed shard (Docs/compress.md) keeps the safetensors header, so that
/// header-only readers (inspect, checkpoint validation) can open compressed shards as they are.
/// The rest of the format belongs to the ShardCompression module.
public enum CompressedLayout {
    public static let magic: [UInt8] = [0x89, 0x4D, 0x5A, 0x53, 0x54, 0x0D, 0x0A, 0x1A]
    public static let endMagic: [UInt8] = Array("MZSTEND\0".utf8)
    /// Magic, version, flags and the header length come before the header.
    public static let prefixBytes: UInt64 = 24
    /// Chunk count, table offset, data bytes, checksums, reserved, end magic.
    public static let tailBytes: UInt64 = 64
    /// Appended to a shard's name when it is stored compressed (`model.safetensors.mz`): nothing that globs
    /// `*.safetensors` takes it for safetensors, and removing it gives the original name back.
    public static let fileSuffix = ".mz"

    /// For a compressed shard: the header length and the original data bytes; nil when `mapping`
    /// does not start with the magic number. Throws when it does but the frame is broken.
    static func probe(_ mapping: MappedFile, file: String) throws(InvalidInput) -> (headerLength: UInt64, dataBytes: UInt64)? {
        guard mapping.size >= 8, Array(mapping.bytes(0..<8)) == magic else { return nil }
        guard mapping.size >= prefixBytes + tailBytes else {
            throw InvalidInput(Problem(file: file, rule: .fileTooSmall, "compressed shard of \(mapping.size) bytes is truncated"))
        }
        let n = mapping.bytes(16..<24).loadUnaligned(as: UInt64.self).littleEndian
        let tail = mapping.bytes((mapping.size - tailBytes)..<mapping.size)
        guard Array(tail[56..<64]) == endMagic else {
            throw InvalidInput(Problem(file: file, rule: .fileTooSmall,
                "compressed shard has no end marker: truncated or not written completely"))
        }
        let dataBytes = tail.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian
        guard n <= SafetensorsLimits.maxHeaderBytes, prefixBytes + n + tailBytes <= mapping.size, dataBytes <= UInt64(Int64.max) / 2 else {
            throw InvalidInput(Problem(file: file, rule: .headerOutOfBounds,
                "compressed shard's header length \(n) does not fit its \(mapping.size) bytes"))
        }
        return (n, dataBytes)
    }
}
