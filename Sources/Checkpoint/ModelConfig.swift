import SafetensorsFormat
import StrictJSON

/// The fields of config.json that describe a model's shape and its mixture of
/// experts, across DeepSeek-V2/V3, Qwen2-MoE, Qwen3-MoE and Mixtral. Every field
/// is optional: configs name things differently and omit defaults.
public struct ModelConfig: Sendable {
    public let raw: JSONObject

    public var modelType: String? { string("model_type") }
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
    public var normTopkProb: Bool? { field("norm_topk_prob")?.boolValue }
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

    /// Where the decoder's tensors are named: "model." (model.embed_tokens, model.layers.N, model.norm), or
    /// "model.language_model." for Qwen3.5-MoE, whose released checkpoints are the multimodal model's
    /// (Qwen3_5MoeForConditionalGeneration: the vision tower beside it under model.visual).
    public var decoderPrefix: String { modelType == "qwen3_5_moe" ? "model.language_model." : "model." }

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
        if mlpOnlyLayers.contains(layer) { return false }
        if let k = firstKDenseReplace, layer < k { return false }
        if let freq = moeLayerFreq, freq > 1, layer % freq != 0 { return false }
        if let step = decoderSparseStep, step > 1, (layer + 1) % step != 0 { return false }
        return true
    }
}
