import StrictJSON

/// A tensor to be written: what the header says about it. Its bytes come later, streamed.
public struct TensorSpec: Sendable, Equatable {
    public let name: String
    public let dtype: Dtype
    public let shape: [UInt64]

    public init(name: String, dtype: Dtype, shape: [UInt64]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// How a set of tensors is laid out, byte-compatible with the reference writer
/// (`safetensors.save_file`): data ordered by dtype rank descending, then name
/// in byte order; compact JSON with `__metadata__` first, then the entries in
/// data order; the header padded with spaces to a multiple of 8.
public struct SafetensorsLayout: Sendable {
    /// The header JSON including its padding (not the 8-byte length prefix).
    public let headerJSON: [UInt8]
    /// The tensors in data order, with their offsets.
    public let tensors: [TensorInfo]

    public var dataBytes: UInt64 { tensors.last?.end ?? 0 }
    public var fileSize: UInt64 { 8 + UInt64(headerJSON.count) + dataBytes }

    public enum LayoutError: Error, CustomStringConvertible {
        case duplicateName(String)
        case invalidSize(String)
        case headerTooLarge(Int)
        public var description: String {
            switch self {
            case .duplicateName(let n): return "tensor \"\(escapeForDisplay(n))\" given twice"
            case .invalidSize(let n): return "tensor \"\(escapeForDisplay(n))\": shape overflows or does not end on a byte"
            case .headerTooLarge(let n): return "header would be \(n) bytes, above the format's limit"
            }
        }
    }

    /// `metadata` keys are written in byte order of their names so that output is
    /// reproducible (the reference keeps them in a hash map, whose order varies).
    public init(tensors specs: [TensorSpec], metadata: [(key: String, value: String)]?) throws(LayoutError) {
        var seen = Set<String>()
        for s in specs where !seen.insert(s.name).inserted { throw .duplicateName(s.name) }
        let ordered = specs.sorted { a, b in
            if a.dtype != b.dtype { return a.dtype.rank > b.dtype.rank }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
        var infos: [TensorInfo] = []
        infos.reserveCapacity(ordered.count)
        var offset: UInt64 = 0
        for s in ordered {
            guard let n = elementCount(s.shape), case .success(let bytes) = s.dtype.byteSize(elements: n) else {
                throw .invalidSize(s.name)
            }
            infos.append(TensorInfo(name: s.name, dtype: s.dtype, shape: s.shape, begin: offset, end: offset + bytes))
            offset += bytes
        }
        var json: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        func comma() {
            if !first { json.append(UInt8(ascii: ",")) }
            first = false
        }
        if let metadata {
            comma()
            JSONSerializer.appendEscaped(SafetensorsLimits.metadataKey, to: &json)
            json.append(contentsOf: Array(":{".utf8))
            let sorted = metadata.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            for (i, kv) in sorted.enumerated() {
                if i > 0 { json.append(UInt8(ascii: ",")) }
                JSONSerializer.appendEscaped(kv.key, to: &json)
                json.append(UInt8(ascii: ":"))
                JSONSerializer.appendEscaped(kv.value, to: &json)
            }
            json.append(UInt8(ascii: "}"))
        }
        for t in infos {
            comma()
            JSONSerializer.appendEscaped(t.name, to: &json)
            json.append(contentsOf: Array(":{\"dtype\":\"".utf8))
            json.append(contentsOf: Array(t.dtype.rawValue.utf8))
            json.append(contentsOf: Array("\",\"shape\":[".utf8))
            json.append(contentsOf: Array(t.shape.map(String.init).joined(separator: ",").utf8))
            json.append(contentsOf: Array("],\"data_offsets\":[\(t.begin),\(t.end)]}".utf8))
        }
        json.append(UInt8(ascii: "}"))
        while json.count % 8 != 0 { json.append(0x20) }
        guard UInt64(json.count) <= SafetensorsLimits.maxHeaderBytes else { throw .headerTooLarge(json.count) }
        headerJSON = json
        tensors = infos
    }
}

/// Receives one tensor's bytes from a producer and checks it gets exactly as many as declared.
public final class TensorSink {
    let file: AtomicFile
    public let tensor: TensorInfo
    public private(set) var written: UInt64 = 0

    init(file: AtomicFile, tensor: TensorInfo) {
        self.file = file
        self.tensor = tensor
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard written + UInt64(bytes.count) <= tensor.byteCount else {
            throw SafetensorsWriteError.wrongByteCount(tensor: tensor.name, expected: tensor.byteCount,
                                                       got: written + UInt64(bytes.count))
        }
        try file.write(bytes)
        written += UInt64(bytes.count)
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }
}

public enum SafetensorsWriteError: Error, CustomStringConvertible {
    case wrongByteCount(tensor: String, expected: UInt64, got: UInt64)
    public var description: String {
        switch self {
        case .wrongByteCount(let t, let e, let g):
            return "tensor \"\(escapeForDisplay(t))\": producer wrote \(g) bytes, expected \(e)"
        }
    }
}

/// Streams a safetensors file to disk: the header first, then each tensor's bytes
/// as `produce` hands them over, one tensor at a time in data order. The file
/// appears under `path` only when complete and synced.
public enum SafetensorsWriter {
    @discardableResult
    public static func write(
        to path: String, tensors: [TensorSpec], metadata: [(key: String, value: String)]?,
        observe: ((UnsafeRawBufferPointer) -> Void)? = nil, sources: [MappedFile] = [],
        produce: (TensorInfo, TensorSink) throws -> Void
    ) throws -> SafetensorsLayout {
        let layout = try SafetensorsLayout(tensors: tensors, metadata: metadata)
        let file = try AtomicFile(path: path)
        file.observer = observe
        file.sources = sources
        do {
            var prefix = UInt64(layout.headerJSON.count).littleEndian
            try withUnsafeBytes(of: &prefix) { try file.write($0) }
            try file.write(layout.headerJSON)
            for t in layout.tensors {
                let sink = TensorSink(file: file, tensor: t)
                try produce(t, sink)
                guard sink.written == t.byteCount else {
                    throw SafetensorsWriteError.wrongByteCount(tensor: t.name, expected: t.byteCount, got: sink.written)
                }
            }
            try file.commit()
        } catch {
            file.abort()
            throw error
        }
        return layout
    }
}
