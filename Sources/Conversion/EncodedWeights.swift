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

    init(_ reader: CheckpointReader) throws(WeightReadError) {
        let (weights, folded) = try reader.encodedWeights()
        foldedInto = folded
        for logical in weights {
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
