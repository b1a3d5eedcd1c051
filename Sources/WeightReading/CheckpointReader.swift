import CKernels
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
    /// The dtype dequantized values are rounded to (nil: they stay as the format's arithmetic leaves them).
    public let valueDtype: Dtype?

    /// What an encoded weight's values are: as the model receives them (rounded to its compute dtype, as every
    /// dequantizing loader hands them over), or as the format's own arithmetic leaves them.
    public enum Values: Sendable {
        case modelDtype
        case computed
    }

    /// Opens every compressed shard's frame (its chunk table is checked now; chunks are checked as read).
    public init(_ checkpoint: Checkpoint, values: Values = .modelDtype) throws(WeightReadError) {
        self.checkpoint = checkpoint
        let dtype = checkpoint.config?.computeDtype
        valueDtype = values == .modelDtype && (dtype == .BF16 || dtype == .F16) ? dtype : nil
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

    /// Whether the logical weight `name` is stored, as a tensor of that name or in one of the packed layouts.
    public func has(_ name: String) -> Bool {
        checkpoint.locate(name) != nil || checkpoint.locate(name, suffix: "_packed") != nil
            || checkpoint.locate(name, suffix: "_blocks") != nil
    }

    /// Bytes `range` of a stored tensor (the whole tensor by default), as stored.
    public func bytes(_ located: Checkpoint.Located, _ range: Range<UInt64>? = nil) throws(WeightReadError) -> TensorBytes {
        try storages[located.file].bytes(located.tensor, range)
    }

    /// The logical weight `name` (LogicalWeight): a 1-D tensor (as one row), a 2-D one, or expert `expert` of a
    /// 3-D fused stack [experts, rows, cols] (gpt-oss's MXFP4 experts: [experts, rows, cols/32, 16] blocks). Its
    /// scales, if any, are read now; its rows when asked for.
    public func weight(_ name: String, expert: Int? = nil) throws(WeightReadError) -> StoredWeight {
        guard let logical = try checkpoint.logicalWeight(name) else {
            throw WeightReadError(.notFound, file: checkpoint.path, tensor: name, "not found",
                                  hint: "check the name with `moetool inspect --tensors`")
        }
        return try weight(logical, expert: expert)
    }

    /// The weight stored in tensor `located` under its own name.
    public func weight(_ located: Checkpoint.Located, expert: Int? = nil) throws(WeightReadError) -> StoredWeight {
        let logical = LogicalWeight(name: located.tensor.name, codes: located,
                                    encoding: try checkpoint.encoding(of: located.tensor, inFile: located.file))
        return try weight(logical, expert: expert)
    }

    public func weight(_ logical: LogicalWeight, expert: Int? = nil) throws(WeightReadError) -> StoredWeight {
        let located = logical.codes
        let t = located.tensor
        let path = checkpoint.files[located.file].path
        // Every dimension of a tensor with elements fits an Int (its bytes lie in a file); an empty tensor may
        // have a dimension of 2^64-1 and is no weight.
        guard t.elementCount > 0 else {
            throw WeightReadError(.notAMatrix, file: path, tensor: t.name, "shape \(formatShape(t.shape)) has no elements")
        }
        let shape = t.shape.map { Int($0) }
        func matrix() throws(WeightReadError) -> (rows: Int, cols: Int, firstRow: Int) {
            switch (shape.count, expert) {
            case (1, nil): return (1, shape[0], 0)
            case (2, nil): return (shape[0], shape[1], 0)
            case (3, let e?):
                guard e >= 0 && e < shape[0] else {
                    throw WeightReadError(.expertOutOfRange, file: path, tensor: t.name, "expert \(e) of a stack of \(shape[0])")
                }
                return (shape[1], shape[2], e * shape[1])
            default:
                throw WeightReadError(.notAMatrix, file: path, tensor: t.name,
                    "shape \(formatShape(t.shape)) is not a matrix\(expert == nil ? "" : " stack") as read here")
            }
        }
        let rows: Int, cols: Int, firstRow: Int
        let layout: any StoredLayout
        switch logical.encoding {
        case .plain:
            if t.dtype.isFP8 {
                throw WeightReadError(.scaleMissing, file: path, tensor: t.name, "is FP8 but has no block scale beside it",
                                      hint: "a \(t.name)_scale_inv (or _scale) tensor is expected")
            }
            guard PlainLayout.dtypes.contains(t.dtype) else {
                let what = t.dtype == .U8 && checkpoint.locate(t.name, suffix: "_scale") != nil
                    ? "is U8 with a scale beside it (ModelOpt NVFP4?), which is recognised but not yet read"
                    : "dtype \(t.dtype.rawValue) is not read as weight values"
                throw WeightReadError(.unsupportedDtype, file: path, tensor: t.name, what)
            }
            (rows, cols, firstRow) = try matrix()
            layout = PlainLayout(dtype: t.dtype, cols: cols)
        case .fp8Block(let scale, let block):
            guard expert == nil else {
                throw WeightReadError(.unsupportedLayout, file: path, tensor: t.name, "FP8 block-scaled expert stacks are not read")
            }
            (rows, cols, firstRow) = try matrix()
            layout = FP8BlockLayout(dtype: t.dtype, cols: cols, block: block, scales: try floats(scale),
                                    roundTo: scale.tensor.dtype == .BF16 ? .BF16 : .F32)
        case .packedInt(let scale, let zeroPoint, let shapeTensor, let bits):
            guard shape.count == 2, expert == nil else {
                throw WeightReadError(.notAMatrix, file: path, tensor: t.name, "packed weight of shape \(formatShape(t.shape)) is not 2-D")
            }
            (rows, firstRow) = (shape[0], 0)
            let perWord = 32 / bits
            cols = try packedColumns(t, perWord: perWord, shapeTensor: shapeTensor)
            let groups = scale.tensor.shape.count == 2 ? Int(scale.tensor.shape[1]) : 0
            guard scale.tensor.shape.count == 2, Int(scale.tensor.shape[0]) == rows, groups >= 1, groups <= cols else {
                throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[scale.file].path, tensor: scale.tensor.name,
                    "scale shape \(formatShape(scale.tensor.shape)) is not [\(rows), groups] for a [\(rows), \(cols)] weight")
            }
            // One group a row is the channel strategy; more must be what a declared group_size makes of the row.
            let declared = checkpoint.declaredGroupSizes
            guard groups == 1 || declared.isEmpty || declared.contains(where: { (cols + $0 - 1) / $0 == groups }) else {
                throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[scale.file].path, tensor: scale.tensor.name,
                    "\(groups) scales a row, but quantization_config's group_size \(declared.map(String.init).joined(separator: " or ")) on \(cols) columns makes \(declared.map { String((cols + $0 - 1) / $0) }.joined(separator: " or "))",
                    hint: "fix config.json or the scales")
            }
            // The declared size when one makes this many groups (a last group may be short), else the even split.
            let groupSize = groups == 1 ? cols : declared.first { (cols + $0 - 1) / $0 == groups } ?? (cols + groups - 1) / groups
            var zeroPoints: [Float] = []
            if let zeroPoint {
                let wordRows = (rows + perWord - 1) / perWord
                guard zeroPoint.tensor.shape == [UInt64(wordRows), UInt64(groups)], zeroPoint.tensor.dtype == .I32 else {
                    throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[zeroPoint.file].path, tensor: zeroPoint.tensor.name,
                        "zero points \(zeroPoint.tensor.dtype.rawValue) \(formatShape(zeroPoint.tensor.shape)) are not I32 [\(wordRows), \(groups)] (packed along the rows)")
                }
                let words = try integers(zeroPoint)
                let offset = 1 << (bits - 1), mask = (1 << bits) - 1
                zeroPoints = (0..<(rows * groups)).map { i in
                    let (r, g) = (i / groups, i % groups)
                    let word = UInt32(truncatingIfNeeded: words[(r / perWord) * groups + g])
                    return Float(Int((word >> UInt32((r % perWord) * bits)) & UInt32(mask)) - offset)
                }
            }
            guard [.F32, .BF16, .F16].contains(scale.tensor.dtype) else {
                throw WeightReadError(.unsupportedLayout, file: checkpoint.files[scale.file].path, tensor: scale.tensor.name,
                                      "scale dtype \(scale.tensor.dtype.rawValue); F32, BF16 or F16 scales are read")
            }
            layout = PackedIntLayout(cols: cols, bits: bits, wordsPerRow: shape[1], groupSize: groupSize, groups: groups,
                                     scales: try floats(scale), zeroPoints: zeroPoints, scaleDtype: scale.tensor.dtype)
        case .nvfp4(let scale, let global, let convention):
            guard shape.count == 2, expert == nil else {
                throw WeightReadError(.notAMatrix, file: path, tensor: t.name, "packed weight of shape \(formatShape(t.shape)) is not 2-D")
            }
            (rows, cols, firstRow) = (shape[0], shape[1] * 2, 0)
            let groups = try fp4Groups(scale, rows: rows, cols: cols, per: 16)
            guard global.tensor.elementCount == 1, [.F32, .BF16, .F16].contains(global.tensor.dtype) else {
                throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[global.file].path, tensor: global.tensor.name,
                                      "a global scale is one float, not \(global.tensor.dtype.rawValue) \(formatShape(global.tensor.shape))")
            }
            let globalValue = try floats(global)
            var fp4 = FP4Layout(cols: cols, groupSize: cols / groups, groups: groups,
                                multipliers: FP4Layout.nvfp4Multipliers(scaleCodes: try bytes(scale).array, global: globalValue[0], convention: convention),
                                scaling: .nvfp4)
            if convention == .multiplies { fp4.levels = FP4.e2m1PositiveZero }  // ModelOpt decodes code 8 as +0
            layout = fp4
        case .mxfp4(let scale):
            guard shape.count == 2, expert == nil else {
                throw WeightReadError(.notAMatrix, file: path, tensor: t.name, "packed weight of shape \(formatShape(t.shape)) is not 2-D")
            }
            (rows, cols, firstRow) = (shape[0], shape[1] * 2, 0)
            let groups = try fp4Groups(scale, rows: rows, cols: cols, per: 32)
            layout = FP4Layout(cols: cols, groupSize: cols / groups, groups: groups,
                               multipliers: FP4Layout.mxMultipliers(scaleBytes: try bytes(scale).array), scaling: .mxfp4)
        case .gptOssMXFP4(let scales):
            guard shape.count == 4, shape[3] == 16, let e = expert else {
                throw WeightReadError(.notAMatrix, file: path, tensor: t.name,
                    "MXFP4 blocks of shape \(formatShape(t.shape)) are not [experts, rows, groups, 16]\(expert == nil ? ", or no expert was asked for" : "")")
            }
            guard e >= 0 && e < shape[0] else {
                throw WeightReadError(.expertOutOfRange, file: path, tensor: t.name, "expert \(e) of a stack of \(shape[0])")
            }
            (rows, cols, firstRow) = (shape[1], shape[2] * 32, e * shape[1])
            guard scales.tensor.shape == [t.shape[0], t.shape[1], t.shape[2]], scales.tensor.dtype == .U8 || scales.tensor.dtype == .F8_E8M0 else {
                throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[scales.file].path, tensor: scales.tensor.name,
                    "scales \(scales.tensor.dtype.rawValue) \(formatShape(scales.tensor.shape)) are not U8 \(formatShape(Array(t.shape.prefix(3))))")
            }
            // This expert's scales only: its rows are [0, rows) of the weight made for it.
            let perExpert = UInt64(shape[1] * shape[2])
            let mine = try bytes(scales, UInt64(e) * perExpert..<UInt64(e + 1) * perExpert).array
            layout = FP4Layout(cols: cols, groupSize: 32, groups: shape[2], multipliers: FP4Layout.mxMultipliers(scaleBytes: mine),
                               scaling: .mxfp4)
        }
        var delivered = layout
        if let valueDtype, !Self.exact(layout, in: valueDtype) { delivered = RoundedLayout(inner: layout, dtype: valueDtype) }
        return StoredWeight(name: expert.map { "\(logical.name)[\($0)]" } ?? logical.name, rows: rows, cols: cols,
                            storage: storages[located.file], tensor: t, firstRow: firstRow, layout: delivered)
    }

    /// Whether every value `layout` decodes is already a `dtype` value, so that rounding it to `dtype` is the
    /// identity and is skipped: plain values are the model's own, and MX products are made in BF16 (FP4Scaling).
    static func exact(_ layout: any StoredLayout, in dtype: Dtype) -> Bool {
        layout is PlainLayout || (dtype == .BF16 && (layout as? FP4Layout)?.scaling == .mxfp4)
    }

    /// The columns of a pack-quantized weight: `weight_shape`'s, checked against what the packed words can hold,
    /// else every field of every word.
    func packedColumns(_ t: TensorInfo, perWord: Int, shapeTensor: Checkpoint.Located?) throws(WeightReadError) -> Int {
        let (rows, words) = (Int(t.shape[0]), Int(t.shape[1]))
        guard let shapeTensor else { return words * perWord }
        guard shapeTensor.tensor.elementCount == 2 else {
            throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[shapeTensor.file].path, tensor: shapeTensor.tensor.name,
                "a weight_shape holds 2 integers, not \(shapeTensor.tensor.elementCount)")
        }
        let declared = try integers(shapeTensor)
        guard declared[0] == rows, declared[1] > (words - 1) * perWord, declared[1] <= words * perWord else {
            throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[shapeTensor.file].path, tensor: shapeTensor.tensor.name,
                "says the weight is \(declared), which \(formatShape(t.shape)) packed \(perWord) to a word cannot hold")
        }
        return declared[1]
    }

    /// The [rows, cols] of a logical weight (one expert's, for a stack), from headers and at most a `weight_shape`:
    /// what a plan needs without reading any scale.
    public func matrixShape(_ logical: LogicalWeight) throws(WeightReadError) -> (rows: Int, cols: Int) {
        let t = logical.codes.tensor
        let path = checkpoint.files[logical.codes.file].path
        // Only a tensor with elements has dimensions that fit an Int and multiply without overflow (its bytes lie
        // in a file); an empty one may have a dimension of 2^64-1 and is no weight.
        guard t.elementCount > 0 else {
            throw WeightReadError(.notAMatrix, file: path, tensor: t.name, "shape \(formatShape(t.shape)) has no elements")
        }
        let shape = t.shape.map { Int($0) }
        switch logical.encoding {
        case .plain, .fp8Block:
            guard shape.count == 2 else { break }
            return (shape[0], shape[1])
        case .packedInt(_, _, let shapeTensor, let bits):
            guard shape.count == 2 else { break }
            return (shape[0], try packedColumns(t, perWord: 32 / bits, shapeTensor: shapeTensor))
        case .nvfp4, .mxfp4:
            guard shape.count == 2 else { break }
            return (shape[0], shape[1] * 2)
        case .gptOssMXFP4:
            guard shape.count == 4, shape[3] == 16 else { break }
            return (shape[1], shape[2] * 32)
        }
        throw WeightReadError(.notAMatrix, file: path, tensor: t.name, "shape \(formatShape(t.shape)) is not a matrix as its encoding stores one")
    }

    /// Groups per row of an FP4 weight's scale grid, checked: [rows, cols / per].
    func fp4Groups(_ scale: Checkpoint.Located, rows: Int, cols: Int, per: Int) throws(WeightReadError) -> Int {
        guard scale.tensor.shape == [UInt64(rows), UInt64((cols + per - 1) / per)] else {
            throw WeightReadError(.scaleGridMismatch, file: checkpoint.files[scale.file].path, tensor: scale.tensor.name,
                "scale shape \(formatShape(scale.tensor.shape)) is not [\(rows), \((cols + per - 1) / per)]: one scale per \(per) values of a [\(rows), \(cols)] weight")
        }
        return (cols + per - 1) / per
    }

    /// A small integer tensor (I32 or I64: a shape, packed zero points) as Ints.
    func integers(_ located: Checkpoint.Located) throws(WeightReadError) -> [Int] {
        let t = located.tensor
        guard t.dtype == .I32 || t.dtype == .I64 else {
            throw WeightReadError(.unsupportedLayout, file: checkpoint.files[located.file].path, tensor: t.name,
                                  "dtype \(t.dtype.rawValue), where I32 or I64 integers are expected")
        }
        return try bytes(located).withUnsafeBytes { data in
            (0..<Int(t.elementCount)).map { i in
                t.dtype == .I32 ? Int(Int32(littleEndian: data.loadUnaligned(fromByteOffset: i * 4, as: Int32.self)))
                    : Int(Int64(littleEndian: data.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)))
            }
        }
    }

    /// A small F32, BF16, F16 or F8_E8M0 tensor (a scale grid) as float32, in order.
    func floats(_ located: Checkpoint.Located) throws(WeightReadError) -> [Float] {
        let t = located.tensor
        let n = Int(t.elementCount)
        return try self.bytes(located).withUnsafeBytes { data in
            [Float](unsafeUninitializedCapacity: n) { out, count in
                switch t.dtype {
                case .F32: UnsafeMutableRawBufferPointer(out).copyMemory(from: UnsafeRawBufferPointer(rebasing: data[0..<(n * 4)]))
                case .BF16: moe_bf16_to_f32(data.baseAddress!, out.baseAddress!, n)
                case .F8_E8M0: for i in 0..<n { out[i] = FloatDecoding.e8m0Table[Int(data[i])] }
                default: for i in 0..<n { out[i] = FloatDecoding.f16(data.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) }
                }
                count = n
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

    /// Rows `range` (all by default), their bytes fetched now: a view of the map, or decompressed chunks. A
    /// layout's scales are the weight's own (an expert's sliced for it), so its decoder counts rows from the weight's.
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

extension CheckpointReader {
    /// The checkpoint's encoded weights (FP8 with a scale, compressed-tensors `_packed`, gpt-oss `_blocks`), in
    /// file order, and for each tensor that is their bookkeeping (a scale, zero point, shape or global scale) the
    /// weight it folds into.
    public func encodedWeights() throws(WeightReadError) -> (weights: [LogicalWeight], foldedInto: [String: String]) {
        var weights: [LogicalWeight] = []
        var folded: [String: String] = [:]
        for located in checkpoint.allTensors {
            let t = located.tensor
            let logical: LogicalWeight?
            if t.name.hasSuffix("_packed") {
                logical = try checkpoint.logicalWeight(String(t.name.dropLast("_packed".count)))
            } else if t.name.hasSuffix("_blocks") && t.dtype == .U8 {
                logical = try checkpoint.logicalWeight(String(t.name.dropLast("_blocks".count)))
            } else if t.dtype == .U8, let encoding = checkpoint.modelOptNVFP4(t) {
                logical = LogicalWeight(name: t.name, codes: located, encoding: encoding)
            } else if t.dtype.isFP8, case let encoding = try checkpoint.encoding(of: t, inFile: located.file), case .fp8Block = encoding {
                logical = LogicalWeight(name: t.name, codes: located, encoding: encoding)
            } else if t.dtype == .I8, case let encoding = try checkpoint.encoding(of: t, inFile: located.file), case .mxfp4 = encoding {
                logical = LogicalWeight(name: t.name, codes: located, encoding: encoding)  // DeepSeek-V4's FP4 experts
            } else {
                logical = nil
            }
            guard let logical, logical.codes.tensor.name == t.name else { continue }
            weights.append(logical)
            let bookkeeping: [Checkpoint.Located?]
            switch logical.encoding {
            case .plain: bookkeeping = []
            case .fp8Block(let scale, _): bookkeeping = [scale]
            case .packedInt(let scale, let zeroPoint, let shape, _): bookkeeping = [scale, zeroPoint, shape]
            case .nvfp4(let scale, let global, _): bookkeeping = [scale, global]
            case .mxfp4(let scale): bookkeeping = [scale]
            case .gptOssMXFP4(let scales): bookkeeping = [scales]
            }
            for b in bookkeeping.compactMap({ $0 }) { folded[b.tensor.name] = logical.name }
        }
        return (weights, folded)
    }
}
