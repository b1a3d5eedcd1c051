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

/// Reads weights from a checkpoint as float32, whatever they are stored as: F32, BF16, F16, or FP8
/// E4M3 with DeepSeek's 128x128 block scales (`<name>_scale_inv`, or compressed-tensors'
/// `<name>_scale`), dequantized exactly (float32(e4m3) x scale) block by block as they are read.
public struct WeightReader: Sendable {
    public let checkpoint: Checkpoint

    public init(_ checkpoint: Checkpoint) {
        self.checkpoint = checkpoint
    }

    public func has(_ name: String) -> Bool { checkpoint.locate(name) != nil }

    /// A 1-D or 2-D tensor, or one expert's slice of a 3-D fused tensor (`index`).
    public func matrix(_ name: String, index: Int? = nil) throws(ForwardError) -> Matrix {
        guard let located = checkpoint.locate(name) else { throw ForwardError("tensor \(name) not found in \(checkpoint.path)") }
        let file = checkpoint.file(located)
        guard !file.isCompressed else {
            throw ForwardError("\(file.path) is a compressed shard: run moetool decompress first")
        }
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
        let n = rows * cols
        let data = file.data(t)
        var values = [Float](repeating: 0, count: n)
        switch t.dtype {
        case .F32:
            for i in 0..<n { values[i] = Float(bitPattern: data.loadUnaligned(fromByteOffset: (first + i) * 4, as: UInt32.self)) }
        case .BF16:
            for i in 0..<n { values[i] = FloatDecoding.bf16(data.loadUnaligned(fromByteOffset: (first + i) * 2, as: UInt16.self)) }
        case .F16:
            FloatDecoding.f16Table.withUnsafeBufferPointer { table in
                for i in 0..<n { values[i] = table[Int(data.loadUnaligned(fromByteOffset: (first + i) * 2, as: UInt16.self))] }
            }
        case .F8_E4M3:
            guard index == nil, shape.count == 2 else { throw ForwardError("\(name): FP8 expert stacks are not supported") }
            let scaleName = [name + "_scale_inv", name + "_scale"].first { checkpoint.locate($0) != nil }
            guard let scaleName, let s = checkpoint.locate(scaleName) else {
                throw ForwardError("\(name) is FP8 but has no \(name)_scale_inv block scales")
            }
            let scales = try matrix(scaleName)
            let block = BlockQuantization.blockSize
            guard scales.rows == (rows + block - 1) / block, scales.cols == (cols + block - 1) / block else {
                throw ForwardError("\(scaleName) is \(scales.rows)x\(scales.cols); \(name) [\(rows),\(cols)] needs the 128x128 grid \((rows + block - 1) / block)x\((cols + block - 1) / block)")
            }
            _ = s
            FloatDecoding.e4m3Table.withUnsafeBufferPointer { table in
                for r in 0..<rows {
                    let scaleRow = (r / block) * scales.cols
                    for c in 0..<cols {
                        values[r * cols + c] = table[Int(data[r * cols + c])] * scales.values[scaleRow + c / block]
                    }
                }
            }
        default:
            throw ForwardError("\(name): dtype \(t.dtype.rawValue) cannot be read as weights")
        }
        return Matrix(rows: rows, cols: cols, values: values)
    }

    public func vector(_ name: String) throws(ForwardError) -> [Float] { try matrix(name).values }
}
