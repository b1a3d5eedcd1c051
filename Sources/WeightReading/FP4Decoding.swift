import CKernels
import NumberFormats
import SafetensorsFormat

/// FP4 E2M1 codes, two to a byte with element 2j in the **low** nibble of byte j: bit 3 the sign, bits 0-2 an
/// index into 0, 0.5, 1, 1.5, 2, 3, 4, 6 (OCP MX spec).
public enum FP4 {
    public static let e2m1: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    /// ModelOpt's table: code 8 (negative zero) is +0, so its products are +0 too.
    public static let e2m1PositiveZero: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6]
}

/// Which scale an FP4 group has, and how the product is rounded: each format as its defining library computes it.
public enum FP4Scaling: Sendable {
    /// NVFP4: F8_E4M3 scale per 16 and an F32 per-tensor scale (NVFP4Convention): `eff = f32(f32(scale) / global)`
    /// (compressed-tensors) or `f32(f32(scale) x scale_2)` (ModelOpt), `value = f32(e2m1 * eff)`.
    case nvfp4
    /// MX (compressed-tensors `mxfp4-pack-quantized`, gpt-oss): E8M0 scale per 32, `2^(byte - 127)` made in BF16;
    /// `value = bf16(e2m1 * scale)`.
    case mxfp4
}

/// FP4 rows with one scale per `groupSize` elements; the scales are turned into float32 multipliers once.
public struct FP4Layout: StoredLayout {
    public let cols: Int
    public let groupSize: Int
    public let groups: Int
    /// The multiplier of each (row, group), [rows][groups].
    public let multipliers: [Float]
    public let scaling: FP4Scaling
    /// The value of each code (FP4.e2m1, or ModelOpt's with +0 for code 8).
    public var levels: [Float] = FP4.e2m1

    public var bytesPerRow: Int { (cols + 1) / 2 }

    public func decoder(_ bytes: TensorBytes, firstRow: Int) -> any RowDecoder {
        FP4Rows(layout: self, bytes: bytes, firstRow: firstRow)
    }

    /// NVFP4's multipliers: `f32(f32(e4m3 scale) / global)` (compressed-tensors) or `f32(f32(e4m3 scale) x
    /// scale_2)` (ModelOpt).
    public static func nvfp4Multipliers(scaleCodes: [UInt8], global: Float, convention: NVFP4Convention) -> [Float] {
        let table = FloatDecoding.e4m3Table
        switch convention {
        case .divides: return scaleCodes.map { table[Int($0)] / global }
        case .multiplies: return scaleCodes.map { table[Int($0)] * global }
        }
    }

    /// MX multipliers: `2^(byte - 127)` (byte 255 is NaN).
    public static func mxMultipliers(scaleBytes: [UInt8]) -> [Float] {
        let table = FloatDecoding.e8m0Table
        return scaleBytes.map { table[Int($0)] }
    }
}

struct FP4Rows: RowDecoder {
    let layout: FP4Layout
    let bytes: TensorBytes
    let firstRow: Int

    /// `e2m1(code) * multiplier` through the table kernel; MX products are made in BF16 (exact unless they
    /// underflow), NVFP4's stay float32 (rounded to BF16 only for BF16 output).
    func kernel(_ rows: Range<Int>, cols: Int, f32: UnsafeMutablePointer<Float>?, bf16: UnsafeMutablePointer<UInt16>?) {
        let l = layout
        l.multipliers.withUnsafeBufferPointer { m in
            l.levels.withUnsafeBufferPointer { levels in
                moe_decode_nibbles(bytes.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + rows.lowerBound * l.bytesPerRow,
                                   rows.count, cols, l.bytesPerRow, levels.baseAddress!, nil,
                                   m.baseAddress! + (firstRow + rows.lowerBound) * l.groups, l.groups, l.groupSize,
                                   l.scaling == .mxfp4 ? 1 : 0, f32, bf16)
            }
        }
    }

    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        kernel(r..<(r + 1), cols: cols, f32: out, bf16: nil)
    }

    func decodeRowsBF16(_ rows: Range<Int>, cols: Int, into out: UnsafeMutablePointer<UInt16>) {
        kernel(rows, cols: cols, f32: nil, bf16: out)
    }
}
