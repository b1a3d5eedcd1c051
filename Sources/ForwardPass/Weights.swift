import CKernels
import Checkpoint
import NumberFormats
import SafetensorsFormat

public struct ForwardError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A row-major float32 matrix.
public struct Matrix: Sendable {
    public let rows: Int
    public let cols: Int
    public var values: [Float]

    public init(rows: Int, cols: Int, values: [Float]) {
        precondition(values.count == rows * cols)
        self.rows = rows
        self.cols = cols
        self.values = values
    }
}

/// A Linear layer's weight (out x in), read a row at a time as float32: straight from the memory
/// map for F32, BF16, F16 and FP8 (with its block scales), so a 2048x7168 expert never exists as a
/// float32 matrix.
public struct Weight: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    enum Storage {
        case dense([Float])
        case mapped(data: UnsafeRawBufferPointer, first: Int, dtype: Dtype, scales: BlockScales?)
    }

    /// An FP8 weight's whole scale grid; this weight's row 0 is row `firstRow` of the grid's weight.
    struct BlockScales {
        let values: [Float]
        let gridCols: Int
        let block: BlockShape
        let firstRow: Int
        /// float32 of each FP8 code of the weight's dtype.
        let table: [Float]
    }
    let storage: Storage
    /// The tensor it came from, for error messages.
    public var name: String = "weight"
    /// Keeps the file (and so its map) alive while rows are read.
    let owner: SafetensorsFile?
    /// Where the bytes sit in that file.
    let fileRange: Range<UInt64>?

    public init(_ m: Matrix) {
        rows = m.rows
        cols = m.cols
        storage = .dense(m.values)
        owner = nil
        fileRange = nil
    }

    init(rows: Int, cols: Int, storage: Storage, owner: SafetensorsFile?, fileRange: Range<UInt64>?) {
        self.rows = rows
        self.cols = cols
        self.storage = storage
        self.owner = owner
        self.fileRange = fileRange
    }

    /// Rows `range` of this weight, read from the same place (no copy): the gate and up halves of a
    /// fused gate_up projection.
    public func rows(_ range: Range<Int>) -> Weight {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of \(rows)")
        var part: Weight
        switch storage {
        case .dense(let v):
            part = Weight(Matrix(rows: range.count, cols: cols, values: Array(v[(range.lowerBound * cols)..<(range.upperBound * cols)])))
        case .mapped(let data, let first, let dtype, let scales):
            let bytesPerRow = UInt64(cols * dtype.bits / 8)
            let lo = fileRange.map { $0.lowerBound + UInt64(range.lowerBound) * bytesPerRow }
            let rowScales = scales.map {
                BlockScales(values: $0.values, gridCols: $0.gridCols, block: $0.block, firstRow: $0.firstRow + range.lowerBound, table: $0.table)
            }
            part = Weight(rows: range.count, cols: cols,
                          storage: .mapped(data: data, first: first + range.lowerBound * cols, dtype: dtype, scales: rowScales),
                          owner: owner, fileRange: lo.map { $0..<($0 + UInt64(range.count) * bytesPerRow) })
        }
        part.name = "\(name)[rows \(range.lowerBound)..<\(range.upperBound)]"
        return part
    }

    /// Lets the kernel drop the mapped pages of this weight (done with it), so that running a
    /// layer of hundreds of experts keeps memory at one expert's worth.
    public func release() {
        if let owner, let fileRange { owner.mapping.adviseDone(fileRange) }
    }

    /// Row `r` as float32 into `out` (cols floats).
    func decodeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case .dense(let v):
            v.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + r * cols, count: cols) }
        case .mapped(let data, let first, let dtype, let scales):
            let start = first + r * cols
            switch dtype {
            case .F32:
                UnsafeMutableRawPointer(out).copyMemory(from: data.baseAddress! + start * 4, byteCount: cols * 4)
            case .BF16:
                moe_bf16_to_f32(data.baseAddress! + start * 2, out, cols)
            case .F16:
                FloatDecoding.f16Table.withUnsafeBufferPointer { table in
                    for c in 0..<cols { out[c] = table[Int(data.loadUnaligned(fromByteOffset: (start + c) * 2, as: UInt16.self))] }
                }
            default:  // FP8 with block scales
                let s = scales!
                let scaleRow = ((s.firstRow + r) / s.block.rows) * s.gridCols
                s.table.withUnsafeBufferPointer { table in
                    var c0 = 0
                    while c0 < cols {
                        let n = min(s.block.cols, cols - c0)
                        moe_decode_e4m3_to_f32(data.baseAddress!.assumingMemoryBound(to: UInt8.self) + start + c0, n,
                                               s.values[scaleRow + c0 / s.block.cols], table.baseAddress!, out + c0)
                        c0 += n
                    }
                }
            }
        }
    }
}

/// Reads weights from a checkpoint as float32, whatever they are stored as: F32, BF16, F16, or FP8
/// E4M3 with DeepSeek's 128x128 block scales (`<name>_scale_inv`, or compressed-tensors'
/// `<name>_scale`), dequantized exactly (float32(e4m3) x scale) block by block as they are read.
public struct WeightReader: Sendable {
    public let checkpoint: Checkpoint

    public init(_ checkpoint: Checkpoint) {
        self.checkpoint = checkpoint
    }

    public func has(_ name: String) -> Bool { checkpoint.locate(name) != nil }

    /// A 1-D or 2-D tensor, or one expert's slice of a 3-D fused tensor (`index`), as float32.
    public func matrix(_ name: String, index: Int? = nil) throws(ForwardError) -> Matrix {
        let w = try weight(name, index: index)
        let values = [Float](unsafeUninitializedCapacity: w.rows * w.cols) { out, count in
            for r in 0..<w.rows { w.decodeRow(r, into: out.baseAddress! + r * w.cols) }
            count = w.rows * w.cols
        }
        return Matrix(rows: w.rows, cols: w.cols, values: values)
    }

    public func vector(_ name: String) throws(ForwardError) -> [Float] { try matrix(name).values }

    /// A Linear weight (or a 1-D tensor as one row) read row by row from the map, or one expert's
    /// slice of a fused stack.
    public func weight(_ name: String, index: Int? = nil) throws(ForwardError) -> Weight {
        guard let located = checkpoint.locate(name) else { throw ForwardError("tensor \(name) not found in \(checkpoint.path)") }
        let file = checkpoint.file(located)
        guard !file.isCompressed else { throw ForwardError("\(file.path) is a compressed shard: run moetool decompress first") }
        let t = located.tensor
        // Every dimension of a tensor with elements fits an Int (its bytes lie in a mapped file); an empty
        // tensor may have a dimension of 2^64-1 and is no weight.
        guard t.elementCount > 0 else { throw ForwardError("\(name): shape \(formatShape(t.shape)) has no elements") }
        let shape = t.shape.map { Int($0) }
        var rows: Int, cols: Int, first = 0
        switch (shape.count, index) {
        case (1, nil): (rows, cols) = (1, shape[0])
        case (2, nil): (rows, cols) = (shape[0], shape[1])
        case (3, let e?):
            guard e < shape[0] else { throw ForwardError("\(name): expert \(e) of \(shape[0])") }
            (rows, cols) = (shape[1], shape[2])
            first = e * rows * cols
        default:
            throw ForwardError("\(name): shape \(shape) is not a matrix\(index == nil ? "" : " stack")")
        }
        var scales: Weight.BlockScales? = nil
        switch t.dtype {
        case .F32, .BF16, .F16:
            break
        case let fp8 where fp8.isFP8:
            guard index == nil else { throw ForwardError("\(name): FP8 expert stacks are not supported") }
            let encoding: WeightEncoding
            do throws(WeightEncodingError) {
                encoding = try checkpoint.encoding(of: t, inFile: located.file)
            } catch {
                throw ForwardError(error.description)
            }
            guard case .fp8Block(let scale, let block) = encoding else {
                throw ForwardError("\(name) is FP8 but has no \(name)_scale_inv block scales")
            }
            let s = try matrix(scale.tensor.name)
            scales = Weight.BlockScales(values: s.values, gridCols: s.cols, block: block, firstRow: 0, table: fp8.fp8Table!)
        default:
            throw ForwardError("\(name): dtype \(t.dtype.rawValue) cannot be read as weights")
        }
        let bytes = UInt64(rows * cols * t.dtype.bits / 8)
        let start = file.fileRange(t).lowerBound + UInt64(first * t.dtype.bits / 8)
        var w = Weight(rows: rows, cols: cols, storage: .mapped(data: file.data(t), first: first, dtype: t.dtype, scales: scales),
                       owner: file, fileRange: start..<(start + bytes))
        w.name = index.map { "\(name)[\($0)]" } ?? name
        return w
    }
}
