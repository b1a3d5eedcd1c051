import CKernels
import NumberFormats
import SafetensorsFormat

/// Weights stored as their own values: F32, BF16 and F16 (read exactly; BF16 and F16 widen to float32
/// without rounding).
public struct PlainLayout: StoredLayout {
    public let dtype: Dtype
    public let cols: Int

    /// The dtypes read as values.
    public static let dtypes: Set<Dtype> = [.F32, .BF16, .F16]

    public var bytesPerRow: Int { cols * dtype.bits / 8 }

    public func decoder(_ bytes: TensorBytes, firstRow: Int) -> any RowDecoder {
        PlainRows(bytes: bytes, dtype: dtype, cols: cols)
    }
}

struct PlainRows: RowDecoder {
    let bytes: TensorBytes
    let dtype: Dtype
    let cols: Int

    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        let data = bytes.buffer
        let start = r * cols
        switch dtype {
        case .F32:
            UnsafeMutableRawPointer(out).copyMemory(from: data.baseAddress! + start * 4, byteCount: cols * 4)
        case .BF16:
            moe_bf16_to_f32(data.baseAddress! + start * 2, out, cols)
        case .F16:
            FloatDecoding.f16Table.withUnsafeBufferPointer { table in
                for c in 0..<cols { out[c] = table[Int(data.loadUnaligned(fromByteOffset: (start + c) * 2, as: UInt16.self))] }
            }
        default:
            preconditionFailure("PlainLayout is made for F32, BF16 and F16 only")
        }
    }
}
