import NumberFormats
import SafetensorsFormat
import StrictJSON

/// The rows x cols of the blocks that share one scale.
public struct BlockShape: Sendable, Equatable, CustomStringConvertible {
    public let rows: Int
    public let cols: Int

    public init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
    }

    /// DeepSeek-V3's 128x128 blocks, assumed when quantization_config declares none.
    public static let deepSeek = BlockShape(rows: BlockQuantization.blockSize, cols: BlockQuantization.blockSize)
    /// Largest block side accepted from a config (a block larger than any weight is a per-tensor scale).
    public static let maximumSide = 1 << 20

    /// The scale grid of a [rows, cols] weight: ceil(rows/block.rows) x ceil(cols/block.cols), without overflow
    /// for any dimension a header can hold.
    public func grid(rows: UInt64, cols: UInt64) -> [UInt64] {
        [BlockShape.ceilDiv(rows, UInt64(self.rows)), BlockShape.ceilDiv(cols, UInt64(self.cols))]
    }

    static func ceilDiv(_ a: UInt64, _ b: UInt64) -> UInt64 { a / b + (a % b == 0 ? 0 : 1) }

    public var description: String { "\(rows)x\(cols)" }
}

/// How a logical weight's values are stored, recognised once (from its dtype, the tensors beside it and
/// quantization_config) for every command that reads weights.
public enum WeightEncoding: Sendable {
    /// Stored as its own values (F32, BF16, F16, ...).
    case plain
    /// FP8 codes [rows, cols] (any FP8 dtype, each decoded as itself) times the F32/BF16 scale of their
    /// block: `value = float32(code) * scale[r / block.rows][c / block.cols]`.
    case fp8Block(scale: Checkpoint.Located, block: BlockShape)
}

/// Why a weight cannot be read as the format says.
public struct WeightEncodingError: Error, Sendable, CustomStringConvertible {
    public let file: String
    public let tensor: String
    public let message: String

    public var description: String { "\(escapeForDisplay(file)): tensor \"\(escapeForDisplay(tensor))\": \(message)" }
}

extension ModelConfig {
    /// quantization_config.weight_block_size as declared, or nil when absent.
    /// Throws a description of what is wrong when it is not two integers from 1 to `BlockShape.maximumSide`.
    public func declaredBlockShape() throws(Problem) -> BlockShape? {
        guard let value = quantizationConfig?["weight_block_size"], value != .null else { return nil }
        let sides = value.arrayValue?.map { $0.uint64Value } ?? []
        guard sides.count == 2, let r = sides[0], let c = sides[1],
              (1...UInt64(BlockShape.maximumSide)).contains(r), (1...UInt64(BlockShape.maximumSide)).contains(c)
        else {
            throw Problem(file: "config.json", rule: .configInvalid,
                "quantization_config.weight_block_size is \(String(decoding: JSONSerializer.compact(value), as: UTF8.self)); it must be two integers from 1 to \(BlockShape.maximumSide), e.g. [128, 128]")
        }
        return BlockShape(rows: Int(r), cols: Int(c))
    }
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
    public func encoding(of t: TensorInfo, inFile fileIndex: Int) throws(WeightEncodingError) -> WeightEncoding {
        guard let scale = blockScale(of: t) else { return .plain }
        let path = files[fileIndex].path
        guard t.shape.count == 2 else {
            throw WeightEncodingError(file: path, tensor: t.name,
                message: "FP8 weight is \(t.shape.count)-D; only 2-D block-scaled weights are read")
        }
        guard scale.tensor.dtype == .F32 || scale.tensor.dtype == .BF16 else {
            throw WeightEncodingError(file: files[scale.file].path, tensor: scale.tensor.name,
                message: "block scale is \(scale.tensor.dtype.rawValue); F32 or BF16 scales are read")
        }
        let block = declaredBlock ?? .deepSeek
        let expected = block.grid(rows: t.shape[0], cols: t.shape[1])
        guard scale.tensor.shape == expected else {
            let declared = declaredBlock == nil ? "the default 128x128 blocks" : "quantization_config.weight_block_size \(block)"
            throw WeightEncodingError(file: files[scale.file].path, tensor: scale.tensor.name,
                message: "scale grid is \(formatShape(scale.tensor.shape)), but \(declared) on \(formatShape(t.shape)) make it \(formatShape(expected)); the scale and the declared block size disagree, fix config.json or the scales")
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
