
/// An open, validated safetensors file: its header, and zero-copy views of its
/// tensors' bytes through a memory map. Views are valid while the file object lives.
/// Tensor data may sit at any alignment: read it with `loadUnaligned`.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let header: SafetensorsHeader
    public let mapping: MappedFile
    /// Built on first lookup: checkpoints look names up through their own index instead.
    private let indexByName = Locked<[String: Int]?>(nil)

    /// A moetool compressed shard: the header is readable, tensor bytes are not (`data` must
    /// not be used; decompress first).
    public let isCompressed: Bool

    public var tensors: [TensorInfo] { header.tensors }
    public var size: UInt64 { mapping.size }

    /// Opens and validates `path`. `displayName` is how errors name the file (defaults to the path).
    public init(path: String, displayName: String? = nil) throws(InvalidInput) {
        let name = displayName ?? path
        self.path = path
        let mapping: MappedFile
        do {
            mapping = try MappedFile(path: path)
        } catch {
            throw InvalidInput(Problem(file: name, rule: .unreadable, error.description))
        }
        // Before blaming a header length, say what the file is when it is plainly something else.
        func notSafetensors() -> InvalidInput? {
            FileSniffing.describe(mapping.bytes(0..<min(mapping.size, 512))).map {
                InvalidInput(Problem(file: name, rule: .notSafetensors, "is not a safetensors file: it looks like \($0)"))
            }
        }
        guard mapping.size >= SafetensorsLimits.prefixBytes else {
            throw notSafetensors() ?? InvalidInput(Problem(file: name, rule: .fileTooSmall,
                "file is \(mapping.size) bytes; a safetensors file starts with an 8-byte header length"))
        }
        if let compressed = try CompressedLayout.probe(mapping, file: name) {
            let n = compressed.headerLength
            let start = CompressedLayout.prefixBytes
            header = try HeaderParser.parse(mapping.bytes(start..<(start + n)), fileSize: 8 + n + compressed.dataBytes, file: name)
            isCompressed = true
            self.mapping = mapping
            return
        }
        if mapping.size == 8 || mapping.bytes(8..<9)[0] != UInt8(ascii: "{"), let problem = notSafetensors() { throw problem }
        isCompressed = false
        let prefix = mapping.bytes(0..<8).loadUnaligned(as: UInt64.self).littleEndian
        let n = try HeaderParser.headerLength(prefix: prefix, fileSize: mapping.size, file: name)
        header = try HeaderParser.parse(mapping.bytes(8..<(8 + n)), fileSize: mapping.size, file: name)
        // The header is parsed into our own structures: let its pages go.
        mapping.adviseDone(0..<(8 + n))
        self.mapping = mapping
    }

    public func tensor(named name: String) -> TensorInfo? {
        let i: Int? = indexByName.withLock { index in
            if index == nil {
                var built: [String: Int] = [:]
                built.reserveCapacity(header.tensors.count)
                for (i, t) in header.tensors.enumerated() { built[t.name] = i }
                index = built
            }
            return index![name]
        }
        return i.map { header.tensors[$0] }
    }

    /// The tensor's bytes, straight from the map (not for compressed shards).
    public func data(_ tensor: TensorInfo) -> UnsafeRawBufferPointer {
        precondition(!isCompressed, "\(path) is a compressed shard: its tensor bytes need decompressing")
        let start = header.dataStart
        return mapping.bytes((start + tensor.begin)..<(start + tensor.end))
    }

    /// Absolute file offsets of the tensor's bytes.
    public func fileRange(_ tensor: TensorInfo) -> Range<UInt64> {
        (header.dataStart + tensor.begin)..<(header.dataStart + tensor.end)
    }
}
