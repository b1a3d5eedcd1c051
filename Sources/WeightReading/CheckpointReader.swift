import Checkpoint
import NumberFormats
import SafetensorsFormat
import ShardCompression

/// The one way moetool reads weights: give it a name and it answers with the logical weight as float32
/// rows, whatever its encoding (WeightEncoding, recognised once) and wherever its bytes are (a mapped
/// shard, or a moetool compressed shard decompressed chunk by chunk as rows are asked for).
public final class CheckpointReader: Sendable {
    public let checkpoint: Checkpoint
    /// One per file of the checkpoint, in its order.
    public let storages: [ShardStorage]

    /// Opens every compressed shard's frame (its chunk table is checked now; chunks are checked as read).
    public init(_ checkpoint: Checkpoint) throws(WeightReadError) {
        self.checkpoint = checkpoint
        var storages: [ShardStorage] = []
        for file in checkpoint.files {
            do throws(CompressionError) {
                storages.append(try ShardStorage(file))
            } catch {
                throw WeightReadError(.damagedChunk, file: file.path, tensor: "", error.message,
                                      hint: "the compressed shard is damaged: compress the original again")
            }
        }
        self.storages = storages
    }

    public func storage(_ located: Checkpoint.Located) -> ShardStorage { storages[located.file] }

    public func has(_ name: String) -> Bool { checkpoint.locate(name) != nil }

    /// Bytes `range` of a stored tensor (the whole tensor by default), as stored.
    public func bytes(_ located: Checkpoint.Located, _ range: Range<UInt64>? = nil) throws(WeightReadError) -> TensorBytes {
        try storages[located.file].bytes(located.tensor, range)
    }

    /// The logical weight `name`: a 1-D tensor (as one row), a 2-D one, or expert `expert` of a 3-D fused
    /// stack [experts, rows, cols]. Its scales, if any, are read now; its rows when asked for.
    public func weight(_ name: String, expert: Int? = nil) throws(WeightReadError) -> StoredWeight {
        guard let located = checkpoint.locate(name) else {
            throw WeightReadError(.notFound, file: checkpoint.path, tensor: name, "not found",
                                  hint: "check the name with `moetool inspect --tensors`")
        }
        return try weight(located, expert: expert)
    }

    public func weight(_ located: Checkpoint.Located, expert: Int? = nil) throws(WeightReadError) -> StoredWeight {
        let t = located.tensor
        let path = checkpoint.files[located.file].path
        // Every dimension of a tensor with elements fits an Int (its bytes lie in a file); an empty tensor may
        // have a dimension of 2^64-1 and is no weight.
        guard t.elementCount > 0 else {
            throw WeightReadError(.notAMatrix, file: path, tensor: t.name, "shape \(formatShape(t.shape)) has no elements")
        }
        let shape = t.shape.map { Int($0) }
        let rows: Int, cols: Int, firstRow: Int
        switch (shape.count, expert) {
        case (1, nil): (rows, cols, firstRow) = (1, shape[0], 0)
        case (2, nil): (rows, cols, firstRow) = (shape[0], shape[1], 0)
        case (3, let e?):
            guard e >= 0 && e < shape[0] else {
                throw WeightReadError(.expertOutOfRange, file: path, tensor: t.name, "expert \(e) of a stack of \(shape[0])")
            }
            (rows, cols, firstRow) = (shape[1], shape[2], e * shape[1])
        default:
            throw WeightReadError(.notAMatrix, file: path, tensor: t.name,
                "shape \(formatShape(t.shape)) is not a matrix\(expert == nil ? "" : " stack") as read here")
        }
        let layout: any StoredLayout
        switch try checkpoint.encoding(of: t, inFile: located.file) {
        case .plain:
            if t.dtype.isFP8 {
                throw WeightReadError(.scaleMissing, file: path, tensor: t.name, "is FP8 but has no block scale beside it",
                                      hint: "a \(t.name)_scale_inv (or _scale) tensor is expected")
            }
            guard PlainLayout.dtypes.contains(t.dtype) else {
                throw WeightReadError(.unsupportedDtype, file: path, tensor: t.name, "dtype \(t.dtype.rawValue) is not read as weight values")
            }
            layout = PlainLayout(dtype: t.dtype, cols: cols)
        case .fp8Block(let scale, let block):
            guard expert == nil else {
                throw WeightReadError(.unsupportedLayout, file: path, tensor: t.name, "FP8 block-scaled expert stacks are not read")
            }
            layout = FP8BlockLayout(dtype: t.dtype, cols: cols, block: block, scales: try floats(scale))
        }
        return StoredWeight(name: expert.map { "\(t.name)[\($0)]" } ?? t.name, rows: rows, cols: cols,
                            storage: storages[located.file], tensor: t, firstRow: firstRow, layout: layout)
    }

    /// A small F32 or BF16 tensor (a scale grid) as float32, in order.
    func floats(_ located: Checkpoint.Located) throws(WeightReadError) -> [Float] {
        let t = located.tensor
        return try self.bytes(located).withUnsafeBytes { data in
            (0..<Int(t.elementCount)).map { i in
                t.dtype == .F32
                    ? data.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
                    : FloatDecoding.bf16(data.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
            }
        }
    }
}

/// A logical weight, [rows, cols], ready to be read a run of rows at a time.
public struct StoredWeight: Sendable {
    public let name: String
    public let rows: Int
    public let cols: Int
    public let storage: ShardStorage
    /// The tensor holding its codes or values.
    public let tensor: TensorInfo
    /// Its row 0 is this row of `tensor` (an expert of a fused stack starts further in).
    let firstRow: Int
    public let layout: any StoredLayout

    /// Rows `range` (all by default), their bytes fetched now: a view of the map, or decompressed chunks.
    public func rows(_ range: Range<Int>? = nil) throws(WeightReadError) -> StoredRows {
        let range = range ?? 0..<rows
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of \(rows)")
        let perRow = UInt64(layout.bytesPerRow)
        let lo = UInt64(firstRow + range.lowerBound) * perRow
        let bytes = try storage.bytes(tensor, lo..<(lo + UInt64(range.count) * perRow))
        return StoredRows(name: name, rows: range.count, cols: cols, decoder: layout.decoder(bytes, firstRow: range.lowerBound),
                          bytes: bytes, bytesPerRow: layout.bytesPerRow)
    }
}

/// A run of a weight's rows whose bytes are at hand, decoded row by row on demand.
public struct StoredRows: Sendable {
    public let name: String
    public let rows: Int
    public let cols: Int
    let decoder: any RowDecoder
    /// Row 0 of this view is this row of the decoder.
    let offset: Int
    let bytes: TensorBytes
    let bytesPerRow: Int

    init(name: String, rows: Int, cols: Int, decoder: any RowDecoder, bytes: TensorBytes, bytesPerRow: Int, offset: Int = 0) {
        self.bytesPerRow = bytesPerRow
        self.name = name
        self.rows = rows
        self.cols = cols
        self.decoder = decoder
        self.bytes = bytes
        self.offset = offset
    }

    /// Row `r` as float32 into `out` (cols values).
    public func decodeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        decoder.decodeRow(offset + r, cols: cols, into: out)
    }

    /// Rows `range` as BF16 into `out` (range.count x cols values).
    public func decodeRowsBF16(_ range: Range<Int>, into out: UnsafeMutablePointer<UInt16>) {
        decoder.decodeRowsBF16((offset + range.lowerBound)..<(offset + range.upperBound), cols: cols, into: out)
    }

    /// Rows `range` of this run, read from the same bytes (no copy): the gate and up halves of a fused
    /// gate_up projection.
    public func rows(_ range: Range<Int>) -> StoredRows {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of \(rows)")
        return StoredRows(name: "\(name)[rows \(range.lowerBound)..<\(range.upperBound)]", rows: range.count, cols: cols,
                          decoder: decoder, bytes: bytes, bytesPerRow: bytesPerRow, offset: offset + range.lowerBound)
    }

    /// The stored bytes of these rows (codes or values, as the encoding keeps them) for the duration of
    /// `body`, for encoders and checks that read a format in place.
    public func withStoredBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try bytes.withUnsafeBytes { (all: UnsafeRawBufferPointer) throws(E) -> R in
            try body(UnsafeRawBufferPointer(rebasing: all[(offset * bytesPerRow)..<((offset + rows) * bytesPerRow)]))
        }
    }

    /// Done with these rows: the mapped pages behind them are let go.
    public func release() { bytes.release() }
}
