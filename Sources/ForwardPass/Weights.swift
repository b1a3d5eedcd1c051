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
        case mapped(data: UnsafeRawBufferPointer, first: Int, dtype: Dtype, scales: Matrix?)
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
            precondition(scales == nil || range.lowerBound % BlockQuantization.blockSize == 0, "FP8 rows start on a block")
            let bytesPerRow = UInt64(cols * dtype.bits / 8)
            let lo = fileRange.map { $0.lowerBound + UInt64(range.lowerBound) * bytesPerRow }
            let rowScales = scales.map { s in
                Matrix(rows: (range.count + BlockQuantization.blockSize - 1) / BlockQuantization.blockSize, cols: s.cols,
                       values: Array(s.values[(range.lowerBound / BlockQuantization.blockSize * s.cols)...]
                                        .prefix((range.count + BlockQuantization.blockSize - 1) / BlockQuantization.blockSize * s.cols)))
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
            default:  // F8_E4M3 with 128x128 block scales
                let block = BlockQuantization.blockSize
                let s = scales!
                FloatDecoding.e4m3Table.withUnsafeBufferPointer { table in
                    var c0 = 0
                    while c0 < cols {
                        let n = min(block, cols - c0)
                        moe_decode_e4m3_to_f32(data.baseAddress!.assumingMemoryBound(to: UInt8.self) + start + c0, n,
                                               s.values[(r / block) * s.cols + c0 / block], table.baseAddress!, out + c0)
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
        let shape = t.shape.map(Int.init)
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
        var scales: Matrix? = nil
        switch t.dtype {
        case .F32, .BF16, .F16:
            break
        case .F8_E4M3:
            guard index == nil else { throw ForwardError("\(name): FP8 expert stacks are not supported") }
            let scaleName = [name + "_scale_inv", name + "_scale"].first { checkpoint.locate($0) != nil }
            guard let scaleName else { throw ForwardError("\(name) is FP8 but has no \(name)_scale_inv block scales") }
            let s = try matrix(scaleName)
            let block = BlockQuantization.blockSize
            guard s.rows == (rows + block - 1) / block, s.cols == (cols + block - 1) / block else {
                throw ForwardError("\(scaleName) is \(s.rows)x\(s.cols); \(name) [\(rows),\(cols)] needs the 128x128 grid \((rows + block - 1) / block)x\((cols + block - 1) / block)")
            }
            scales = s
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
