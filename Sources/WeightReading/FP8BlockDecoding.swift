import CKernels
import Checkpoint
import NumberFormats
import SafetensorsFormat

/// FP8 codes (any FP8 dtype, each decoded as itself) times the scale of their block, DeepSeek-V3's format:
/// `value = float32(code) * scale[r / block.rows][c / block.cols]`, the product rounded once (to BF16 when
/// BF16 is asked for), as DeepSeek's `weight_dequant` and torch compute it.
public struct FP8BlockLayout: StoredLayout {
    public let dtype: Dtype
    public let cols: Int
    public let block: BlockShape
    /// The whole scale grid as float32, row-major: [ceil(rows / block.rows)][gridCols].
    public let scales: [Float]
    public let gridCols: Int
    /// float32 of each of the dtype's 256 codes.
    public let table: [Float]
    /// The dtype the product is rounded to as the producing library computes it: BF16 when the scales are BF16
    /// (compressed-tensors multiplies in the scale's dtype), else float32.
    public let roundTo: Dtype

    public init(dtype: Dtype, cols: Int, block: BlockShape, scales: [Float], roundTo: Dtype = .F32) {
        self.dtype = dtype
        self.cols = cols
        self.block = block
        self.scales = scales
        self.roundTo = roundTo
        gridCols = (cols + block.cols - 1) / block.cols
        table = dtype.fp8Table!
    }

    public var bytesPerRow: Int { cols }

    public func decoder(_ bytes: TensorBytes, firstRow: Int) -> any RowDecoder {
        FP8BlockRows(layout: self, bytes: bytes, firstRow: firstRow)
    }

    /// The scale of the block holding row `r`, column `c` of the weight.
    public func scale(row r: Int, column c: Int) -> Float { scales[(r / block.rows) * gridCols + c / block.cols] }
}

struct FP8BlockRows: RowDecoder {
    let layout: FP8BlockLayout
    let bytes: TensorBytes
    let firstRow: Int

    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        let codes = bytes.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + r * cols
        let block = layout.block
        let scaleRow = ((firstRow + r) / block.rows) * layout.gridCols
        layout.table.withUnsafeBufferPointer { table in
            var c0 = 0
            while c0 < cols {
                let n = min(block.cols, cols - c0)
                moe_decode_e4m3_to_f32(codes + c0, n, layout.scales[scaleRow + c0 / block.cols], table.baseAddress!, out + c0)
                c0 += n
            }
        }
        if layout.roundTo == .BF16 {
            for c in 0..<cols { out[c] = FloatDecoding.bf16(FloatEncoding.bf16(out[c])) }
        }
    }

    func decodeRowsBF16(_ rows: Range<Int>, cols: Int, into out: UnsafeMutablePointer<UInt16>) {
        let n = rows.count * cols
        let codes = UnsafeRawBufferPointer(rebasing: bytes.buffer[(rows.lowerBound * cols)..<(rows.upperBound * cols)])
        codes.withMemoryRebound(to: UInt8.self) { c in
            layout.scales.withUnsafeBufferPointer { sc in
                BlockQuantization.dequantizeToBF16(codes: c, scales: sc, rows: rows.count, cols: cols, firstRow: firstRow + rows.lowerBound,
                                                   block: (layout.block.rows, layout.block.cols), table: layout.table,
                                                   into: UnsafeMutableBufferPointer(start: out, count: n))
            }
        }
    }
}
