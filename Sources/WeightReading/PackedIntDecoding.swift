import CKernels
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
    /// Zero points, [rows][groups] (empty when symmetric), as floats for the kernel.
    public let zeroPoints: [Float]
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

    /// The levels of a 4-bit field: q = field - 8.
    static let int4Levels: [Float] = (0..<16).map { Float($0 - 8) }

    /// 4-bit rows with BF16 or F32 scales go through the table kernel (the same float32 operations); 8-bit
    /// fields and F16 scales (rounded in half precision) through the scalar rule below.
    var usesKernel: Bool { layout.bits == 4 && layout.scaleDtype != .F16 }

    func kernel(_ rows: Range<Int>, cols: Int, f32: UnsafeMutablePointer<Float>?, bf16: UnsafeMutablePointer<UInt16>?) {
        let l = layout
        let at = (firstRow + rows.lowerBound) * l.groups
        l.scales.withUnsafeBufferPointer { scales in
            l.zeroPoints.withUnsafeBufferPointer { zp in
                PackedIntRows.int4Levels.withUnsafeBufferPointer { levels in
                    moe_decode_nibbles(bytes.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + rows.lowerBound * l.bytesPerRow,
                                       rows.count, cols, l.bytesPerRow, levels.baseAddress!,
                                       zp.isEmpty ? nil : zp.baseAddress! + at, scales.baseAddress! + at, l.groups, l.groupSize,
                                       l.scaleDtype == .BF16 ? 1 : 0, f32, bf16)
                }
            }
        }
    }

    func decodeRowsBF16(_ rows: Range<Int>, cols: Int, into out: UnsafeMutablePointer<UInt16>) {
        guard usesKernel else {
            let row = UnsafeMutablePointer<Float>.allocate(capacity: max(cols, 1))
            defer { row.deallocate() }
            for (i, r) in rows.enumerated() {
                decodeRow(r, cols: cols, into: row)
                for c in 0..<cols { out[i * cols + c] = FloatEncoding.bf16(row[c]) }
            }
            return
        }
        kernel(rows, cols: cols, f32: nil, bf16: out)
    }

    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        if usesKernel { return kernel(r..<(r + 1), cols: cols, f32: out, bf16: nil) }
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
            let zp = l.zeroPoints.isEmpty ? 0 : l.zeroPoints[row * l.groups + g]
            out[j] = PackedIntLayout.rounded((Float(q) - zp) * l.scales[row * l.groups + g], to: l.scaleDtype)
        }
    }
}
