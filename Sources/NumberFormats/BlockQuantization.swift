import CKernels

/// Facts of DeepSeek-V3's FP8 block format, defined once.
public enum BlockQuantization {
    /// Weights are scaled in square blocks of this many rows and columns.
    public static let blockSize = 128
    /// Largest finite E4M3FN value.
    public static let e4m3Max: Float = 448
    /// `<module>.weight` is paired with `<module>.weight` + this suffix (an F32 dequantization multiplier).
    public static let scaleSuffix: StaticString = "_scale_inv"
    /// compressed-tensors' name for the same scale.
    public static let compressedTensorsScaleSuffix: StaticString = "_scale"

    /// Scale grid for a [rows, cols] weight: ceil(rows/block) x ceil(cols/block), for any dimension a
    /// header can hold (a zero-element [2^64-1, 0] weight included).
    public static func scaleShape(rows: UInt64, cols: UInt64, block: (UInt64, UInt64) = (128, 128)) -> [UInt64] {
        [rows / block.0 + (rows % block.0 == 0 ? 0 : 1), cols / block.1 + (cols % block.1 == 0 ? 0 : 1)]
    }
}

extension BlockQuantization {
    /// How block scales are stored.
    public enum ScaleFormat: String, Sendable, CaseIterable {
        /// `s = max(amax, 1e-4) / 448` as float32 (DeepSeek-V3).
        case float32
        /// `s` rounded up to a power of two (DeepSeek-V3.1 `scale_fmt: ue8m0`), still stored as float32.
        case ue8m0
    }

    /// Smallest block amax used for the scale, so an all-zero block gets a finite scale.
    public static let minimumAmax: Float = 1e-4

    /// A block-quantized weight: `codes` [rows, cols] E4M3 row-major and `scales`
    /// [ceil(rows/B), ceil(cols/B)] row-major, the dequantization multipliers.
    public struct Quantized: Sendable, Equatable {
        public var codes: [UInt8]
        public var scales: [Float]
        /// NaN or infinite inputs seen (their blocks become NaN when allowed).
        public var nonFinite: Int

        public init(codes: [UInt8], scales: [Float], nonFinite: Int) {
            self.codes = codes
            self.scales = scales
            self.nonFinite = nonFinite
        }
    }

    /// The scale of a block with absolute maximum `amax`.
    @inline(__always)
    public static func scale(amax: Float, format: ScaleFormat) -> Float {
        let s = max(amax, minimumAmax) / e4m3Max
        guard format == .ue8m0 else { return s }
        // Round up to a power of two: bump the exponent when any mantissa bit is set.
        let bits = s.bitPattern
        let rounded = bits & 0x7F_FFFF == 0 ? bits : ((bits & 0xFF80_0000) &+ 0x0080_0000)
        return Float(bitPattern: rounded)
    }

    /// Quantizes a [rows, cols] float32 matrix in `block`x`block` blocks from (0,0);
    /// edge blocks are partial. Per block: amax over its real elements,
    /// `s = max(amax, 1e-4) / 448`, each element `E4M3_RNE(x / s)` saturating at ±448.
    /// A block holding NaN or ±Inf gets a NaN scale and NaN codes (callers refuse
    /// such input unless asked to let it through; `nonFinite` counts the elements).
    public static func quantize(_ values: UnsafeBufferPointer<Float>, rows: Int, cols: Int,
                                block: Int = blockSize, format: ScaleFormat = .float32) -> Quantized {
        let gridRows = (rows + block - 1) / block
        let gridCols = (cols + block - 1) / block
        var scales = [Float](repeating: 0, count: gridRows * gridCols)
        var nonFinite = 0
        let codes = [UInt8](unsafeUninitializedCapacity: rows * cols) { out, count in
            scales.withUnsafeMutableBufferPointer { sc in
                nonFinite = quantize(values, rows: rows, cols: cols, block: block, format: format, codes: out, scales: sc)
            }
            count = rows * cols
        }
        return Quantized(codes: codes, scales: scales, nonFinite: nonFinite)
    }

    /// The same, writing every one of the rows x cols codes into `codes` and the block grid's
    /// scales into `scales`; returns the count of non-finite values.
    public static func quantize(_ values: UnsafeBufferPointer<Float>, rows: Int, cols: Int, block: Int = blockSize,
                                format: ScaleFormat = .float32, codes out: UnsafeMutableBufferPointer<UInt8>,
                                scales: UnsafeMutableBufferPointer<Float>) -> Int {
        precondition(values.count == rows * cols, "values must hold rows x cols elements")
        guard let base = values.baseAddress else { return 0 }
        return quantize(.f32(base), rows: rows, cols: cols, block: block, format: format, codes: out, scales: scales)
    }

    /// Where the rows x cols values to quantize are (row-major, contiguous).
    public enum Values {
        case f32(UnsafePointer<Float>)
        /// BF16 values read in place (any alignment): the same results as converting them to float32 first.
        case bf16(UnsafeRawPointer)
    }

    /// Quantizes rows x cols values block by block into `codes` and the block grid's `scales`;
    /// returns the count of non-finite values.
    public static func quantize(_ values: Values, rows: Int, cols: Int, block: Int = blockSize,
                                format: ScaleFormat = .float32, codes out: UnsafeMutableBufferPointer<UInt8>,
                                scales: UnsafeMutableBufferPointer<Float>) -> Int {
        let gridRows = (rows + block - 1) / block
        let gridCols = (cols + block - 1) / block
        precondition(out.count >= rows * cols && scales.count >= gridRows * gridCols, "output buffers too small")
        var nonFinite = 0
        var amaxBits = [UInt16](repeating: 0, count: gridCols)
        var bad = [Int](repeating: 0, count: gridCols)
        for br in 0..<gridRows {
            let r0 = br * block
            let r1 = min(rows, r0 + block)
            let rowScales = UnsafeMutableBufferPointer(rebasing: scales[(br * gridCols)..<((br + 1) * gridCols)])
            switch values {
            case .f32(let p):
                for bc in 0..<gridCols {
                    let first = r0 * cols + bc * block
                    let width = min(cols, (bc + 1) * block) - bc * block
                    bad[bc] = 0
                    let amax = moe_block_amax(p + first, r1 - r0, width, cols, &bad[bc])
                    rowScales[bc] = scale(amax: amax, format: format)
                    moe_block_encode_e4m3(p + first, r1 - r0, width, cols, rowScales[bc], out.baseAddress! + first, cols)
                }
            case .bf16(let p):
                let band = p + 2 * r0 * cols
                moe_band_amax_bf16(band, r1 - r0, cols, cols, block, &amaxBits, &bad)
                for bc in 0..<gridCols {
                    rowScales[bc] = scale(amax: Float(bitPattern: UInt32(amaxBits[bc]) << 16), format: format)
                }
                moe_band_encode_e4m3_bf16(band, r1 - r0, cols, cols, block, rowScales.baseAddress!, out.baseAddress! + r0 * cols, cols)
            }
            // A block holding NaN or infinities gets a NaN scale and NaN codes.
            for bc in 0..<gridCols where bad[bc] > 0 {
                nonFinite += bad[bc]
                rowScales[bc] = .nan
                for r in r0..<r1 { for c in (bc * block)..<min(cols, (bc + 1) * block) { out[r * cols + c] = 0x7F } }
            }
        }
        return nonFinite
    }

    /// Dequantizes to BF16: `bf16_RNE(float32(fp8(q)) * s)` for each element, `fp8` given by `table`
    /// (E4M3FN unless told; E5M2 and the FNUZ variants decode as themselves).
    public static func dequantizeToBF16(codes: UnsafeBufferPointer<UInt8>, scales: UnsafeBufferPointer<Float>,
                                        rows: Int, cols: Int, block: Int = blockSize) -> [UInt16] {
        [UInt16](unsafeUninitializedCapacity: rows * cols) { dst, count in
            dequantizeToBF16(codes: codes, scales: scales, rows: rows, cols: cols, block: (block, block), into: dst)
            count = rows * cols
        }
    }

    /// Dequantizes rows x cols codes into `dst` (rows x cols elements). The codes are rows
    /// `firstRow ..< firstRow + rows` of a weight whose whole scale grid (blocks of `block.rows` x
    /// `block.cols`, row-major) is `scales`: a band may start anywhere, not only on a block boundary.
    public static func dequantizeToBF16(codes: UnsafeBufferPointer<UInt8>, scales: UnsafeBufferPointer<Float>,
                                        rows: Int, cols: Int, firstRow: Int = 0,
                                        block: (rows: Int, cols: Int) = (blockSize, blockSize),
                                        table: [Float] = FloatDecoding.e4m3Table,
                                        into dst: UnsafeMutableBufferPointer<UInt16>) {
        precondition(codes.count == rows * cols, "codes must hold rows x cols elements")
        precondition(dst.count >= rows * cols, "the destination must hold rows x cols elements")
        precondition(table.count == 256, "an FP8 table has 256 entries")
        guard rows > 0, cols > 0 else { return }
        let gridCols = (cols + block.cols - 1) / block.cols
        let lastBlockRow = (firstRow + rows - 1) / block.rows
        precondition(scales.count >= (lastBlockRow + 1) * gridCols, "scales must cover the block grid")
        let lut = UnsafeMutablePointer<UInt16>.allocate(capacity: 256 * gridCols)
        defer { lut.deallocate() }
        table.withUnsafeBufferPointer { table in
            // One kernel call per run of rows that share a block row (and so a row of scales).
            var r = firstRow
            while r < firstRow + rows {
                let blockRow = r / block.rows
                let end = min(firstRow + rows, (blockRow + 1) * block.rows)
                moe_decode_band_e4m3_to_bf16(codes.baseAddress! + (r - firstRow) * cols, end - r, cols, cols, block.cols,
                                             scales.baseAddress! + blockRow * gridCols, table.baseAddress!, lut,
                                             dst.baseAddress! + (r - firstRow) * cols, cols)
                r = end
            }
        }
    }
}
