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
        let checkpoint = reader.checkpoint
        for located in checkpoint.allTensors {
            let t = located.tensor
            let logical: LogicalWeight?
            if t.name.hasSuffix("_packed") {
                logical = try checkpoint.logicalWeight(String(t.name.dropLast("_packed".count)))
            } else if t.name.hasSuffix("_blocks") && t.dtype == .U8 {
                logical = try checkpoint.logicalWeight(String(t.name.dropLast("_blocks".count)))
            } else if t.dtype.isFP8, case .fp8Block = try checkpoint.encoding(of: t, inFile: located.file) {
                logical = LogicalWeight(name: t.name, codes: located, encoding: try checkpoint.encoding(of: t, inFile: located.file))
            } else {
                logical = nil
            }
            guard let logical, logical.codes.tensor.name == t.name else { continue }
            let folded: [Checkpoint.Located?]
            var experts: Int? = nil
            let shape: [UInt64]
            switch logical.encoding {
            case .plain:
                continue
            case .fp8Block(let scale, _):
                folded = [scale]
                shape = t.shape
            // Shapes from the headers (and a weight_shape): no scale is read to make the plan.
            case .packedInt(let scale, let zeroPoint, let shapeTensor, _):
                folded = [scale, zeroPoint, shapeTensor]
                let (rows, cols) = try reader.matrixShape(logical)
                shape = [UInt64(rows), UInt64(cols)]
            case .nvfp4(let scale, let global):
                folded = [scale, global]
                let (rows, cols) = try reader.matrixShape(logical)
                shape = [UInt64(rows), UInt64(cols)]
            case .mxfp4(let scale):
                folded = [scale]
                let (rows, cols) = try reader.matrixShape(logical)
                shape = [UInt64(rows), UInt64(cols)]
            case .gptOssMXFP4(let scales):
                folded = [scales]
                experts = Int(t.shape[0])
                let (rows, cols) = try reader.matrixShape(logical)
                shape = [t.shape[0], UInt64(cols), UInt64(rows)]
            }
            byCodes[t.name] = Entry(logical: logical, outputShape: shape, experts: experts)
            for f in folded.compactMap({ $0 }) { foldedInto[f.tensor.name] = logical.name }
        }
    }
}
