import Checkpoint
import NumberFormats
import SafetensorsFormat

/// How a logical weight's values are stored, recognised once (from its dtype, the tensors beside it and
/// quantization_config) for every command that reads weights.
public enum WeightEncoding: Sendable {
    /// Stored as its own values (F32, BF16, F16, ...).
    case plain
    /// FP8 codes [rows, cols] (any FP8 dtype, each decoded as itself) times the F32/BF16 scale of their
    /// block: `value = float32(code) * scale[r / block.rows][c / block.cols]`.
    case fp8Block(scale: Checkpoint.Located, block: BlockShape)
}

extension Checkpoint {
    /// The names a block-scaled FP8 weight's scale goes by: DeepSeek's, then compressed-tensors'.
    public static let scaleSuffixes: [StaticString] = [BlockQuantization.scaleSuffix, BlockQuantization.compressedTensorsScaleSuffix]

    /// `.weight_scale_inv`, `.weight_scale`: what a scale's name ends with.
    static let scaleNameEndings = scaleSuffixes.map { ".weight" + String(describing: $0) }

    /// Whether `name` is the block scale of a weight (by name alone).
    public static func isScaleName(_ name: String) -> Bool {
        scaleNameEndings.contains { name.hasSuffix($0) }
    }

    /// The scale tensor stored beside an FP8 `.weight`, wherever it is (DeepSeek keeps some in another shard).
    public func blockScale(of t: TensorInfo) -> Located? {
        guard t.dtype.isFP8, t.name.hasSuffix(".weight") else { return nil }
        for suffix in Checkpoint.scaleSuffixes {
            if let s = locate(t.name, suffix: suffix) { return s }
        }
        return nil
    }

    /// How tensor `t` (stored in file `fileIndex`) is encoded. An FP8 weight with a scale must be 2-D, its
    /// scale F32 or BF16 and shaped as the block grid that quantization_config declares (128x128 when it
    /// declares none); anything else is refused rather than decoded with the wrong scale.
    public func encoding(of t: TensorInfo, inFile fileIndex: Int) throws(WeightReadError) -> WeightEncoding {
        guard let scale = blockScale(of: t) else { return .plain }
        let path = files[fileIndex].path
        guard t.shape.count == 2 else {
            throw WeightReadError(.unsupportedLayout, file: path, tensor: t.name,
                "FP8 weight is \(t.shape.count)-D; only 2-D block-scaled weights are read",
                hint: "convert it with the tool that wrote it, or report the layout")
        }
        guard scale.tensor.dtype == .F32 || scale.tensor.dtype == .BF16 else {
            throw WeightReadError(.unsupportedLayout, file: files[scale.file].path, tensor: scale.tensor.name,
                "block scale is \(scale.tensor.dtype.rawValue); F32 or BF16 scales are read",
                hint: "cast the scales to F32")
        }
        let block = declaredBlock ?? .deepSeek
        let expected = block.grid(rows: t.shape[0], cols: t.shape[1])
        guard scale.tensor.shape == expected else {
            let declared = declaredBlock == nil ? "the default 128x128 blocks" : "quantization_config.weight_block_size \(block)"
            throw WeightReadError(.scaleGridMismatch, file: files[scale.file].path, tensor: scale.tensor.name,
                "scale grid is \(formatShape(scale.tensor.shape)), but \(declared) on \(formatShape(t.shape)) make it \(formatShape(expected)); the scale and the declared block size disagree",
                hint: "fix config.json or the scales")
        }
        return .fp8Block(scale: scale, block: block)
    }
}

extension Dtype {
    /// The float value of each of the 256 codes of an FP8 dtype (nil for other dtypes): every variant
    /// decodes as itself.
    public var fp8Table: [Float]? {
        switch self {
        case .F8_E4M3: return FloatDecoding.e4m3Table
        case .F8_E5M2: return FloatDecoding.e5m2Table
        case .F8_E4M3FNUZ: return FloatDecoding.e4m3fnuzTable
        case .F8_E5M2FNUZ: return FloatDecoding.e5m2fnuzTable
        default: return nil
        }
    }
}
