import Checkpoint
import SafetensorsFormat

/// Which way a conversion goes.
public enum ConversionTarget: String, Sendable, CaseIterable {
    /// BF16/F16/F32 linear weights to FP8 E4M3 with 128x128 block scales.
    case fp8
    /// Every encoded weight decoded to BF16.
    case bf16
    /// compressed-tensors pack-quantized: symmetric INT4 in groups of `--group-size` columns, BF16 scales.
    case int4
    /// compressed-tensors nvfp4-pack-quantized: FP4 E2M1 in groups of 16, E4M3 scales, an F32 global scale.
    case nvfp4
    /// compressed-tensors mxfp4-pack-quantized: FP4 E2M1 in groups of 32, E8M0 exponents.
    case mxfp4

    /// Whether this target quantizes weights (to FP8 blocks or to a 4-bit format), rather than decoding them.
    public var quantizes: Bool { self != .bf16 }
}

/// What happens to one input tensor, and why.
public struct TensorAction: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// Becomes FP8 codes plus a `weight_scale_inv` block-scale tensor.
        case quantize
        /// FP8 codes and their scale become one BF16 tensor.
        case dequantize
        /// Dropped: a scale consumed by `dequantize`.
        case drop
        /// Copied byte for byte.
        case passThrough = "pass_through"
    }

    public let kind: Kind
    public let reason: String
}

/// The rule deciding which tensors are quantized: only 2-D `.weight` tensors of
/// attention and MLP/expert linear projections of the text model (DeepSeek-V4's wq_a, wq_b, wkv, wo_a, wo_b too). Never
/// vision or audio towers (MultimodalTower), embeddings, `lm_head`, MTP `shared_head.head` and `eh_proj`, routers
/// (`mlp.gate`, `feed_forward.router`), `shared_expert_gate`, the Gated DeltaNet's beta and decay projections
/// (Qwen3-Next's `in_proj_ba`, Qwen3.5's `in_proj_b` and `in_proj_a`), norms, biases or 1-D tensors (its conv1d, A_log
/// and dt_bias among them), or DeepSeek-V4's compressors (BF16 in its release). A sparse-attention indexer's `wq_b`
/// and `wk` are quantized, its `weights_proj` not. `--include` / `--exclude` patterns override it.
public struct TensorSelection: Sendable {
    public let include: NameFilter?
    public let exclude: NameFilter?

    public init(include: NameFilter? = nil, exclude: NameFilter? = nil) {
        self.include = include
        self.exclude = exclude
    }

    /// DeepSeek-V4's attention projections, named as its release names them.
    static let deepSeekV4Attention: Set<Substring> = ["wq_a", "wq_b", "wkv", "wo_a", "wo_b"]

    /// Why `tensor` would or would not be quantized by the default rule (nil reason: it would).
    public static func defaultRule(_ t: TensorInfo) -> String? {
        // gpt-oss's and Llama 4's experts.gate_up_proj / down_proj: block scales are written for 2-D Linear weights, and
        // no loader reads a stack of them.
        if t.shape.count == 3 && t.name.split(separator: ".").contains("experts") { return "3-D fused expert stack, kept as it is" }
        guard t.name.hasSuffix(".weight") else { return "not a .weight tensor" }
        guard t.shape.count == 2 else { return "\(t.shape.count)-D, only 2-D weights are quantized" }
        let parts = t.name.split(separator: ".")
        let module = parts.count >= 2 ? parts[parts.count - 2] : ""
        if MultimodalTower.contains(t.name) { return "vision or audio tower" }
        if parts.contains("embed_tokens") { return "embedding" }
        if parts.contains("lm_head") || parts.contains("shared_head") { return "output head" }
        if module == "eh_proj" { return "MTP eh_proj" }
        if module == "gate" || module == "router" || module == "shared_expert_gate" { return "router" }
        if ["in_proj_ba", "in_proj_b", "in_proj_a"].contains(module) { return "linear-attention gate (beta and decay)" }
        if module.hasSuffix("norm") { return "norm" }
        // DeepSeek-V3.2's and V4's indexers ship their q and k projections in FP8 and their per-head weights
        // unquantized; DeepSeek-V4's release keeps its compressors' wkv / wgate in BF16.
        if parts.contains("compressor") { return "DeepSeek-V4 compressor weights (BF16 in the release)" }
        if parts.contains("indexer") { return module == "wq_b" || module == "wk" ? nil : "indexer head weights" }
        let linear = module.contains("proj") || ["w1", "w2", "w3"].contains(module) || Self.deepSeekV4Attention.contains(module)
        guard linear else { return "not an attention or MLP projection" }
        return nil
    }

    public func action(for t: TensorInfo, target: ConversionTarget, hasScale: Bool, isScale: Bool,
                       groupSize: Int? = nil) -> TensorAction {
        let action = quantizingAction(for: t, target: target, hasScale: hasScale, isScale: isScale)
        // compressed-tensors needs whole groups: a weight whose columns they do not divide stays as it is
        // (and is listed in quantization_config.ignore).
        if action.kind == .quantize, let groupSize, t.shape.count == 2, t.shape[1] % UInt64(groupSize) != 0 {
            return TensorAction(kind: .passThrough, reason: "\(t.shape[1]) columns are not a multiple of the group size \(groupSize)")
        }
        return action
    }

    func quantizingAction(for t: TensorInfo, target: ConversionTarget, hasScale: Bool, isScale: Bool) -> TensorAction {
        switch target {
        case .bf16:
            if isScale { return TensorAction(kind: .drop, reason: "scale folded into its weight") }
            if t.dtype.isFP8 && hasScale { return TensorAction(kind: .dequantize, reason: "FP8 weight with block scale") }
            if t.dtype.isFP8 { return TensorAction(kind: .passThrough, reason: "FP8 without a block scale") }
            return TensorAction(kind: .passThrough, reason: "not FP8")
        case .fp8, .int4, .nvfp4, .mxfp4:
            if t.elementCount == 0 { return TensorAction(kind: .passThrough, reason: "no elements") }
            if t.dtype.isFP8 || isScale {
                return TensorAction(kind: .passThrough, reason: "already FP8 (never requantized)")
            }
            if let exclude, exclude.matches(t.name) { return TensorAction(kind: .passThrough, reason: "--exclude") }
            let eligibleDtype = t.dtype == .BF16 || t.dtype == .F16 || t.dtype == .F32
            if let include, include.matches(t.name) {
                guard eligibleDtype, t.shape.count == 2 else {
                    return TensorAction(kind: .passThrough, reason: "--include, but not a 2-D BF16/F16/F32 tensor")
                }
                return TensorAction(kind: .quantize, reason: "--include")
            }
            guard eligibleDtype else { return TensorAction(kind: .passThrough, reason: "\(t.dtype.rawValue) is not quantized") }
            if let why = TensorSelection.defaultRule(t) { return TensorAction(kind: .passThrough, reason: why) }
            return TensorAction(kind: .quantize, reason: "linear projection")
        }
    }
}
