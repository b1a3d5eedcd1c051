import CKernels
import NumberFormats
import SafetensorsFormat

/// Turns stored rows of one weight into float32 (and BF16): one conformance per encoding, each in its
/// own file (PlainDecoding.swift, FP8BlockDecoding.swift). A decoder is made for a run of rows whose
/// bytes it holds; row 0 is the first of them.
public protocol RowDecoder: Sendable {
    /// Row `r` of this run as `cols` float32 values at `out`.
    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>)

    /// Rows `rows` of this run as BF16, `bf16_RNE(value)` for each float32 value `decodeRow` gives;
    /// an encoding overrides it when it has a faster path to the same bits.
    func decodeRowsBF16(_ rows: Range<Int>, cols: Int, into out: UnsafeMutablePointer<UInt16>)
}

extension RowDecoder {
    public func decodeRowsBF16(_ rows: Range<Int>, cols: Int, into out: UnsafeMutablePointer<UInt16>) {
        let row = UnsafeMutablePointer<Float>.allocate(capacity: max(cols, 1))
        defer { row.deallocate() }
        for (i, r) in rows.enumerated() {
            decodeRow(r, cols: cols, into: row)
            for c in 0..<cols { out[i * cols + c] = FloatEncoding.bf16(row[c]) }
        }
    }
}

/// One weight's layout as stored, enough to fetch any run of its rows and decode them.
public protocol StoredLayout: Sendable {
    /// Stored bytes per row of the weight (rows are stored one after another).
    var bytesPerRow: Int { get }
    /// A decoder for rows `firstRow...` whose bytes start at `bytes`.
    func decoder(_ bytes: TensorBytes, firstRow: Int) -> any RowDecoder
}

/// Another layout's rows, each value rounded to the dtype the model computes in: the last step of every
/// dequantization (compressed-tensors, transformers and DeepSeek's code all hand the model weights in its dtype).
public struct RoundedLayout: StoredLayout {
    public let inner: any StoredLayout
    public let dtype: Dtype

    public var bytesPerRow: Int { inner.bytesPerRow }

    public func decoder(_ bytes: TensorBytes, firstRow: Int) -> any RowDecoder {
        RoundedRows(inner: inner.decoder(bytes, firstRow: firstRow), dtype: dtype)
    }
}

struct RoundedRows: RowDecoder {
    let inner: any RowDecoder
    let dtype: Dtype

    func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) {
        inner.decodeRow(r, cols: cols, into: out)
        for c in 0..<cols { out[c] = PackedIntLayout.rounded(out[c], to: dtype) }
    }

    /// BF16 of a value already rounded to BF16 is itself: the inner layout's (faster) path gives the same bits.
    func decodeRowsBF16(_ rows: Range<Int>, cols: Int, into out: UnsafeMutablePointer<UInt16>) {
        if dtype == .BF16 { return inner.decodeRowsBF16(rows, cols: cols, into: out) }
        let row = UnsafeMutablePointer<Float>.allocate(capacity: max(cols, 1))
        defer { row.deallocate() }
        for (i, r) in rows.enumerated() {
            decodeRow(r, cols: cols, into: row)
            for c in 0..<cols { out[i * cols + c] = FloatEncoding.bf16(row[c]) }
        }
    }
}
