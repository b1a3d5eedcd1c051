#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import StrictJSON

/// A whole decoder-only MoE model in float32 (for small models: every weight is read once): token
/// embeddings, per layer RMSNorm, attention (DeepSeek's MLA, with DeepSeek-V3.2's and GLM-5's sparse selection of keys, or
/// grouped-query attention with
/// Qwen2's q/k/v biases, Qwen3's and GLM-4.5's q/k norms per head, MiniMax-M2's over the whole projection, gpt-oss's
/// biases on every projection, sinks and sliding window, Llama 4's NoPE layers, L2 q/k norm, temperature tuning and
/// chunked attention) with rotary position embeddings (on part of each head for GLM-4.5 and MiniMax-M2), RMSNorm, a
/// dense or MoE feed-forward block, then the final norm and the LM head. Qwen3-Next and Qwen3.5-MoE interleave Gated
/// DeltaNet layers (GatedDeltaNet) with gated attention (an output gate from q_proj), and their RMSNorms scale by
/// 1 + weight. DeepSeek-V4, whose residual and attention differ throughout, has its own forward pass (DeepSeekV4).
public struct Transformer {
    /// The architectures (config.json's model_type) verify runs.
    public static let modelTypes = ["deepseek_v3", "deepseek_v32", "deepseek_v4", "glm4_moe", "glm_moe_dsa", "gpt_oss", "llama4", "minimax_m2",
                                    "mixtral", "qwen2_moe", "qwen3_5_moe", "qwen3_moe", "qwen3_next"]
    /// The architectures whose attention is DeepSeek's multi-head latent attention.
    static let latentAttentionTypes: Set<String> = ["deepseek_v3", "deepseek_v32", "glm_moe_dsa"]
    /// The architectures with DeepSeek Sparse Attention (MLA over the keys an indexer selects).
    static let sparseAttentionTypes: Set<String> = ["deepseek_v32", "glm_moe_dsa"]
    /// The hybrid architectures: linear-attention layers, gated attention, (1 + weight) RMSNorms.
    static let hybridTypes: Set<String> = ["qwen3_next", "qwen3_5_moe"]

    /// Refuses a config.json whose sizes no model has (ModelConfig.maximumSize), before any is multiplied or allocated.
    static func checkSizes(_ config: ModelConfig) throws(ForwardError) {
        if let (key, value, limit) = config.oversizedField {
            throw ForwardError(.configInvalid, "config.json: \(key) is \(value); moetool runs sizes up to \(limit)")
        }
    }

    static func unsupported(_ type: String) -> ForwardError {
        ForwardError(.unsupportedModel, "config.json: model_type \"\(type)\" is not one verify runs (\(modelTypes.joined(separator: ", ")))")
    }

    public let config: ModelConfig
    let reader: WeightReader
    public let hidden: Int
    public let vocab: Int
    public let layers: Int
    /// tie_word_embeddings: the embeddings are the output head.
    let tied: Bool
    let eps: Float
    let heads: Int
    let kvHeads: Int
    let headDim: Int
    let ropeTheta: Double
    let type: String
    /// config.decoderPrefix: "model.", Llama 4's "language_model.model." or Qwen3.5-MoE's "model.language_model.".
    let prefix: String
    /// The output head's name (ModelConfig.headName): "lm_head.weight", or Llama 4's "language_model.lm_head.weight".
    let headName: String
    /// DeepSeek-V3.2's and GLM-5's sparse attention (DSA): the indexer that picks each query's keys.
    let sparse: SparseAttention?
    /// Qwen3-Next's and Qwen3.5's RMSNorms (Qwen3NextRMSNorm) scale by 1 + weight (weights stored around 0).
    let zeroCentredNorms: Bool
    /// The linear-attention mixer, for a model that has such layers.
    let deltaNet: GatedDeltaNet?

    /// `config` overrides the checkpoint's config.json.
    public init(_ checkpoint: Checkpoint, config override: ModelConfig? = nil) throws(ForwardError) {
        guard let config = override ?? checkpoint.config else { throw ForwardError(.configInvalid, "\(checkpoint.path): no config.json") }
        try Self.checkSizes(config)
        self.config = config
        reader = try WeightReader(checkpoint)
        type = config.architecture ?? ""
        guard Self.modelTypes.contains(type) else { throw Self.unsupported(type) }
        prefix = config.decoderPrefix
        headName = config.headName
        zeroCentredNorms = Self.hybridTypes.contains(type)
        guard let h = config.hiddenSize, let v = config.vocabSize, let n = config.numHiddenLayers,
              let heads = config.int("num_attention_heads") else {
            throw ForwardError(.configInvalid, "config.json: hidden_size, vocab_size, num_hidden_layers and num_attention_heads are needed")
        }
        // The experts and MLPs are SwiGLU: a model with another activation would be computed wrongly, so refuse it.
        // (gpt-oss's experts have their own clamped SwiGLU, whatever hidden_act says.)
        if type != "gpt_oss", let act = config.string("hidden_act"), act != "silu" && act != "swish" {
            throw ForwardError(.unsupportedModel, "config.json: hidden_act \"\(act)\" is not one verify runs (silu)")
        }
        tied = config.tieWordEmbeddings ?? false
        let kv = config.int("num_key_value_heads") ?? heads
        guard h >= 1, v >= 1, n >= 1, n <= 4096, heads >= 1, kv >= 1, heads % kv == 0 else {
            throw ForwardError(.configInvalid, "config.json: hidden_size \(h), vocab_size \(v), num_hidden_layers \(n), num_attention_heads \(heads) and num_key_value_heads \(kv) must be positive, with the heads a multiple of the key/value heads")
        }
        hidden = h
        vocab = v
        layers = n
        self.heads = heads
        kvHeads = kv
        headDim = config.int("head_dim") ?? h / heads
        guard headDim >= 2, headDim % 2 == 0 else { throw ForwardError(.configInvalid, "config.json: head_dim \(headDim) must be a positive even number (rotary pairs)") }
        if Self.latentAttentionTypes.contains(type) {
            let dims = ["qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_lora_rank"].map { config.int($0) ?? 0 }
            guard dims.allSatisfy({ $0 >= 1 }), dims[1] % 2 == 0 else {
                throw ForwardError(.configInvalid, "config.json: qk_nope_head_dim, qk_rope_head_dim (even), v_head_dim and kv_lora_rank must be positive for MLA")
            }
        }
        eps = Float(config.field("rms_norm_eps")?.doubleValue ?? 1e-6)
        deltaNet = (0..<n).contains(where: config.isLinearAttentionLayer) ? try GatedDeltaNet(config) : nil
        let rope = config.field("rope_parameters")?.objectValue ?? config.field("rope_scaling")?.objectValue
            ?? (type == "gpt_oss" ? Self.gptOssRope : nil)
        let theta = rope?["rope_theta"]?.doubleValue ?? config.field("rope_theta")?.doubleValue ?? (type == "gpt_oss" ? 150000 : 10000)
        ropeTheta = theta
        let kind = rope?["rope_type"]?.stringValue ?? rope?["type"]?.stringValue ?? "default"
        let rotaryDim = try Self.rotaryDim(config, type: type, rope: rope, headDim: headDim)
        self.rotaryDim = rotaryDim
        sparse = Self.sparseAttentionTypes.contains(type) ? try SparseAttention(config, type: type, layers: n, rotaryDim: rotaryDim) : nil
        switch kind {
        case "default":
            invFreq = (0..<(rotaryDim / 2)).map { i in Float(1.0 / pow(theta, Double(Float(2 * i) / Float(rotaryDim)))) }
            attentionFactor = 1
            mlaScale = 1
        case "llama3":
            invFreq = try Self.llama3Frequencies(rope!, base: theta, dim: rotaryDim)
            attentionFactor = 1
            mlaScale = 1
        case "yarn":
            let yarn = try Yarn(rope!, base: theta, dim: rotaryDim,
                                maxPositions: config.int("max_position_embeddings"))
            invFreq = yarn.invFreq
            attentionFactor = yarn.attentionFactor
            mlaScale = yarn.mlaScale
        default:
            throw ForwardError(.unsupportedModel, "config.json: rope type \"\(kind)\" is not supported by whole-model verify (default, llama3 and yarn are; use --layers)")
        }
    }

    /// How many leading dimensions of each query and key head are rotated: DeepSeek's qk_rope_head_dim; GLM-4.5's
    /// int(head_dim x partial_rotary_factor) (in rope_parameters, or at the top level as older config.json files
    /// have it; transformers' default for glm4_moe is 0.5, for qwen3_next and qwen3_5_moe 0.25); MiniMax-M2's the same, or its released config.json's
    /// legacy rotary_dim (transformers turns it into rotary_dim / head_dim), the whole head when neither is given;
    /// the whole head for the others.
    static func rotaryDim(_ config: ModelConfig, type: String, rope: JSONObject?, headDim: Int) throws(ForwardError) -> Int {
        switch type {
        case "deepseek_v3", "deepseek_v32", "glm_moe_dsa":
            return config.int("qk_rope_head_dim") ?? 0
        case "glm4_moe", "minimax_m2", "qwen3_next", "qwen3_5_moe":
            let legacy = type == "minimax_m2" ? config.int("rotary_dim").map { Double($0) / Double(headDim) } : nil
            let fallback: Double = ["glm4_moe": 0.5, "qwen3_next": 0.25, "qwen3_5_moe": 0.25][type] ?? 1
            let factor = rope?["partial_rotary_factor"]?.doubleValue ?? config.field("partial_rotary_factor")?.doubleValue
                ?? legacy ?? fallback
            let dim = factor > 0 && factor <= 1 ? Int(Double(headDim) * factor) : 0
            guard dim >= 2, dim % 2 == 0 else {
                throw ForwardError(.configInvalid, "config.json: partial_rotary_factor \(factor) of head_dim \(headDim) must leave a positive even number of rotary dimensions")
            }
            return dim
        default:
            return headDim
        }
    }

    /// gpt-oss's rope when config.json names none (transformers' GptOssConfig default; its theta is 150000).
    static let gptOssRope = JSONObject([("rope_type", .string("yarn")), ("factor", .double(32)), ("beta_fast", .double(32)),
                                        ("beta_slow", .double(1)), ("truncate", .bool(false)),
                                        ("original_max_position_embeddings", .double(4096))])

    /// Rotary inverse frequencies (rotaryDim / 2), the factor cos and sin are multiplied by, and (DeepSeek) the
    /// extra factor on the attention softmax scale.
    let rotaryDim: Int
    let invFreq: [Float]
    let attentionFactor: Float
    let mlaScale: Float

    /// Llama 3.1's rope scaling (Llama 4's too), in float32 as transformers computes it: a frequency whose wavelength
    /// 2 pi / f is longer than original_max_position_embeddings / low_freq_factor is divided by `factor`, one shorter
    /// than original / high_freq_factor is kept, and between the two it is blended,
    /// (1 - s) f / factor + s f with s = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor).
    static func llama3Frequencies(_ p: JSONObject, base: Double, dim: Int) throws(ForwardError) -> [Float] {
        guard let factor = p["factor"]?.doubleValue, let low = p["low_freq_factor"]?.doubleValue,
              let high = p["high_freq_factor"]?.doubleValue, let original = p["original_max_position_embeddings"]?.doubleValue,
              factor > 0, low > 0, high > 0, original > 0 else {
            throw ForwardError(.configInvalid, "config.json: llama3 rope needs positive factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
        }
        let (lowWavelength, highWavelength) = (Float(original / low), Float(original / high))
        return (0..<(dim / 2)).map { i in
            let f = 1 / powf(Float(base), Float(2 * i) / Float(dim))
            let wavelength = 2 * Float.pi / f
            if wavelength < highWavelength { return f }
            if wavelength > lowWavelength { return f / Float(factor) }
            let s = (Float(original) / wavelength - Float(low)) / Float(high - low)
            return (1 - s) * f / Float(factor) + s * f
        }
    }

    /// YaRN as transformers computes it: frequencies blended between interpolated (divided by
    /// `factor`) and extrapolated along a linear ramp over the correction range of
    /// beta_fast/beta_slow rotations; cos and sin scaled by the attention factor
    /// (mscale / mscale_all_dim); DeepSeek's softmax scale times mscale(factor, mscale_all_dim)^2.
    struct Yarn {
        let invFreq: [Float]
        let attentionFactor: Float
        let mlaScale: Float

        init(_ p: JSONObject, base: Double, dim: Int, maxPositions: Int?) throws(ForwardError) {
            guard let original = p["original_max_position_embeddings"]?.doubleValue else {
                throw ForwardError(.configInvalid, "config.json: yarn rope needs original_max_position_embeddings")
            }
            let factor = p["factor"]?.doubleValue ?? (maxPositions.map { Double($0) / original } ?? 1)
            func mscale(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            let m = p["mscale"]?.doubleValue, mAll = p["mscale_all_dim"]?.doubleValue
            if let a = p["attention_factor"]?.doubleValue {
                attentionFactor = Float(a)
            } else if let m, let mAll, m != 0, mAll != 0 {
                attentionFactor = Float(mscale(factor, m) / mscale(factor, mAll))
            } else {
                attentionFactor = Float(mscale(factor))
            }
            if let mAll, mAll != 0 {
                let s = mscale(factor, mAll)
                mlaScale = Float(s * s)
            } else {
                mlaScale = 1
            }
            let fast = p["beta_fast"]?.doubleValue ?? 32, slow = p["beta_slow"]?.doubleValue ?? 1
            func correction(_ rotations: Double) -> Double {
                Double(dim) * log(original / (rotations * 2 * .pi)) / (2 * log(base))
            }
            let truncate = p["truncate"]?.boolValue ?? true
            var low = correction(fast), high = correction(slow)
            if truncate { low = low.rounded(.down); high = high.rounded(.up) }
            low = max(low, 0)
            high = min(high, Double(dim - 1))
            if low == high { high += 0.001 }
            invFreq = (0..<(dim / 2)).map { i in
                let posFreq = Float(pow(base, Double(Float(2 * i) / Float(dim))))
                let extrapolation = 1 / posFreq, interpolation = 1 / (Float(factor) * posFreq)
                let ramp = min(max((Float(i) - Float(low)) / Float(high - low), 0), 1)
                let keep = 1 - ramp
                return interpolation * (1 - keep) + extrapolation * keep
            }
        }
    }

    public struct Output {
        public var logits: [Float]
        /// After the embeddings, then after each layer (the last one after the final norm, as
        /// transformers reports it).
        public var hidden: [[Float]]
        /// Each MoE layer's routing.
        public var routing: [Int: [Routing]]
        /// Each MoE layer's experts per token.
        public var topK: [Int: Int] = [:]
        /// DSA: each layer's keys per query (ascending), as its indexer chose them (or, for a layer sharing
        /// another's choice, as it reused them).
        public var keys: [Int: [[Int]]] = [:]
    }

    public func forward(_ ids: [Int]) throws(ForwardError) -> Output {
        if type == "deepseek_v4" { return try DeepSeekV4(self).forward(ids) }
        let t = ids.count
        let embed = try reader.weight(prefix + "embed_tokens.weight")
        guard embed.rows == vocab, embed.cols == hidden else {
            throw ForwardError(.configInvalid, "\(prefix)embed_tokens.weight is [\(embed.rows), \(embed.cols)]; config.json says [\(vocab), \(hidden)]")
        }
        var h = [Float](repeating: 0, count: t * hidden)
        for (i, id) in ids.enumerated() {
            guard id >= 0, id < vocab else { throw ForwardError(.inputOutOfRange, "token id \(id) is outside the vocabulary of \(vocab)") }
            h.withUnsafeMutableBufferPointer { embed.decodeRow(id, into: $0.baseAddress! + i * hidden) }
        }
        var states = [h]
        var routing: [Int: [Routing]] = [:]
        var topK: [Int: Int] = [:]
        var keys: [Int: [[Int]]] = [:]
        for l in 0..<layers {
            let p = prefix + "layers.\(l)."
            let x = try norm(h, tokens: t, p + "input_layernorm.weight")
            let a: [Float]
            if let deltaNet, config.isLinearAttentionLayer(l) {
                a = try deltaNet.forward(x, tokens: t, reader: reader, prefix: p + "linear_attn.", hidden: hidden, eps: eps)
            } else if Self.latentAttentionTypes.contains(type) {
                let previous = l > 0 ? keys[l - 1] : nil
                (a, keys[l]) = try mla(x, tokens: t, layer: l, previousKeys: previous)
            } else {
                a = try gqa(x, tokens: t, layer: l)
            }
            for i in h.indices { h[i] += a[i] }
            let y = try norm(h, tokens: t, p + "post_attention_layernorm.weight")
            let m: [Float]
            // Llama 4's config.json says which layers are MoE (moe_layers): one without its router is refused, not run dense.
            let moe = type == "llama4" ? config.isMoELayer(l) == true
                : MoELayer.routerWeightNames(layer: l, prefix: prefix).contains(where: reader.has)
            if moe {
                let block = try MoELayer(reader, config: config, layer: l)
                let r = try block.forward(y, tokens: t)
                m = r.output
                routing[l] = r.routing
                topK[l] = block.topK
            } else {
                let mlp = p + (type == "llama4" ? "feed_forward." : "mlp.")
                m = try Math.swiglu(y, tokens: t, gate: try reader.weight(mlp + "gate_proj.weight"),
                                up: try reader.weight(mlp + "up_proj.weight"), down: try reader.weight(mlp + "down_proj.weight"))
            }
            for i in h.indices { h[i] += m[i] }
            states.append(h)
        }
        h = try norm(h, tokens: t, prefix + "norm.weight")
        states[states.count - 1] = h
        // Tied embeddings are the output head whatever lm_head.weight the file also holds, as transformers ties them.
        let head = !tied && reader.has(headName) ? try reader.weight(headName) : embed
        return Output(logits: try Math.linear(h, tokens: t, head, rows: vocab), hidden: states, routing: routing, topK: topK, keys: keys)
    }

    /// RMSNorm of each token of `x` with the weight `name` (plus one for the zero-centred norms).
    func norm(_ x: [Float], tokens: Int, _ name: String) throws(ForwardError) -> [Float] {
        let weight = try reader.vector(name)
        return try Math.rmsNorm(x, tokens: tokens, weight: zeroCentredNorms ? weight.map { 1 + $0 } : weight, eps: eps, name: name)
    }

    /// cos and sin of position p for rotary frequency i (times the attention factor).
    func rotation(_ p: Int, _ i: Int, _ dim: Int) -> (Float, Float) {
        let angle = Float(p) * invFreq[i]
        return (cos(angle) * attentionFactor, sin(angle) * attentionFactor)
    }

    /// Rotates the first `dim` values at `v` for position `p` (the rest of a partially rotated head stays as it
    /// is): pairs (i, i + dim/2), or, interleaved,
    /// (2i, 2i + 1) written back as [even rotated..., odd rotated...] (DeepSeek's layout).
    func rope(_ v: UnsafeMutablePointer<Float>, _ dim: Int, position p: Int, interleaved: Bool) {
        let half = dim / 2
        var tmp = [Float](repeating: 0, count: dim)
        for i in 0..<half {
            let (c, s) = rotation(p, i, dim)
            let (x1, x2) = interleaved ? (v[2 * i], v[2 * i + 1]) : (v[i], v[i + half])
            tmp[i] = x1 * c - x2 * s
            tmp[i + half] = x2 * c + x1 * s
        }
        for i in 0..<dim { v[i] = tmp[i] }
    }

    /// Causal attention of `q` (tokens x heads x dq) over `k` (tokens x kvHeads x dq) and `v`
    /// (tokens x kvHeads x dv), softmax in float32; returns tokens x heads x dv.
    /// `window`: token i sees only tokens j > i - window (a sliding-window layer).
    /// `chunk`: token i sees only the tokens of its own chunk of that many, j >= i - i mod chunk (Llama 4's local
    /// attention).
    /// `keys` (DSA): keys[i] are the keys token i attends to (ascending, each <= i), instead of all of them.
    /// `sinks` (gpt-oss, one per head): a logit joining each softmax whose probability is then dropped, so
    /// that a token may attend to nothing much: w_j = exp(s_j) / (sum_j' exp(s_j') + exp(sink)).
    func attend(q: [Float], k: [Float], v: [Float], tokens: Int, heads: Int, kvHeads: Int, dq: Int, dv: Int, scale: Float,
                window: Int? = nil, chunk: Int? = nil, keys: [[Int]]? = nil, sinks: [Float]? = nil) -> [Float] {
        var out = [Float](repeating: 0, count: tokens * heads * dv)
        let group = heads / kvHeads
        for hd in 0..<heads {
            let kh = hd / group
            for i in 0..<tokens {
                let first = max(window.map { max(0, i - $0 + 1) } ?? 0, chunk.map { i - i % $0 } ?? 0)
                let visible = keys?[i] ?? Array(first...i)
                var scores = [Float](repeating: 0, count: i + 1)
                for j in visible {
                    var s: Float = 0
                    for d in 0..<dq { s += q[(i * heads + hd) * dq + d] * k[(j * kvHeads + kh) * dq + d] }
                    scores[j] = s * scale
                }
                let sink = sinks?[hd]
                let m = max(visible.map { scores[$0] }.max()!, sink ?? -.infinity)
                var z: Float = sink.map { expf($0 - m) } ?? 0
                for j in visible { scores[j] = expf(scores[j] - m); z += scores[j] }
                for j in visible {
                    let w = scores[j] / z
                    for d in 0..<dv { out[(i * heads + hd) * dv + d] += w * v[(j * kvHeads + kh) * dv + d] }
                }
            }
        }
        return out
    }

    /// Layer `l`'s sliding window: config.json's sliding_window when layer_types says "sliding_attention".
    func slidingWindow(layer l: Int) throws(ForwardError) -> Int? {
        guard let types = config.field("layer_types")?.arrayValue, l < types.count,
              types[l].stringValue == "sliding_attention" else { return nil }
        guard let w = config.int("sliding_window"), w >= 1 else {
            throw ForwardError(.configInvalid, "config.json: layer \(l) is a sliding_attention layer, but sliding_window is not a positive integer")
        }
        return w
    }

    func gqa(_ x: [Float], tokens t: Int, layer l: Int) throws(ForwardError) -> [Float] {
        let p = prefix + "layers.\(l).self_attn."
        // attention_bias: q/k/v have biases (GLM-4.5's o_proj has none; gpt-oss's has one, found by name).
        let qkvBias = config.field("attention_bias")?.boolValue == true
        func project(_ x: [Float], _ name: String, rows: Int) throws(ForwardError) -> [Float] {
            var y = try Math.linear(x, tokens: t, try reader.weight(p + name + ".weight"), rows: rows)
            if reader.has(p + name + ".bias") || (qkvBias && name != "o_proj") {
                let b = try reader.vector(p + name + ".bias")
                guard b.count == rows else { throw ForwardError(.shapeMismatch, "\(p)\(name).bias has \(b.count) values for \(rows) outputs") }
                Math.addBias(&y, b)
            }
            return y
        }
        var q: [Float], gate: [Float]?
        if Self.hybridTypes.contains(type) {  // q_proj gives each head's query, then its output gate
            (q, gate) = Self.splitHalves(try project(x, "q_proj", rows: 2 * heads * headDim), rows: t * heads, width: headDim)
        } else {
            (q, gate) = (try project(x, "q_proj", rows: heads * headDim), nil)
        }
        var k = try project(x, "k_proj", rows: kvHeads * headDim)
        let v = try project(x, "v_proj", rows: kvHeads * headDim)
        if type == "minimax_m2" {  // RMSNorm over each token's whole projection (weights [heads x head_dim]), then the split into heads
            q = try Math.rmsNorm(q, tokens: t, weight: try reader.vector(p + "q_norm.weight"), eps: eps, name: p + "q_norm.weight")
            k = try Math.rmsNorm(k, tokens: t, weight: try reader.vector(p + "k_norm.weight"), eps: eps, name: p + "k_norm.weight")
        } else if type != "llama4", reader.has(p + "q_norm.weight") || config.field("use_qk_norm")?.boolValue == true || Self.hybridTypes.contains(type) {
            // Qwen3, GLM-4.5, Qwen3-Next (always): RMSNorm of each head
            q = try norm(q, tokens: t * heads, p + "q_norm.weight")
            k = try norm(k, tokens: t * kvHeads, p + "k_norm.weight")
        }
        let llama4 = type == "llama4" ? try Llama4Attention(config, layer: l) : nil
        if llama4?.rotary ?? true {
            // Llama 4 rotates (2i, 2i + 1) pairs as complex numbers; they come back de-interleaved, a permutation of
            // each head's dimensions that q and k share, so no q.k (nor their L2 norms) changes.
            let pairs = llama4 != nil
            q.withUnsafeMutableBufferPointer { qb in
                for i in 0..<t { for hd in 0..<heads { rope(qb.baseAddress! + (i * heads + hd) * headDim, rotaryDim, position: i, interleaved: pairs) } }
            }
            k.withUnsafeMutableBufferPointer { kb in
                for i in 0..<t { for hd in 0..<kvHeads { rope(kb.baseAddress! + (i * kvHeads + hd) * headDim, rotaryDim, position: i, interleaved: pairs) } }
            }
        }
        if let llama4 {
            try llama4.normalizeAndTune(q: &q, k: &k, tokens: t, heads: heads, kvHeads: kvHeads, headDim: headDim, eps: eps)
        }
        let sinks = reader.has(p + "sinks") ? try reader.vector(p + "sinks") : nil
        if let sinks, sinks.count != heads {
            throw ForwardError(.shapeMismatch, "\(p)sinks has \(sinks.count) values for \(heads) heads")
        }
        var o = attend(q: q, k: k, v: v, tokens: t, heads: heads, kvHeads: kvHeads, dq: headDim, dv: headDim,
                       scale: 1 / Float(headDim).squareRoot(), window: try slidingWindow(layer: l), chunk: llama4?.chunk, sinks: sinks)
        if let gate { for i in o.indices { o[i] *= Math.sigmoid(gate[i]) } }
        return try project(o, "o_proj", rows: hidden)
    }

    /// Rows of 2 x `width` values split into their first halves and their second halves (rows x width each).
    static func splitHalves(_ x: [Float], rows: Int, width: Int) -> ([Float], [Float]) {
        var first = [Float](repeating: 0, count: rows * width), second = first
        for r in 0..<rows {
            for d in 0..<width {
                first[r * width + d] = x[r * 2 * width + d]
                second[r * width + d] = x[r * 2 * width + width + d]
            }
        }
        return (first, second)
    }

    /// What Llama 4's attention does in layer `layer` besides grouped-query attention (Llama4TextAttention): rotary
    /// layers (no_rope_layers[l] = 1; without the list every no_rope_layer_interval-th layer, default 4, is NoPE) L2-normalise
    /// each query and key head after the rotation when use_qk_norm, and attend within chunks of attention_chunk_size
    /// when layer_types says "chunked_attention" (the rotary layers, when layer_types is absent); NoPE layers see
    /// the whole sequence and, with attn_temperature_tuning, scale the query at position p by
    /// log1p(floor((p + 1) / floor_scale)) x attn_scale + 1.
    struct Llama4Attention {
        let rotary: Bool
        let qkNorm: Bool
        let chunk: Int?
        /// floor_scale and attn_scale, when the layer's queries are scaled.
        let temperature: (floor: Float, scale: Float)?

        init(_ c: ModelConfig, layer l: Int) throws(ForwardError) {
            let list = c.field("no_rope_layers")?.arrayValue ?? []
            if list.isEmpty {
                let interval = c.int("no_rope_layer_interval") ?? 4
                guard interval >= 1 else { throw ForwardError(.configInvalid, "config.json: no_rope_layer_interval must be positive") }
                rotary = (l + 1) % interval != 0
            } else {
                guard l < list.count, let flag = list[l].uint64Value, flag <= 1 else {
                    throw ForwardError(.configInvalid, "config.json: no_rope_layers has no 0 or 1 for layer \(l)")
                }
                rotary = flag == 1
            }
            qkNorm = rotary && (c.field("use_qk_norm")?.boolValue ?? true)
            let types = c.field("layer_types")?.arrayValue
            let chunked = types.map { l < $0.count && $0[l].stringValue == "chunked_attention" } ?? rotary
            if chunked {
                guard let size = c.int("attention_chunk_size"), size >= 1 else {
                    throw ForwardError(.configInvalid, "config.json: layer \(l) is a chunked_attention layer, but attention_chunk_size is not a positive integer")
                }
                chunk = size
            } else {
                chunk = nil
            }
            // The released config.json says `"attn_temperature_tuning": 4`: a number counts as on unless it is 0.
            let tuning = c.field("attn_temperature_tuning")
            if !rotary && (tuning?.boolValue ?? tuning?.doubleValue.map { $0 != 0 } ?? true) {
                let floor = c.field("floor_scale")?.doubleValue ?? 8192, scale = c.field("attn_scale")?.doubleValue ?? 0.1
                guard floor > 0 else { throw ForwardError(.configInvalid, "config.json: floor_scale must be positive") }
                temperature = (Float(floor), Float(scale))
            } else {
                temperature = nil
            }
        }

        /// The L2 norm (x / sqrt(mean(x^2) + eps), no weight) of each head, then the temperature of each query.
        func normalizeAndTune(q: inout [Float], k: inout [Float], tokens t: Int, heads: Int, kvHeads: Int, headDim: Int,
                              eps: Float) throws(ForwardError) {
            if qkNorm {
                let ones = [Float](repeating: 1, count: headDim)
                q = try Math.rmsNorm(q, tokens: t * heads, weight: ones, eps: eps)
                k = try Math.rmsNorm(k, tokens: t * kvHeads, weight: ones, eps: eps)
            }
            guard let temperature else { return }
            for i in 0..<t {
                let s = log1pf(((Float(i) + 1) / temperature.floor).rounded(.down)) * temperature.scale + 1
                for j in (i * heads * headDim)..<((i + 1) * heads * headDim) { q[j] *= s }
            }
        }
    }

    /// DeepSeek's multi-head latent attention; with DSA, over the keys the layer's indexer selects (or, on a layer
    /// without one, the `previousKeys` of the layer before). Returns the output and, with DSA, the keys per query.
    func mla(_ x: [Float], tokens t: Int, layer l: Int, previousKeys: [[Int]]?) throws(ForwardError) -> ([Float], [[Int]]?) {
        let p = prefix + "layers.\(l).self_attn."
        guard let nope = config.int("qk_nope_head_dim"), let ropeDim = config.int("qk_rope_head_dim"),
              let vDim = config.int("v_head_dim"), let kvRank = config.int("kv_lora_rank") else {
            throw ForwardError(.configInvalid, "config.json: MLA needs qk_nope_head_dim, qk_rope_head_dim, v_head_dim and kv_lora_rank")
        }
        let qkDim = nope + ropeDim
        // DSA models' MLA rotary is always interleaved (transformers ignores any rope_interleave for them).
        let interleaved = sparse != nil || (config.field("rope_interleave")?.boolValue ?? true)
        var q: [Float]
        var keys: [[Int]]? = nil
        if reader.has(p + "q_a_proj.weight") || sparse != nil {  // the indexer reads the query latent
            let qa = try Math.linear(x, tokens: t, try reader.weight(p + "q_a_proj.weight"))
            let qn = try Math.rmsNorm(qa, tokens: t, weight: try reader.vector(p + "q_a_layernorm.weight"), eps: 1e-6, name: p + "q_a_layernorm.weight")
            q = try Math.linear(qn, tokens: t, try reader.weight(p + "q_b_proj.weight"), rows: heads * qkDim)
            if let sparse {
                keys = sparse.sharedLayers.contains(l) ? previousKeys
                    : try sparseSelection(sparse, x: x, queryLatent: qn, tokens: t, layer: l)
            }
        } else {
            q = try Math.linear(x, tokens: t, try reader.weight(p + "q_proj.weight"), rows: heads * qkDim)
        }
        let compressed = try Math.linear(x, tokens: t, try reader.weight(p + "kv_a_proj_with_mqa.weight"), rows: kvRank + ropeDim)
        let width = kvRank + ropeDim
        var latent = [Float](repeating: 0, count: t * kvRank)
        var kRot = [Float](repeating: 0, count: t * ropeDim)
        for i in 0..<t {
            for d in 0..<kvRank { latent[i * kvRank + d] = compressed[i * width + d] }
            for d in 0..<ropeDim { kRot[i * ropeDim + d] = compressed[i * width + kvRank + d] }
        }
        latent = try Math.rmsNorm(latent, tokens: t, weight: try reader.vector(p + "kv_a_layernorm.weight"), eps: 1e-6, name: p + "kv_a_layernorm.weight")
        let kv = try Math.linear(latent, tokens: t, try reader.weight(p + "kv_b_proj.weight"), rows: heads * (nope + vDim))
        q.withUnsafeMutableBufferPointer { qb in
            for i in 0..<t { for hd in 0..<heads { rope(qb.baseAddress! + (i * heads + hd) * qkDim + nope, ropeDim, position: i, interleaved: interleaved) } }
        }
        kRot.withUnsafeMutableBufferPointer { kb in
            for i in 0..<t { rope(kb.baseAddress! + i * ropeDim, ropeDim, position: i, interleaved: interleaved) }
        }
        var k = [Float](repeating: 0, count: t * heads * qkDim)
        var v = [Float](repeating: 0, count: t * heads * vDim)
        for i in 0..<t {
            for hd in 0..<heads {
                let src = (i * heads + hd) * (nope + vDim)
                for d in 0..<nope { k[(i * heads + hd) * qkDim + d] = kv[src + d] }
                for d in 0..<ropeDim { k[(i * heads + hd) * qkDim + nope + d] = kRot[i * ropeDim + d] }
                for d in 0..<vDim { v[(i * heads + hd) * vDim + d] = kv[src + nope + d] }
            }
        }
        let o = attend(q: q, k: k, v: v, tokens: t, heads: heads, kvHeads: heads, dq: qkDim, dv: vDim,
                       scale: 1 / Float(qkDim).squareRoot() * mlaScale, keys: keys)
        return (try Math.linear(o, tokens: t, try reader.weight(p + "o_proj.weight"), rows: hidden), keys)
    }
}
