import Checkpoint
import SafetensorsFormat
import WeightReading

/// The encoded weights of a checkpoint, as a conversion to BF16 sees them: each by the tensor holding its
/// codes, with the shape its BF16 output takes; and the bookkeeping tensors (scales, zero points, shapes, global
/// scales) that fold into them.
struct EncodedWeights {
    struct Entry {
        let logical: LogicalWeight
        /// The BF16 tensor written: [rows, cols], or for a fused expert stack the parameter as transformers holds
        /// it, [experts, cols, rows] (each expert's rows transposed).
        let outputShape: [UInt64]
        let experts: Int?
    }

    var byCodes: [String: Entry] = [:]
    /// Bookkeeping tensor -> the weight it belongs to.
    var foldedInto: [String: String] = [:]

    /// None (a conversion that decodes nothing).
    init() {}

    /// `keepingFP8Blocks`: leave FP8 block weights out (a conversion to FP8 keeps them as they are).
    init(_ reader: CheckpointReader, keepingFP8Blocks: Bool = false) throws(WeightReadError) {
        let (weights, folded) = try reader.encodedWeights()
        let kept = Set(weights.filter { w in if keepingFP8Blocks, case .fp8Block = w.encoding { return true }; return false }.map(\.name))
        foldedInto = folded.filter { !kept.contains($0.value) }
        for logical in weights where !kept.contains(logical.name) {
            let t = logical.codes.tensor
            // Shapes from the headers (and a weight_shape): no scale is read to make the plan.
            let (rows, cols) = try reader.matrixShape(logical)
            if case .gptOssMXFP4 = logical.encoding {
                byCodes[t.name] = Entry(logical: logical, outputShape: [t.shape[0], UInt64(cols), UInt64(rows)], experts: Int(t.shape[0]))
            } else {
                byCodes[t.name] = Entry(logical: logical, outputShape: [UInt64(rows), UInt64(cols)], experts: nil)
            }
        }
    }
}
