import Checkpoint
import NumberFormats
import SafetensorsFormat

/// How a logical weight's values are stored, recognised once (from names, dtypes, shapes and
/// quantization_config) for every command that reads weights. Each case's decoding is in its own file.
public enum WeightEncoding: Sendable {
    /// Stored as its own values (F32, BF16, F16, ...).
    case plain
    /// FP8 codes [rows, cols] (any FP8 dtype, each decoded as itself) times the F32/BF16 scale of their
    /// block: `value = float32(code) * scale[r / block.rows][c / block.cols]`; DeepSeek's `weight_scale_inv`
    /// blocks and compressed-tensors' `float-quantized` (per tensor: one block; per channel: 1 x cols blocks;
    /// `block_structure` blocks). FP8BlockDecoding.swift.
    case fp8Block(scale: Checkpoint.Located, block: BlockShape)
    /// compressed-tensors `pack-quantized` integers (`weight_packed` I32, `weight_scale`, `weight_zero_point`
    /// when asymmetric, `weight_shape`). PackedIntDecoding.swift.
    case packedInt(scale: Checkpoint.Located, zeroPoint: Checkpoint.Located?, shape: Checkpoint.Located?, bits: Int)
    /// NVFP4: U8 codes, an F8_E4M3 `weight_scale` per 16, a per-tensor F32 scale whose convention the format
    /// fixes: compressed-tensors `nvfp4-pack-quantized` (`weight_packed`, `weight_global_scale` **divides**) or
    /// ModelOpt (`weight` itself, `weight_scale_2` **multiplies**). FP4Decoding.swift.
    case nvfp4(scale: Checkpoint.Located, globalScale: Checkpoint.Located, convention: NVFP4Convention)
    /// compressed-tensors `mxfp4-pack-quantized` (`weight_packed` U8, `weight_scale` E8M0 per 32). FP4Decoding.swift.
    case mxfp4(scale: Checkpoint.Located)
    /// gpt-oss's experts: `<name>_blocks` U8 [E, rows, cols/32, 16], `<name>_scales` U8 [E, rows, cols/32]
    /// (E8M0); transformers' parameter is the transpose of each expert's rows. FP4Decoding.swift.
    case gptOssMXFP4(scales: Checkpoint.Located)

    /// A short name for reports.
    public var name: String {
        switch self {
        case .plain: return "plain"
        case .fp8Block: return "fp8-block"
        case .packedInt(_, let zp, _, let bits): return "int\(bits)-pack\(zp == nil ? "" : "-asym")"
        case .nvfp4(_, _, .divides): return "nvfp4"
        case .nvfp4(_, _, .multiplies): return "nvfp4-modelopt"
        case .mxfp4: return "mxfp4"
        case .gptOssMXFP4: return "mxfp4-gpt-oss"
        }
    }
}

extension WeightEncoding {
    /// How values are grouped and scaled, for reports: e.g. "groups of 32 columns, BF16 scales: q x scale".
    /// `codes`: the stored tensor holding the weight's codes.
    public func layout(codes: TensorInfo) -> String {
        switch self {
        case .plain:
            return "stored as \(codes.dtype.rawValue)"
        case .fp8Block(let scale, let block):
            let cols = codes.shape.last ?? 0
            let shape = block.cols >= Int(clamping: cols) && block.rows >= Int(clamping: codes.shape.first ?? 0) ? "one scale per tensor"
                : block.rows == 1 && block.cols >= Int(clamping: cols) ? "one scale per output row" : "\(block.rows)x\(block.cols) blocks"
            return "\(shape), \(scale.tensor.dtype.rawValue) scales: code x scale"
        case .packedInt(let scale, let zeroPoint, _, let bits):
            let groups = scale.tensor.shape.last ?? 1
            let value = zeroPoint == nil ? "q x scale" : "(q - zero point) x scale"
            guard groups > 1 else { return "one scale per output row, \(scale.tensor.dtype.rawValue) scales: \(value)" }
            // The packed width holds the columns rounded up to whole words: the group is the smallest power of
            // two that gives that many groups.
            let words = codes.shape.last ?? 0
            let perWord = UInt64(32 / max(bits, 1))
            let group = (3...16).map { UInt64(1) << UInt64($0) }.first { g in
                (words * perWord + g - 1) / g == groups || (words * perWord - min(perWord - 1, words * perWord) + g - 1) / g == groups
            }
            return "groups of \(group.map(String.init) ?? "?") columns, \(scale.tensor.dtype.rawValue) scales: \(value)"
        case .nvfp4(let scale, _, let convention):
            return "groups of 16 columns, \(scale.tensor.dtype.rawValue) scales: e2m1 x scale \(convention == .divides ? "/ global scale" : "x weight_scale_2")"
        case .mxfp4(let scale):
            return "groups of 32 columns, \(scale.tensor.dtype.rawValue == "U8" ? "E8M0" : scale.tensor.dtype.rawValue) scales: e2m1 x 2^(e - 127)"
        case .gptOssMXFP4:
            return "blocks of 32 inputs, E8M0 scales: e2m1 x 2^(e - 127)"
        }
    }
}

/// What NVFP4's per-tensor scale does to the group scales; the two producers disagree, and the format (the
/// tensor's name) says which: guessing would garble every value.
public enum NVFP4Convention: Sendable, Equatable {
    /// compressed-tensors' `weight_global_scale`: `scale / global`.
    case divides
    /// ModelOpt's `weight_scale_2`: `scale x scale_2`.
    case multiplies
}

/// A weight as the model knows it (`<module>.weight`, or gpt-oss's `mlp.experts.gate_up_proj`): the stored
/// tensor holding its codes or values, and how they are encoded.
public struct LogicalWeight: Sendable {
    public let name: String
    public let codes: Checkpoint.Located
    public let encoding: WeightEncoding

    public init(name: String, codes: Checkpoint.Located, encoding: WeightEncoding) {
        self.name = name
        self.codes = codes
        self.encoding = encoding
    }
}

extension Checkpoint {
    /// The names a block-scaled FP8 weight's scale goes by: DeepSeek's, then compressed-tensors'.
    public static let scaleSuffixes: [StaticString] = [BlockQuantization.scaleSuffix, BlockQuantization.compressedTensorsScaleSuffix]

    /// `.weight_scale_inv`, `.weight_scale`: what a scale's name ends with.
    static let scaleNameEndings = scaleSuffixes.map { ".weight" + String(describing: $0) }

    /// What DeepSeek-V4's release names a weight's scale: `<module>.scale` beside `<module>.weight` (UE8M0 blocks
    /// of its FP8 weights, E8M0 groups of 32 of its FP4 experts).
    static let moduleScaleEnding = ".scale"

    /// Whether `name` is the block scale of a weight (by name alone). DeepSeek-V4's `<module>.scale` is not told by
    /// its name (other models have parameters so named): its E8M0 dtype makes it overhead (ParameterCounting), and
    /// the weight it belongs to folds it in (CheckpointReader.encodedWeights).
    public static func isScaleName(_ name: String) -> Bool {
        scaleNameEndings.contains { name.hasSuffix($0) }
    }

    /// The scale tensor stored beside an FP8 `.weight` (or DeepSeek-V4's packed FP4 I8 `.weight`), wherever it is
    /// (DeepSeek keeps some in another shard): `.weight_scale_inv`, `.weight_scale`, or the release's `.scale`.
    public func blockScale(of t: TensorInfo) -> Located? {
        guard t.dtype.isFP8 || t.dtype == .I8, t.name.hasSuffix(".weight") else { return nil }
        if t.dtype.isFP8 {
            for suffix in Checkpoint.scaleSuffixes {
                if let s = locate(t.name, suffix: suffix) { return s }
            }
        }
        return locate(String(t.name.dropLast(".weight".count)) + Checkpoint.moduleScaleEnding)
    }

    /// ModelOpt's NVFP4: `<module>.weight` U8 codes beside an F8_E4M3 `weight_scale` and an F32 `weight_scale_2`.
    public func modelOptNVFP4(_ t: TensorInfo) -> WeightEncoding? {
        guard t.dtype == .U8, t.name.hasSuffix(".weight"), let scale = locate(t.name, suffix: "_scale"),
              scale.tensor.dtype == .F8_E4M3, let scale2 = locate(t.name, suffix: "_scale_2") else { return nil }
        return .nvfp4(scale: scale, globalScale: scale2, convention: .multiplies)
    }

    /// How tensor `t` (stored in file `fileIndex`) is encoded. An FP8 weight with a scale must be 2-D, its
    /// scale F32 or BF16 and shaped as the block grid that quantization_config declares (128x128 when it
    /// declares none); anything else is refused rather than decoded with the wrong scale.
    public func encoding(of t: TensorInfo, inFile fileIndex: Int) throws(WeightReadError) -> WeightEncoding {
        if let modelOpt = modelOptNVFP4(t) { return modelOpt }
        guard let scale = blockScale(of: t) else { return .plain }
        let path = files[fileIndex].path
        // DeepSeek-V4's FP4 experts: two E2M1 codes a byte (the first in the low nibble) in an I8 tensor, an E8M0
        // scale per 32 along each row: MXFP4.
        if t.dtype == .I8 {
            guard scale.tensor.dtype == .F8_E8M0 || scale.tensor.dtype == .U8 else {
                throw WeightReadError(.unsupportedLayout, file: files[scale.file].path, tensor: scale.tensor.name,
                    "scale of the packed FP4 weight \(t.name) is \(scale.tensor.dtype.rawValue); E8M0 exponents are read",
                    hint: "report the checkpoint's quantization_config")
            }
            return .mxfp4(scale: scale)
        }
        guard t.shape.count == 2 else {
            throw WeightReadError(.unsupportedLayout, file: path, tensor: t.name,
                "FP8 weight is \(t.shape.count)-D; only 2-D block-scaled weights are read",
                hint: "convert it with the tool that wrote it, or report the layout")
        }
        // F8_E8M0: ue8m0 scales stored as what they are, powers of two (2^(byte - 127)).
        guard [.F32, .BF16, .F8_E8M0].contains(scale.tensor.dtype) else {
            throw WeightReadError(.unsupportedLayout, file: files[scale.file].path, tensor: scale.tensor.name,
                "block scale is \(scale.tensor.dtype.rawValue); F32, BF16 or F8_E8M0 scales are read",
                hint: "cast the scales to F32")
        }
        let block: BlockShape
        if let declared = declaredBlock {
            block = declared
        } else {
            // No weight_block_size: the scale's own shape says which scheme (compressed-tensors float-quantized).
            let (rows, cols) = (Int(t.shape[0]), Int(t.shape[1]))
            let s = scale.tensor.shape
            if scale.tensor.elementCount == 1 && s.count <= 2 {
                block = BlockShape(rows: rows, cols: cols)  // per tensor
            } else if s == [t.shape[0], 1] {
                block = BlockShape(rows: 1, cols: cols)  // per channel
            } else {
                block = blockStructures.first { $0.grid(rows: t.shape[0], cols: t.shape[1]) == s } ?? .deepSeek
            }
        }
        let expected = block.grid(rows: t.shape[0], cols: t.shape[1])
        guard scale.tensor.shape == expected || (scale.tensor.elementCount == 1 && expected == [1, 1]) else {
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

extension Checkpoint {
    /// compressed-tensors' `group_size`s declared in quantization_config.config_groups (weights of the group strategy).
    var declaredGroupSizes: [Int] {
        let groups = config?.quantizationConfig?["config_groups"]?.objectValue?.members.map(\.value) ?? []
        return groups.compactMap { $0.objectValue?["weights"]?.objectValue?["group_size"]?.uint64Value }
            .filter { $0 >= 1 && $0 <= UInt64(Int32.max) }.map { Int($0) }
    }

    /// compressed-tensors' `block_structure`s declared in quantization_config.config_groups.
    var blockStructures: [BlockShape] {
        let groups = config?.quantizationConfig?["config_groups"]?.objectValue?.members.map(\.value) ?? []
        return groups.compactMap { g -> BlockShape? in
            guard let b = g.objectValue?["weights"]?.objectValue?["block_structure"]?.arrayValue?.compactMap(\.uint64Value),
                  b.count == 2, (1...UInt64(BlockShape.maximumSide)).contains(b[0]), (1...UInt64(BlockShape.maximumSide)).contains(b[1])
            else { return nil }
            return BlockShape(rows: Int(b[0]), cols: Int(b[1]))
        }
    }

    /// The logical weight `name`, whatever stores it: a tensor of that name (plain, FP8 with its scale), a
    /// compressed-tensors `<name>_packed` with its scales, or gpt-oss's `<name>_blocks` and `<name>_scales`;
    /// nil when nothing does.
    public func logicalWeight(_ name: String) throws(WeightReadError) -> LogicalWeight? {
        if let t = locate(name) {
            return LogicalWeight(name: name, codes: t, encoding: try encoding(of: t.tensor, inFile: t.file))
        }
        if name.hasSuffix(".weight"), let packed = locate(name, suffix: "_packed") {
            return LogicalWeight(name: name, codes: packed, encoding: try packedEncoding(name, packed))
        }
        if let blocks = locate(name, suffix: "_blocks"), blocks.tensor.dtype == .U8 {
            guard let scales = locate(name, suffix: "_scales") else {
                throw WeightReadError(.scaleMissing, file: files[blocks.file].path, tensor: blocks.tensor.name,
                                      "MXFP4 blocks without their \(name)_scales", hint: "the checkpoint is incomplete: download it again")
            }
            return LogicalWeight(name: name, codes: blocks, encoding: .gptOssMXFP4(scales: scales))
        }
        return nil
    }

    /// Which compressed-tensors packing `<name>_packed` is: I32 integers, or U8 FP4 with an F8_E4M3 scale and a
    /// global scale (NVFP4) or an E8M0 scale (MXFP4).
    func packedEncoding(_ name: String, _ packed: Located) throws(WeightReadError) -> WeightEncoding {
        let path = files[packed.file].path
        guard let scale = locate(name, suffix: "_scale") else {
            throw WeightReadError(.scaleMissing, file: path, tensor: packed.tensor.name, "packed weight without its \(name)_scale",
                                  hint: "the checkpoint is incomplete: download it again")
        }
        switch packed.tensor.dtype {
        case .I32:
            let bits = ParameterCounting.packedBits(config)
            return .packedInt(scale: scale, zeroPoint: locate(name, suffix: "_zero_point"), shape: locate(name, suffix: "_shape"), bits: bits)
        case .U8 where scale.tensor.dtype == .F8_E4M3:
            guard let global = locate(name, suffix: "_global_scale") else {
                throw WeightReadError(.scaleMissing, file: path, tensor: packed.tensor.name, "NVFP4 weight without its \(name)_global_scale",
                                      hint: "the checkpoint is incomplete: download it again")
            }
            return .nvfp4(scale: scale, globalScale: global, convention: .divides)
        case .U8 where scale.tensor.dtype == .U8 || scale.tensor.dtype == .F8_E8M0:
            return .mxfp4(scale: scale)
        default:
            throw WeightReadError(.unsupportedLayout, file: path, tensor: packed.tensor.name,
                "packed weight of dtype \(packed.tensor.dtype.rawValue) with a \(scale.tensor.dtype.rawValue) scale is no compressed-tensors format moetool reads",
                hint: "report the checkpoint's quantization_config")
        }
    }
}
