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

/// Where one tensor's bytes go: positioned writes into the file being written, from any number of
/// threads at once (each writing its own part); the total is checked against the tensor's size.
public final class TensorRegion: @unchecked Sendable {
    let file: AtomicFile
    let start: UInt64
    public let tensor: TensorInfo
    private let count = Locked<UInt64>(0)
    let sequence: InOrder?

    init(file: AtomicFile, start: UInt64, tensor: TensorInfo, sequence: InOrder?) {
        self.file = file
        self.start = start
        self.tensor = tensor
        self.sequence = sequence
    }

    /// Writes `bytes` at `offset` within the tensor.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard offset <= tensor.byteCount, UInt64(bytes.count) <= tensor.byteCount - offset else {
            throw SafetensorsWriteError.wrongByteCount(tensor: tensor.name, expected: tensor.byteCount, got: offset + UInt64(bytes.count))
        }
        guard !bytes.isEmpty else { return }
        try file.write(bytes, at: start + offset)
        count.withLock { $0 += UInt64(bytes.count) }
        sequence?.feed(bytes, at: start + offset)
    }

    public var written: UInt64 { count.withLock { $0 } }
}

/// Hands the bytes written to a file, arriving from several threads and not in order, to an observer in
/// file order (to checksum a file while it is written instead of reading it all back): a piece at the
/// cursor goes straight through; one a little ahead waits, copied, until the gap is filled; one far
/// ahead (an FP8 weight's codes, computed with its scales, which come earlier in the file) is noted and
/// read back from the file when the cursor reaches it. A piece written twice stops the streaming, and
/// `finish` reads the rest back.
final class InOrder: @unchecked Sendable {
    private let observe: (UnsafeRawBufferPointer) -> Void
    private let path: String
    private struct State {
        var cursor: UInt64 = 0
        var waiting: [UInt64: [UInt8]] = [:]
        var waitingBytes = 0
        var farAhead: [UInt64: Int] = [:]
        var streaming = true
        var written: MappedFile? = nil
    }
    private let state = Locked(State())
    private let limit = 16 << 20

    /// `path`: the file being written, to read pieces back from.
    init(path: String, _ observe: @escaping (UnsafeRawBufferPointer) -> Void) {
        self.path = path
        self.observe = observe
    }

    func feed(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) {
        state.withLock { s in
            guard s.streaming, !bytes.isEmpty else { return }
            let n = bytes.count
            if offset == s.cursor {
                observe(bytes)
                s.cursor += UInt64(n)
                drain(&s)
            } else if offset > s.cursor, s.waiting[offset] == nil, s.farAhead[offset] == nil {
                if offset - s.cursor <= UInt64(limit) && s.waitingBytes + n <= limit {
                    s.waiting[offset] = Array(bytes)
                    s.waitingBytes += n
                } else {
                    s.farAhead[offset] = n
                }
            } else {
                // Written twice: the rest is read back from the file at the end.
                s = State(cursor: s.cursor, streaming: false)
            }
        }
    }

    /// Observes every piece now contiguous with the cursor.
    private func drain(_ s: inout State) {
        while true {
            if let next = s.waiting.removeValue(forKey: s.cursor) {
                s.waitingBytes -= next.count
                next.withUnsafeBytes { observe($0) }
                s.cursor += UInt64(next.count)
            } else if let n = s.farAhead.removeValue(forKey: s.cursor) {
                let end = s.cursor + UInt64(n)
                if s.written.map({ $0.size < end }) ?? true { s.written = try? MappedFile(path: path) }
                guard let written = s.written, written.size >= end else {
                    s = State(cursor: s.cursor, streaming: false)  // cannot read it now: finish will
                    return
                }
                written.slices(s.cursor..<end) { slice, _ in observe(slice) }
                s.cursor = end
            } else {
                return
            }
        }
    }

    /// Observes whatever did not stream, reading the file from the cursor to its end.
    func finish() throws {
        let cursor = state.withLock { s in
            s.written = nil
            return s.cursor
        }
        let written = try MappedFile(path: path)
        guard cursor < written.size else { return }
        written.slices(cursor..<written.size) { slice, _ in observe(slice) }
    }
}

/// Receives one tensor's bytes from a producer, in order, and checks it gets exactly as many as declared.
public final class TensorSink {
    let region: TensorRegion
    public var tensor: TensorInfo { region.tensor }
    public private(set) var written: UInt64 = 0

    init(region: TensorRegion) {
        self.region = region
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try region.write(bytes, at: written)
        written += UInt64(bytes.count)
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }
}

/// A safetensors file being written: the header first, then each tensor's bytes put straight at
/// their place in the file by positioned writes, in any order and from any number of threads (so a
/// converter writes each band of a tensor from the core that computed it, while it is still in that
/// core's cache). `commit` checks every tensor got all its bytes and renames the file into place.
public final class SafetensorsOutput {
    public let layout: SafetensorsLayout
    public let path: String
    private let file: AtomicFile
    private var index: [String: Int] = [:]
    private var filled: [Bool]
    private var done = false
    private let sequence: InOrder?

    /// `sources`: the mapped inputs, checked unchanged before the rename (see AtomicFile.sources).
    /// `observe` sees every byte of the file once, in order (to checksum it): mostly while it is
    /// written, the rest when it is committed.
    public init(path: String, tensors: [TensorSpec], metadata: [(key: String, value: String)]?,
                sources: [MappedFile] = [], observe: ((UnsafeRawBufferPointer) -> Void)? = nil) throws {
        layout = try SafetensorsLayout(tensors: tensors, metadata: metadata)
        self.path = path
        let file = try AtomicFile(path: path)
        self.file = file
        sequence = observe.map { InOrder(path: file.temporaryPath, $0) }
        filled = Array(repeating: false, count: layout.tensors.count)
        for (k, t) in layout.tensors.enumerated() { index[t.name] = k }
        file.sources = sources
        do {
            var prefix = UInt64(layout.headerJSON.count).littleEndian
            try withUnsafeBytes(of: &prefix) {
                try file.write($0, at: 0)
                sequence?.feed($0, at: 0)
            }
            try layout.headerJSON.withUnsafeBytes {
                try file.write($0, at: 8)
                sequence?.feed($0, at: 8)
            }
        } catch {
            file.abort()
            throw error
        }
    }

    deinit { if !done { file.abort() } }

    public func isFilled(_ name: String) -> Bool { index[name].map { filled[$0] } ?? false }

    /// Fills tensor `name`: `body` must write every one of its bytes into the region it is given.
    public func fill(_ name: String, _ body: (TensorRegion) throws -> Void) throws {
        guard let k = index[name] else { preconditionFailure("no tensor \(name) in this output") }
        precondition(!filled[k], "tensor \(name) filled twice")
        let t = layout.tensors[k]
        let region = TensorRegion(file: file, start: 8 + UInt64(layout.headerJSON.count) + t.begin, tensor: t, sequence: sequence)
        try body(region)
        guard region.written == t.byteCount else {
            throw SafetensorsWriteError.wrongByteCount(tensor: t.name, expected: t.byteCount, got: region.written)
        }
        filled[k] = true
        FaultInjection.event()
    }

    /// Checks every tensor was filled, lets the observer see the bytes it has not seen yet, and puts
    /// the file in place (synced).
    public func commit() throws {
        if let k = filled.firstIndex(of: false) {
            throw SafetensorsWriteError.wrongByteCount(tensor: layout.tensors[k].name, expected: layout.tensors[k].byteCount, got: 0)
        }
        try sequence?.finish()
        done = true
        try file.commit()
    }

    public func abort() {
        done = true
        file.abort()
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
        let output = try SafetensorsOutput(path: path, tensors: tensors, metadata: metadata, sources: sources, observe: observe)
        do {
            for t in output.layout.tensors {
                try output.fill(t.name) { region in try produce(t, TensorSink(region: region)) }
            }
            try output.commit()
        } catch {
            output.abort()
            throw error
        }
        return output.layout
    }
}
