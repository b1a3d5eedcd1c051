import Checkpoint
import SafetensorsFormat
import WeightReading

/// The tensors a model's config.json says a checkpoint holds, with their shapes, for the architectures moetool
/// knows (DeepSeek-V2/V3/V3.2/V4, Qwen2-MoE, Qwen3-MoE, Mixtral, gpt-oss, GLM-4.5, GLM-5, MiniMax-M2, Llama 4's text model, Qwen3-Next, Qwen3.5-MoE): what a loader would look for, so that a tensor it
/// would not find ("some weights were not initialized") is caught before anyone loads the checkpoint.
public enum ExpectedTensors {
    /// Largest config this check expands (a hostile config could describe billions of tensors).
    public static let maximumTensors = 4_000_000

    public struct Report: Sendable {
        /// How many tensors config.json implies.
        public var expected = 0
        /// Names config.json implies that the checkpoint lacks.
        public var missing: [String] = []
        /// (name, shape found, shape expected).
        public var wrongShape: [(name: String, found: [UInt64], expected: [UInt64])] = []
        /// Names the checkpoint holds that config.json does not imply (other than scales, MTP layers and blocks, and
        /// vision or audio towers).
        public var unexpected: [String] = []
    }

    /// What config.json implies, or nil when the architecture is not one moetool knows or the config lacks a
    /// size it needs. `has`: whether the checkpoint holds a name (to tell fused experts from per-expert ones).
    public static func expected(_ config: ModelConfig, has: (String) -> Bool) -> [(name: String, shape: [UInt64])]? {
        guard config.oversizedField == nil else { return nil }
        if config.architecture == "deepseek_v4" { return deepSeekV4(config, has: has) }
        guard let type = config.architecture, ["deepseek_v3", "deepseek_v32", "deepseek_v2", "qwen2_moe", "qwen3_moe", "mixtral", "gpt_oss", "glm4_moe",
                                               "glm_moe_dsa", "minimax_m2", "llama4", "qwen3_next", "qwen3_5_moe"].contains(type),
              let h = config.hiddenSize, let v = config.vocabSize, let layers = config.numHiddenLayers,
              let heads = config.int("num_attention_heads"), h > 0, v > 0, heads > 0, layers > 0, layers <= 1 << 16
        else { return nil }
        let experts = config.routedExperts ?? 0
        let estimate = layers * (16 + 3 * max(experts, 0))
        guard experts >= 0, experts <= 1 << 16, estimate <= maximumTensors else { return nil }
        var out: [(String, [UInt64])] = []
        func add(_ name: String, _ shape: [Int]) { out.append((name, shape.map { UInt64($0) })) }
        // The decoder's names start at config.decoderPrefix (Llama 4's and Qwen3.5-MoE's sit beside a vision tower, whose
        // tensors are not checked).
        let model = config.decoderPrefix
        add(model + "embed_tokens.weight", [v, h])
        add(model + "norm.weight", [h])
        if !(config.tieWordEmbeddings ?? false) { add(config.headName, [v, h]) }
        for l in 0..<layers {
            let p = model + "layers.\(l)."
            add(p + "input_layernorm.weight", [h])
            add(p + "post_attention_layernorm.weight", [h])
            if config.isLinearAttentionLayer(l) {
                guard linearAttention(config, prefix: p + "linear_attn.", hidden: h, has: has, add: add) else { return nil }
            } else {
                guard attention(config, type: type, prefix: p + "self_attn.", hidden: h, heads: heads, add: add),
                      sparseAttentionIndexer(config, type: type, layer: l, prefix: p + "self_attn.indexer.", hidden: h, add: add)
                else { return nil }
            }
            guard feedForward(config, type: type, layer: l, prefix: p, hidden: h, has: has, add: add) else { return nil }
        }
        return out
    }

    static func attention(_ c: ModelConfig, type: String, prefix p: String, hidden h: Int, heads: Int,
                          add: (String, [Int]) -> Void) -> Bool {
        if type.hasPrefix("deepseek") || type == "glm_moe_dsa" {
            guard let nope = c.int("qk_nope_head_dim"), let rope = c.int("qk_rope_head_dim"), let vDim = c.int("v_head_dim"),
                  let kvRank = c.int("kv_lora_rank") else { return false }
            if let qRank = c.int("q_lora_rank") {
                add(p + "q_a_proj.weight", [qRank, h])
                add(p + "q_a_layernorm.weight", [qRank])
                add(p + "q_b_proj.weight", [heads * (nope + rope), qRank])
            } else {
                add(p + "q_proj.weight", [heads * (nope + rope), h])
            }
            add(p + "kv_a_proj_with_mqa.weight", [kvRank + rope, h])
            add(p + "kv_a_layernorm.weight", [kvRank])
            add(p + "kv_b_proj.weight", [heads * (nope + vDim), kvRank])
            add(p + "o_proj.weight", [h, heads * vDim])
            return true
        }
        let kv = c.int("num_key_value_heads") ?? heads
        let d = c.int("head_dim") ?? h / heads
        // Qwen3-Next's and Qwen3.5's gated attention: q_proj gives each head's query and its output gate.
        let gated = type == "qwen3_next" || type == "qwen3_5_moe"
        add(p + "q_proj.weight", [(gated ? 2 : 1) * heads * d, h])
        add(p + "k_proj.weight", [kv * d, h])
        add(p + "v_proj.weight", [kv * d, h])
        add(p + "o_proj.weight", [h, heads * d])
        if type == "qwen2_moe" || (c.field("attention_bias")?.boolValue ?? (type == "gpt_oss")) {
            add(p + "q_proj.bias", [heads * d])
            add(p + "k_proj.bias", [kv * d])
            add(p + "v_proj.bias", [kv * d])
        }
        if type == "qwen3_moe" || gated || (type == "glm4_moe" && c.field("use_qk_norm")?.boolValue == true) {
            add(p + "q_norm.weight", [d])
            add(p + "k_norm.weight", [d])
        }
        if type == "minimax_m2" {  // over the whole projection, not per head
            add(p + "q_norm.weight", [heads * d])
            add(p + "k_norm.weight", [kv * d])
        }
        if type == "gpt_oss" {
            if c.field("attention_bias")?.boolValue ?? true { add(p + "o_proj.bias", [h]) }
            add(p + "sinks", [heads])
        }
        return true
    }

    /// The DSA indexer of DeepSeek-V3.2 (every layer) and GLM-5 (the layers indexer_types calls "full"; all when it
    /// is left out): wq_b [index_n_heads x index_head_dim, q_lora_rank], wk [index_head_dim, hidden], the LayerNorm
    /// k_norm (weight and bias) and weights_proj [index_n_heads, hidden].
    static func sparseAttentionIndexer(_ c: ModelConfig, type: String, layer: Int, prefix p: String, hidden h: Int,
                                       add: (String, [Int]) -> Void) -> Bool {
        guard type == "deepseek_v32" || type == "glm_moe_dsa" else { return true }
        if let kinds = c.indexerTypes, layer < kinds.count, kinds[layer] == "shared" { return true }
        guard let heads = c.int("index_n_heads"), let dim = c.int("index_head_dim"), let qRank = c.int("q_lora_rank") else { return false }
        add(p + "wq_b.weight", [heads * dim, qRank])
        add(p + "wk.weight", [dim, h])
        add(p + "k_norm.weight", [dim])
        add(p + "k_norm.bias", [dim])
        add(p + "weights_proj.weight", [heads, h])
        return true
    }

    /// A Gated DeltaNet layer's tensors: Qwen3-Next's fused projections (in_proj_qkvz, in_proj_ba) or, when the
    /// checkpoint has in_proj_qkv, Qwen3.5's four; the depthwise conv1d over [q | k | v]; A_log and dt_bias per
    /// value head; the gated norm over a value head; out_proj.
    static func linearAttention(_ c: ModelConfig, prefix p: String, hidden h: Int, has: (String) -> Bool,
                                add: (String, [Int]) -> Void) -> Bool {
        guard let nk = c.int("linear_num_key_heads"), let nv = c.int("linear_num_value_heads"), let dk = c.int("linear_key_head_dim"),
              let dv = c.int("linear_value_head_dim"), let kernel = c.int("linear_conv_kernel_dim"),
              [nk, nv, dk, dv, kernel].allSatisfy({ $0 > 0 && $0 <= 1 << 16 }) else { return false }
        let qkv = 2 * nk * dk + nv * dv
        if has(p + "in_proj_qkv.weight") {
            add(p + "in_proj_qkv.weight", [qkv, h])
            add(p + "in_proj_z.weight", [nv * dv, h])
            add(p + "in_proj_b.weight", [nv, h])
            add(p + "in_proj_a.weight", [nv, h])
        } else {
            add(p + "in_proj_qkvz.weight", [qkv + nv * dv, h])
            add(p + "in_proj_ba.weight", [2 * nv, h])
        }
        add(p + "conv1d.weight", [qkv, 1, kernel])
        add(p + "A_log", [nv])
        add(p + "dt_bias", [nv])
        add(p + "norm.weight", [dv])
        add(p + "out_proj.weight", [h, nv * dv])
        return true
    }

    static func feedForward(_ c: ModelConfig, type: String, layer: Int, prefix p: String, hidden h: Int,
                            has: (String) -> Bool, add: (String, [Int]) -> Void) -> Bool {
        func mlp(_ q: String, _ size: Int, names: (String, String, String) = ("gate_proj", "up_proj", "down_proj")) {
            add(q + names.0 + ".weight", [size, h])
            add(q + names.1 + ".weight", [size, h])
            add(q + names.2 + ".weight", [h, size])
        }
        guard c.isMoELayer(layer) == true, let experts = c.routedExperts, experts > 0 else {
            if type == "llama4" {  // Llama 4's dense layers: feed_forward of intermediate_size_mlp
                guard let size = c.int("intermediate_size_mlp") else { return false }
                mlp(p + "feed_forward.", size)
                return true
            }
            guard let size = c.intermediateSize else { return false }
            mlp(p + "mlp.", size)
            return true
        }
        if type == "llama4" {
            // The router (no bias), a shared expert and the routed experts of intermediate_size: fused as transformers
            // holds them ([E, in, out], gate columns then up columns), or one Linear each as the FP8 releases store them.
            guard let size = c.intermediateSize else { return false }
            let moe = p + "feed_forward."
            add(moe + "router.weight", [experts, h])
            mlp(moe + "shared_expert.", size)
            if has(moe + "experts.gate_up_proj") || !has(moe + "experts.0.gate_proj.weight") {
                add(moe + "experts.gate_up_proj", [experts, h, 2 * size])
                add(moe + "experts.down_proj", [experts, size, h])
            } else {
                for e in 0..<experts { mlp(moe + "experts.\(e).", size) }
            }
            return true
        }
        // Mixtral's and MiniMax-M2's names: block_sparse_moe, experts w1 (gate), w3 (up), w2 (down) of intermediate_size.
        let mixtralNames = type == "mixtral" || type == "minimax_m2"
        let moe = mixtralNames ? p + "block_sparse_moe." : p + "mlp."
        if type == "gpt_oss" {
            // Fused as transformers holds them, [E, in, out], gate/up interleaved; stored so or as MXFP4 blocks.
            guard let size = c.intermediateSize else { return false }
            add(moe + "router.weight", [experts, h])
            add(moe + "router.bias", [experts])
            add(moe + "experts.gate_up_proj", [experts, h, 2 * size])
            add(moe + "experts.gate_up_proj_bias", [experts, 2 * size])
            add(moe + "experts.down_proj", [experts, size, h])
            add(moe + "experts.down_proj_bias", [experts, h])
            return true
        }
        add(moe + "gate.weight", [experts, h])
        let size = mixtralNames ? c.intermediateSize : c.moeIntermediateSize
        guard let size else { return false }
        if has(moe + "experts.gate_up_proj") {
            add(moe + "experts.gate_up_proj", [experts, 2 * size, h])
            add(moe + "experts.down_proj", [experts, h, size])
        } else {
            let names = mixtralNames ? ("w1", "w3", "w2") : ("gate_proj", "up_proj", "down_proj")
            for e in 0..<experts { mlp(moe + "experts.\(e).", size, names: names) }
        }
        switch type {
        case "deepseek_v3", "deepseek_v32", "glm4_moe", "glm_moe_dsa":
            add(moe + "gate.e_score_correction_bias", [experts])
            if let n = c.nSharedExperts, n > 0 { mlp(moe + "shared_experts.", size * n) }
        case "minimax_m2":
            add(moe + "e_score_correction_bias", [experts])
        case "deepseek_v2":
            if let n = c.nSharedExperts, n > 0 { mlp(moe + "shared_experts.", size * n) }
        case "qwen2_moe", "qwen3_next", "qwen3_5_moe":
            if let shared = c.sharedExpertIntermediateSize, shared > 0 {
                mlp(moe + "shared_expert.", shared)
                add(moe + "shared_expert_gate.weight", [1, h])
            }
        default:
            break
        }
        return true
    }

    /// DeepSeek-V4 in its release's names (`layers.N.` without `model.`, `embed.weight`, `head.weight`, the hyper
    /// head's `hc_head_fn` / `_base` / `_scale`): per layer the two norms and hyper-connections (fn [(2 + n) n, n x
    /// hidden], base, scale [3]), the attention (wq_a, q_norm, wq_b, wkv, norm, wo_a, wo_b, attn_sink), on CSA and HCA
    /// layers the compressor (wkv and wgate of 2 x head_dim on CSA, head_dim on HCA; ape [rate, that]; norm), on CSA
    /// layers the indexer (its own compressor at index_head_dim, wq_b, weights_proj); the router with tid2eid on hash
    /// layers or its correction bias (gate.bias) on the others, w1/w2/w3 experts and shared experts. A checkpoint
    /// written by transformers' save_pretrained has the same names under `model.`, and `model.embed_tokens.weight`,
    /// `model.norm.weight`, `model.hc_head.hc_fn` / `_base` / `_scale` (`head.weight` as the release).
    static func deepSeekV4(_ c: ModelConfig, has: (String) -> Bool) -> [(name: String, shape: [UInt64])]? {
        guard let h = c.hiddenSize, let v = c.vocabSize, let layers = c.numHiddenLayers, let heads = c.int("num_attention_heads"),
              let d = c.int("head_dim"), let qRank = c.int("q_lora_rank"), let groups = c.int("o_groups"), let oRank = c.int("o_lora_rank"),
              let experts = c.routedExperts, let k = c.expertsPerToken, let size = c.moeIntermediateSize, let kinds = c.deepSeekV4Attention,
              h > 0, layers > 0, layers <= 1 << 16, heads > 0, groups > 0, (heads * d) % groups == 0, experts >= 0, experts <= 1 << 16,
              layers * (40 + 3 * experts) <= maximumTensors
        else { return nil }
        let n = c.int("hc_mult") ?? 4
        let (nI, dI) = (c.int("index_n_heads") ?? 64, c.int("index_head_dim") ?? 128)
        let rates = c.deepSeekV4CompressRates
        var out: [(String, [UInt64])] = []
        let saved = !has("layers.0.attn_norm.weight") && has("model.layers.0.attn_norm.weight")
        let savedTop = ["embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight", "hc_head_fn": "model.hc_head.hc_fn",
                        "hc_head_base": "model.hc_head.hc_base", "hc_head_scale": "model.hc_head.hc_scale"]
        func add(_ name: String, _ shape: [Int]) {
            let stored = !saved ? name : savedTop[name] ?? (name.hasPrefix("layers.") ? "model." + name : name)
            out.append((stored, shape.map { UInt64($0) }))
        }
        func hyper(_ p: String, _ rows: Int, _ scales: Int) {
            add(p + "fn", [rows, n * h])
            add(p + "base", [rows])
            add(p + "scale", [scales])
        }
        func compressor(_ p: String, width: Int, rate: Int, dim: Int) {
            add(p + "wkv.weight", [width, h])
            add(p + "wgate.weight", [width, h])
            add(p + "ape", [rate, width])
            add(p + "norm.weight", [dim])
        }
        func mlp(_ p: String, _ size: Int) {
            add(p + "w1.weight", [size, h])
            add(p + "w3.weight", [size, h])
            add(p + "w2.weight", [h, size])
        }
        add("embed.weight", [v, h])
        add("norm.weight", [h])
        add("head.weight", [v, h])
        hyper("hc_head_", n, 1)
        for l in 0..<layers {
            let p = "layers.\(l)."
            add(p + "attn_norm.weight", [h])
            add(p + "ffn_norm.weight", [h])
            hyper(p + "hc_attn_", (2 + n) * n, 3)
            hyper(p + "hc_ffn_", (2 + n) * n, 3)
            let a = p + "attn."
            add(a + "wq_a.weight", [qRank, h])
            add(a + "q_norm.weight", [qRank])
            add(a + "wq_b.weight", [heads * d, qRank])
            add(a + "wkv.weight", [d, h])
            add(a + "norm.weight", [d])
            add(a + "wo_a.weight", [groups * oRank, heads * d / groups])
            add(a + "wo_b.weight", [h, groups * oRank])
            add(a + "attn_sink", [heads])
            switch kinds[l] {
            case .sliding:
                break
            case .heavilyCompressed:
                compressor(a + "compressor.", width: d, rate: rates.hca, dim: d)
            case .compressedSparse:
                compressor(a + "compressor.", width: 2 * d, rate: rates.csa, dim: d)
                compressor(a + "indexer.compressor.", width: 2 * dI, rate: rates.csa, dim: dI)
                add(a + "indexer.wq_b.weight", [nI * dI, qRank])
                add(a + "indexer.weights_proj.weight", [nI, h])
            }
            let f = p + "ffn."
            add(f + "gate.weight", [experts, h])
            if c.isDeepSeekV4HashLayer(l) { add(f + "gate.tid2eid", [v, k]) } else { add(f + "gate.bias", [experts]) }
            for e in 0..<experts { mlp(f + "experts.\(e).", size) }
            if let shared = c.nSharedExperts, shared > 0 { mlp(f + "shared_experts.", size * shared) }
        }
        return out
    }

    /// Compares what config.json implies with what the checkpoint holds. Names of quantization companions
    /// (`*_scale_inv`, `*_scale`, DeepSeek-V4's `<module>.scale`) and of MTP layers (`model.layers.N+` beyond
    /// `num_hidden_layers`, DeepSeek-V4's `mtp.N.`) are not
    /// counted as unexpected: other checks own them.
    public static func check(_ checkpoint: Checkpoint) -> Report? {
        guard let config = checkpoint.config,
              let expected = expected(config, has: { checkpoint.locate($0) != nil }) else { return nil }
        var report = Report()
        report.expected = expected.count
        var expectedNames = Set<String>()
        expectedNames.reserveCapacity(expected.count)
        for (name, shape) in expected {
            expectedNames.insert(name)
            guard let found = checkpoint.locate(name) else {
                // Stored packed (compressed-tensors `_packed`, gpt-oss `_blocks`): there, in another shape.
                if let blocks = checkpoint.locate(name, suffix: "_blocks"), shape.count == 3 {
                    // gpt-oss's MXFP4: [E, in, out] is stored as each expert's output rows, 32 inputs to 16 bytes.
                    let stored = [shape[0], shape[2], (shape[1] + 31) / 32, 16]
                    if blocks.tensor.shape != stored { report.wrongShape.append((blocks.tensor.name, blocks.tensor.shape, stored)) }
                } else if checkpoint.locate(name, suffix: "_packed") == nil && checkpoint.locate(name, suffix: "_blocks") == nil {
                    report.missing.append(name)
                }
                continue
            }
            // ModelOpt NVFP4 and DeepSeek-V4's FP4 experts keep their codes under the weight's own name, two to a byte.
            let fp4Codes = shape.count == 2 ? [shape[0], (shape[1] + 1) / 2] : shape
            let packed = checkpoint.modelOptNVFP4(found.tensor) != nil || (found.tensor.dtype == .I8 && checkpoint.blockScale(of: found.tensor) != nil)
            if found.tensor.shape != shape && !(found.tensor.shape == fp4Codes && packed) {
                report.wrongShape.append((name, found.tensor.shape, shape))
            }
        }
        let layers = config.numHiddenLayers ?? 0
        let counting = ParameterCounting(config: config)
        for located in checkpoint.allTensors where !expectedNames.contains(located.tensor.name) {
            let name = located.tensor.name
            // Quantization bookkeeping (scales, zero points, shapes) and packed codes of an expected weight.
            if Checkpoint.isScaleName(name) || counting.kind(located.tensor) == .overhead { continue }
            if let base = ["_packed", "_blocks"].first(where: { name.hasSuffix($0) }).map({ String(name.dropLast($0.count)) }),
               expectedNames.contains(base) { continue }
            if let l = layerIndex(name, config: config), l >= layers { continue }  // MTP layers
            // Qwen3-Next's MTP block and a multimodal model's towers: counted apart by the structure, not the decoder's.
            if [.mtp, .multimodal].contains(TensorRole.classify(name).kind) { continue }
            // Rotary caches some exporters keep are no weights.
            if name.hasSuffix("rotary_emb.inv_freq") { continue }
            report.unexpected.append(name)
        }
        return report
    }

    static func layerIndex(_ name: String, config: ModelConfig) -> Int? {
        // Under the decoder's prefix, or at the top level as DeepSeek-V4's release names its layers.
        guard let root = [config.decoderPrefix + "layers.", "layers."].first(where: name.hasPrefix) else { return nil }
        return Int(name.dropFirst(root.count).prefix { $0.isNumber })
    }
}
