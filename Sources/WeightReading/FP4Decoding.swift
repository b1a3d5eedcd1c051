import NumberFormats
import SafetensorsFormat

/// FP4 E2M1 codes, two to a byte with element 2j in the **low** nibble of byte j: bit 3 the sign, bits 0-2 an
/// index into 0, 0.5, 1, 1.5, 2, 3, 4, 6 (OCP MX spec).
public enum FP4 {
    public static let e2m1: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    /// Both elements of each byte: [byte * 2] low nibble, [byte * 2 + 1] high nibble.
    static let pairs: [Float] = (0..<256).flatMap { [e2m1[$0 & 0xF], e2m1[$0 >> 4]] }
}

/// Which scale an FP4 group has, and how the product is rounded: each format as its defining library computes it.
public enum FP4Scaling: Sendable {
    /// compressed-tensors `nvfp4-pack-quantized`: F8_E4M3 scale per 16, F32 global scale that **divides**:
    /// `eff = f32(f32(scale) / global)`, `value = f32(e2m1 * eff)`.
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

    public var bytesPerRow: Int { (cols + 1) / 2 }

    public func decoder(_ bytes: TensorBytes, firstRow: Int) -> any RowDecoder {
        FP4Rows(layout: self, bytes: bytes, firstRow: firstRow)
    }

    /// NVFP4's multipliers: `f32(f32(e4m3 scale) / global)`.
    public static func nvfp4Multipliers(scaleCodes: [UInt8], global: Float) -> [Float] {
        let table = FloatDecoding.e4m3Table
        return scaleCodes.map { table[Int($0)] / global }
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

    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        let l = layout
        let row = (firstRow + r) * l.groups
        let data = bytes.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + r * l.bytesPerRow
        FP4.pairs.withUnsafeBufferPointer { pairs in
            for j in 0..<cols {
                let v = pairs[Int(data[j >> 1]) * 2 + (j & 1)] * l.multipliers[row + j / l.groupSize]
                // MX products are made in BF16 (exact unless they underflow); NVFP4's stay float32.
                out[j] = l.scaling == .mxfp4 ? FloatDecoding.bf16(FloatEncoding.bf16(v)) : v
            }
        }
    }
}
