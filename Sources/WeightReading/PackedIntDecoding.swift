import NumberFormats
import SafetensorsFormat

/// compressed-tensors' `pack-quantized` integers (W4A16, W8A16): row r's element j is the (bits)-bit field
/// `j % perWord` of I32 word `[r, j / perWord]` (little-endian words, low field first), stored offset binary
/// (`q = field - 2^(bits-1)`); the zero point of (row r, group g), when asymmetric, is packed the same way but
/// along the rows (field `r % perWord` of word `[r / perWord, g]`). The value, as compressed-tensors computes it
/// in the scale's dtype: `(q - zp) * scale[r][j / groupSize]`, rounded once to that dtype.
public struct PackedIntLayout: StoredLayout {
    public let cols: Int
    public let bits: Int
    public let wordsPerRow: Int
    public let groupSize: Int
    /// Groups per row (scale columns).
    public let groups: Int
    /// Scales as float32, [rows][groups].
    public let scales: [Float]
    /// Zero points, [rows][groups] (empty when symmetric).
    public let zeroPoints: [Int8]
    /// The scale's dtype, in which the product is rounded (F32, BF16 or F16).
    public let scaleDtype: Dtype

    public var bytesPerRow: Int { wordsPerRow * 4 }
    var perWord: Int { 32 / bits }

    public func decoder(_ bytes: TensorBytes, firstRow: Int) -> any RowDecoder {
        PackedIntRows(layout: self, bytes: bytes, firstRow: firstRow)
    }

    /// The product rounded as the scale's dtype rounds it.
    @inline(__always)
    static func rounded(_ x: Float, to dtype: Dtype) -> Float {
        switch dtype {
        case .BF16: return FloatDecoding.bf16(FloatEncoding.bf16(x))
        case .F16: return Float(Float16(x))
        default: return x
        }
    }
}

struct PackedIntRows: RowDecoder {
    let layout: PackedIntLayout
    let bytes: TensorBytes
    let firstRow: Int

    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        let l = layout
        let row = firstRow + r
        let offset = 1 << (l.bits - 1)
        let mask = UInt32((1 << l.bits) - 1)
        let data = bytes.buffer
        let wordBase = r * l.wordsPerRow * 4
        for j in 0..<cols {
            let word = data.loadUnaligned(fromByteOffset: wordBase + (j / l.perWord) * 4, as: UInt32.self).littleEndian
            let q = Int((word >> UInt32((j % l.perWord) * l.bits)) & mask) - offset
            let g = j / l.groupSize
            let zp = l.zeroPoints.isEmpty ? 0 : Int(l.zeroPoints[row * l.groups + g])
            out[j] = PackedIntLayout.rounded(Float(q - zp) * l.scales[row * l.groups + g], to: l.scaleDtype)
        }
    }
}
