import SafetensorsFormat
import StrictJSON

/// The fields of config.json that describe a model's shape and its mixture of
/// experts, across DeepSeek-V2/V3, Qwen2-MoE, Qwen3-MoE, Mixtral and Llama 4 (whose text_config holds them). Every field
/// is optional: configs name things differently and omit defaults.
public struct ModelConfig: Sendable {
    public let raw: JSONObject

    public var modelType: String? { string("model_type") }
    /// The architecture whose naming and forward pass the checkpoint follows: model_type, except for releases that
    /// give their own name to another's architecture. Kimi-K2's config.json says model_type "kimi_k2" with
    /// architectures ["DeepseekV3ForCausalLM"]: DeepSeek-V3's names and computation with other sizes.
    public var architecture: String? { modelType.map { Self.architectureAliases[$0] ?? $0 } }
    /// model_type -> the architecture it reuses.
    public static let architectureAliases = ["kimi_k2": "deepseek_v3"]
    public var architectures: [String] { field("architectures")?.arrayValue?.compactMap(\.stringValue) ?? [] }
    public var hiddenSize: Int? { int("hidden_size") }
    public var numHiddenLayers: Int? { int("num_hidden_layers") }
    public var vocabSize: Int? { int("vocab_size") }
    public var intermediateSize: Int? { int("intermediate_size") }
    public var moeIntermediateSize: Int? { int("moe_intermediate_size") }
    public var sharedExpertIntermediateSize: Int? { int("shared_expert_intermediate_size") }
    /// Routed experts per MoE layer: DeepSeek `n_routed_experts`, Qwen `num_experts`, Mixtral `num_local_experts`.
    public var routedExperts: Int? { int("n_routed_experts") ?? int("num_experts") ?? int("num_local_experts") }
    public var expertsPerToken: Int? { int("num_experts_per_tok") }
    public var nGroup: Int? { int("n_group") }
    public var topkGroup: Int? { int("topk_group") }
    public var nSharedExperts: Int? { int("n_shared_experts") }
    public var firstKDenseReplace: Int? { int("first_k_dense_replace") }
    public var moeLayerFreq: Int? { int("moe_layer_freq") }
    public var decoderSparseStep: Int? { int("decoder_sparse_step") }
    public var mlpOnlyLayers: [Int] { field("mlp_only_layers")?.arrayValue?.compactMap { $0.uint64Value.map(Int.init) } ?? [] }
    /// Each layer's feed-forward, "dense" or "sparse" (written by recent transformers, e.g. for DeepSeek-V3.2).
    public var mlpLayerTypes: [String]? { field("mlp_layer_types")?.arrayValue?.map { $0.stringValue ?? "" } }
    public var normTopkProb: Bool? { field("norm_topk_prob")?.boolValue }
    /// GLM-5's DSA schedule, a kind per layer: "full" (the layer has its own indexer) or "shared" (it reuses the
    /// last full layer's selection). As GlmMoeDsaConfig derives it: indexer_types, else index_topk_pattern ("F"/"S"
    /// or the names), else layer l is full when max(l - index_skip_topk_offset + 1, 0) is a multiple of
    /// index_topk_freq (defaults 2 and 1: every layer full). Nil for other architectures (every layer full).
    public var indexerTypes: [String]? {
        guard modelType == "glm_moe_dsa" else { return nil }
        if let given = field("indexer_types")?.arrayValue { return given.map { $0.stringValue ?? "" } }
        if let pattern = string("index_topk_pattern") { return pattern.map { $0 == "F" ? "full" : $0 == "S" ? "shared" : String($0) } }
        if let pattern = field("index_topk_pattern")?.arrayValue { return pattern.map { $0.stringValue ?? "" } }
        let freq = max(int("index_topk_freq") ?? 1, 1), offset = int("index_skip_topk_offset") ?? 2
        return (0..<(numHiddenLayers ?? 0)).map { max($0 - offset + 1, 0) % freq == 0 ? "full" : "shared" }
    }
    public var numNextnPredictLayers: Int? { int("num_nextn_predict_layers") }
    public var tieWordEmbeddings: Bool? { field("tie_word_embeddings")?.boolValue }
    public var quantizationConfig: JSONObject? { field("quantization_config")?.objectValue }
    /// The dtype the model computes in (`dtype`, or `torch_dtype` before transformers 4.56), when it is a float.
    public var computeDtype: Dtype? {
        switch string("dtype") ?? string("torch_dtype") {
        case "bfloat16": return .BF16
        case "float16": return .F16
        case "float32": return .F32
        default: return nil
        }
    }

    public init(_ raw: JSONObject) {
        self.raw = raw
    }

    /// A field of the config, looked up in `text_config` too (multimodal wrappers).
    public func field(_ key: String) -> JSONValue? {
        if let v = raw[key], v != .null { return v }
        if let text = raw["text_config"]?.objectValue, let v = text[key], v != .null { return v }
        return nil
    }

    public func int(_ key: String) -> Int? {
        guard let v = field(key) else { return nil }
        if let u = v.uint64Value, u <= UInt64(Int.max) { return Int(u) }
        if let d = v.doubleValue, d >= 0, d == d.rounded(), d < 1e15 { return Int(d) }
        return nil
    }

    public func string(_ key: String) -> String? { field(key)?.stringValue }

    /// The largest a size field may be (2^24: every released model's widths, vocabularies and expert counts are far
    /// below it), so that products of a few of them cannot overflow and no allocation follows from a hostile value.
    public static let maximumSize = 1 << 24

    /// The config.json fields that size tensors, for every architecture moetool runs or checks.
    public static let sizeFields = [
        "hidden_size", "vocab_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
        "moe_intermediate_size", "shared_expert_intermediate_size", "intermediate_size_mlp", "q_lora_rank", "kv_lora_rank",
        "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "rotary_dim", "index_n_heads", "index_head_dim",
        "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
        "linear_conv_kernel_dim", "hc_mult", "o_groups", "o_lora_rank", "n_routed_experts", "num_experts",
        "num_local_experts", "num_experts_per_tok", "n_shared_experts", "num_hidden_layers",
    ]

    /// The first size field (sizeFields) above its limit (maximumSize, or maximumLayers for num_hidden_layers), with
    /// its value: a config no tensor of which can be computed or checked safely.
    public var oversizedField: (key: String, value: Int, limit: Int)? {
        for key in Self.sizeFields {
            let limit = key == "num_hidden_layers" ? Self.maximumLayers : Self.maximumSize
            if let v = int(key), v > limit { return (key, v, limit) }
        }
        return nil
    }

    /// The most decoder layers a config may have (released models have at most a few hundred): each is looked for by
    /// name, so a config of 10^18 layers would keep the tools busy for ever.
    public static let maximumLayers = 1 << 16

    /// Where the text model's weight names start: Llama 4 is published as Llama4ForConditionalGeneration, its text
    /// model under "language_model." (language_model.model.layers.N..., language_model.lm_head.weight) beside the
    /// vision tower; the other architectures moetool runs or checks are causal LMs at the top level ("").
    public var textWeightPrefix: String { architecture == "llama4" ? "language_model." : "" }

    /// Llama 4's MoE layers: `moe_layers` when config.json lists them, else every interleave_moe_layer_step-th
    /// layer (step - 1, 2 x step - 1, ...: transformers' Llama4TextConfig; Scout's step 1 makes all 48 MoE,
    /// Maverick's step 2 the odd ones); nil when config.json gives neither.
    public var moeLayerList: [Int]? { field("moe_layers")?.arrayValue?.compactMap { $0.uint64Value.map(Int.init) } }
    public var interleaveMoELayerStep: Int? { int("interleave_moe_layer_step") }

    /// Where the decoder's tensors are named: "model." (model.embed_tokens, model.layers.N, model.norm), Llama 4's
    /// "language_model.model.", or "model.language_model." for Qwen3.5-MoE, whose released checkpoints are the
    /// multimodal model's (Qwen3_5MoeForConditionalGeneration: the vision tower beside it under model.visual).
    public var decoderPrefix: String { architecture == "qwen3_5_moe" ? "model.language_model." : textWeightPrefix + "model." }
    /// The output head's name: the text model's lm_head (Qwen3.5-MoE's at the top level).
    public var headName: String { textWeightPrefix + "lm_head.weight" }

    /// Whether decoder layer `layer` mixes tokens with linear attention (Qwen3-Next's and Qwen3.5's Gated
    /// DeltaNet) rather than softmax attention: its layer_types entry is "linear_attention", or, when config.json
    /// gives no layer_types (Qwen3-Next's released one), every layer but each full_attention_interval-th is.
    public func isLinearAttentionLayer(_ layer: Int) -> Bool {
        if let types = field("layer_types")?.arrayValue {
            return layer < types.count && types[layer].stringValue == "linear_attention"
        }
        guard let interval = int("full_attention_interval"), interval >= 1 else { return false }
        return (layer + 1) % interval != 0
    }

    /// Whether decoder layer `layer` has a routed-expert MLP according to the config,
    /// or nil when the config does not describe a MoE model.
    public func isMoELayer(_ layer: Int) -> Bool? {
        guard let experts = routedExperts, experts > 0 else { return nil }
        if let list = moeLayerList { return list.contains(layer) }
        if let step = interleaveMoELayerStep { return step >= 1 && (layer + 1) % step == 0 }
        // transformers builds each layer as mlp_layer_types says, when config.json lists it.
        // ("dense" or "sparse" for DeepSeek-V3.2 and GLM-5; "hash_moe" or "moe" for DeepSeek-V4, every layer routed.)
        if let types = mlpLayerTypes, layer < types.count { return types[layer] != "dense" }
        if mlpOnlyLayers.contains(layer) { return false }
        if let k = firstKDenseReplace, layer < k { return false }
        if let freq = moeLayerFreq, freq > 1, layer % freq != 0 { return false }
        if let step = decoderSparseStep, step > 1, (layer + 1) % step != 0 { return false }
        return true
    }
}
