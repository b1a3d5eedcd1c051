#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import StrictJSON

/// A whole decoder-only MoE model in float32 (for small models: every weight is read once): token
/// embeddings, per layer RMSNorm, attention (DeepSeek's MLA, or grouped-query attention with
/// Qwen2's q/k/v biases, Qwen3's and GLM-4.5's q/k norms per head, MiniMax-M2's over the whole projection, gpt-oss's
/// biases on every projection, sinks and sliding window) with rotary position embeddings (on part of each head for
/// GLM-4.5 and MiniMax-M2), RMSNorm, a dense or MoE feed-forward
/// block, then the final norm and the LM head. DeepSeek-V4, whose residual and attention differ throughout,
/// has its own forward pass (DeepSeekV4).
public struct Transformer {
    /// The architectures (config.json's model_type) verify runs.
    public static let modelTypes = ["deepseek_v3", "deepseek_v4", "glm4_moe", "gpt_oss", "minimax_m2", "mixtral", "qwen2_moe", "qwen3_moe"]

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

    /// `config` overrides the checkpoint's config.json.
    public init(_ checkpoint: Checkpoint, config override: ModelConfig? = nil) throws(ForwardError) {
        guard let config = override ?? checkpoint.config else { throw ForwardError(.configInvalid, "\(checkpoint.path): no config.json") }
        self.config = config
        reader = try WeightReader(checkpoint)
        type = config.architecture ?? ""
        guard Self.modelTypes.contains(type) else { throw Self.unsupported(type) }
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
        if type == "deepseek_v3" {
            let dims = ["qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "kv_lora_rank"].map { config.int($0) ?? 0 }
            guard dims.allSatisfy({ $0 >= 1 }), dims[1] % 2 == 0 else {
                throw ForwardError(.configInvalid, "config.json: qk_nope_head_dim, qk_rope_head_dim (even), v_head_dim and kv_lora_rank must be positive for MLA")
            }
        }
        eps = Float(config.field("rms_norm_eps")?.doubleValue ?? 1e-6)
        let rope = config.field("rope_parameters")?.objectValue ?? config.field("rope_scaling")?.objectValue
            ?? (type == "gpt_oss" ? Self.gptOssRope : nil)
        let theta = rope?["rope_theta"]?.doubleValue ?? config.field("rope_theta")?.doubleValue ?? (type == "gpt_oss" ? 150000 : 10000)
        ropeTheta = theta
        let kind = rope?["rope_type"]?.stringValue ?? rope?["type"]?.stringValue ?? "default"
        let rotaryDim = try Self.rotaryDim(config, type: type, rope: rope, headDim: headDim)
        self.rotaryDim = rotaryDim
        switch kind {
        case "default":
            invFreq = (0..<(rotaryDim / 2)).map { i in Float(1.0 / pow(theta, Double(Float(2 * i) / Float(rotaryDim)))) }
            attentionFactor = 1
            mlaScale = 1
        case "yarn":
            let yarn = try Yarn(rope!, base: theta, dim: rotaryDim,
                                maxPositions: config.int("max_position_embeddings"))
            invFreq = yarn.invFreq
            attentionFactor = yarn.attentionFactor
            mlaScale = yarn.mlaScale
        default:
            throw ForwardError(.unsupportedModel, "config.json: rope type \"\(kind)\" is not supported by whole-model verify (default and yarn are; use --layers)")
        }
    }

    /// How many leading dimensions of each query and key head are rotated: DeepSeek's qk_rope_head_dim; GLM-4.5's
    /// int(head_dim x partial_rotary_factor) (in rope_parameters, or at the top level as older config.json files
    /// have it; transformers' default for glm4_moe is 0.5); MiniMax-M2's the same, or its released config.json's
    /// legacy rotary_dim (transformers turns it into rotary_dim / head_dim), the whole head when neither is given;
    /// the whole head for the others.
    static func rotaryDim(_ config: ModelConfig, type: String, rope: JSONObject?, headDim: Int) throws(ForwardError) -> Int {
        switch type {
        case "deepseek_v3":
            return config.int("qk_rope_head_dim") ?? 0
        case "glm4_moe", "minimax_m2":
            let legacy = type == "minimax_m2" ? config.int("rotary_dim").map { Double($0) / Double(headDim) } : nil
            let factor = rope?["partial_rotary_factor"]?.doubleValue ?? config.field("partial_rotary_factor")?.doubleValue
                ?? legacy ?? (type == "glm4_moe" ? 0.5 : 1)
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
    }

    public func forward(_ ids: [Int]) throws(ForwardError) -> Output {
        if type == "deepseek_v4" { return try DeepSeekV4(self).forward(ids) }
        let t = ids.count
        let embed = try reader.weight("model.embed_tokens.weight")
        guard embed.rows == vocab, embed.cols == hidden else {
            throw ForwardError(.configInvalid, "model.embed_tokens.weight is [\(embed.rows), \(embed.cols)]; config.json says [\(vocab), \(hidden)]")
        }
        var h = [Float](repeating: 0, count: t * hidden)
        for (i, id) in ids.enumerated() {
            guard id >= 0, id < vocab else { throw ForwardError(.inputOutOfRange, "token id \(id) is outside the vocabulary of \(vocab)") }
            h.withUnsafeMutableBufferPointer { embed.decodeRow(id, into: $0.baseAddress! + i * hidden) }
        }
        var states = [h]
        var routing: [Int: [Routing]] = [:]
        var topK: [Int: Int] = [:]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            let x = try Math.rmsNorm(h, tokens: t, weight: try reader.vector(p + "input_layernorm.weight"), eps: eps, name: p + "input_layernorm.weight")
            let a = try type == "deepseek_v3" ? mla(x, tokens: t, layer: l) : gqa(x, tokens: t, layer: l)
            for i in h.indices { h[i] += a[i] }
            let y = try Math.rmsNorm(h, tokens: t, weight: try reader.vector(p + "post_attention_layernorm.weight"), eps: eps, name: p + "post_attention_layernorm.weight")
            let m: [Float]
            if MoELayer.routerWeightNames(layer: l).contains(where: reader.has) {
                let block = try MoELayer(reader, config: config, layer: l)
                let r = try block.forward(y, tokens: t)
                m = r.output
                routing[l] = r.routing
                topK[l] = block.topK
            } else {
                m = try Math.swiglu(y, tokens: t, gate: try reader.weight(p + "mlp.gate_proj.weight"),
                                up: try reader.weight(p + "mlp.up_proj.weight"), down: try reader.weight(p + "mlp.down_proj.weight"))
            }
            for i in h.indices { h[i] += m[i] }
            states.append(h)
        }
        h = try Math.rmsNorm(h, tokens: t, weight: try reader.vector("model.norm.weight"), eps: eps, name: "model.norm.weight")
        states[states.count - 1] = h
        // Tied embeddings are the output head whatever lm_head.weight the file also holds, as transformers ties them.
        let head = !tied && reader.has("lm_head.weight") ? try reader.weight("lm_head.weight") : embed
        return Output(logits: try Math.linear(h, tokens: t, head, rows: vocab), hidden: states, routing: routing, topK: topK)
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
    /// `sinks` (gpt-oss, one per head): a logit joining each softmax whose probability is then dropped, so
    /// that a token may attend to nothing much: w_j = exp(s_j) / (sum_j' exp(s_j') + exp(sink)).
    func attend(q: [Float], k: [Float], v: [Float], tokens: Int, heads: Int, kvHeads: Int, dq: Int, dv: Int, scale: Float,
                window: Int? = nil, sinks: [Float]? = nil) -> [Float] {
        var out = [Float](repeating: 0, count: tokens * heads * dv)
        let group = heads / kvHeads
        for hd in 0..<heads {
            let kh = hd / group
            for i in 0..<tokens {
                let first = window.map { max(0, i - $0 + 1) } ?? 0
                var scores = [Float](repeating: 0, count: i + 1)
                for j in first...i {
                    var s: Float = 0
                    for d in 0..<dq { s += q[(i * heads + hd) * dq + d] * k[(j * kvHeads + kh) * dq + d] }
                    scores[j] = s * scale
                }
                let sink = sinks?[hd]
                let m = max(scores[first...i].max()!, sink ?? -.infinity)
                var z: Float = sink.map { expf($0 - m) } ?? 0
                for j in first...i { scores[j] = expf(scores[j] - m); z += scores[j] }
                for j in first...i {
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
        let p = "model.layers.\(l).self_attn."
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
        var q = try project(x, "q_proj", rows: heads * headDim), k = try project(x, "k_proj", rows: kvHeads * headDim)
        let v = try project(x, "v_proj", rows: kvHeads * headDim)
        if type == "minimax_m2" {  // RMSNorm over each token's whole projection (weights [heads x head_dim]), then the split into heads
            q = try Math.rmsNorm(q, tokens: t, weight: try reader.vector(p + "q_norm.weight"), eps: eps, name: p + "q_norm.weight")
            k = try Math.rmsNorm(k, tokens: t, weight: try reader.vector(p + "k_norm.weight"), eps: eps, name: p + "k_norm.weight")
        } else if reader.has(p + "q_norm.weight") || config.field("use_qk_norm")?.boolValue == true {  // Qwen3, GLM-4.5: RMSNorm of each head
            q = try Math.rmsNorm(q, tokens: t * heads, weight: try reader.vector(p + "q_norm.weight"), eps: eps, name: p + "q_norm.weight")
            k = try Math.rmsNorm(k, tokens: t * kvHeads, weight: try reader.vector(p + "k_norm.weight"), eps: eps, name: p + "k_norm.weight")
        }
        q.withUnsafeMutableBufferPointer { qb in
            for i in 0..<t { for hd in 0..<heads { rope(qb.baseAddress! + (i * heads + hd) * headDim, rotaryDim, position: i, interleaved: false) } }
        }
        k.withUnsafeMutableBufferPointer { kb in
            for i in 0..<t { for hd in 0..<kvHeads { rope(kb.baseAddress! + (i * kvHeads + hd) * headDim, rotaryDim, position: i, interleaved: false) } }
        }
        let sinks = reader.has(p + "sinks") ? try reader.vector(p + "sinks") : nil
        if let sinks, sinks.count != heads {
            throw ForwardError(.shapeMismatch, "\(p)sinks has \(sinks.count) values for \(heads) heads")
        }
        let o = attend(q: q, k: k, v: v, tokens: t, heads: heads, kvHeads: kvHeads, dq: headDim, dv: headDim,
                       scale: 1 / Float(headDim).squareRoot(), window: try slidingWindow(layer: l), sinks: sinks)
        return try project(o, "o_proj", rows: hidden)
    }

    /// DeepSeek's multi-head latent attention.
    func mla(_ x: [Float], tokens t: Int, layer l: Int) throws(ForwardError) -> [Float] {
        let p = "model.layers.\(l).self_attn."
        guard let nope = config.int("qk_nope_head_dim"), let ropeDim = config.int("qk_rope_head_dim"),
              let vDim = config.int("v_head_dim"), let kvRank = config.int("kv_lora_rank") else {
            throw ForwardError(.configInvalid, "config.json: MLA needs qk_nope_head_dim, qk_rope_head_dim, v_head_dim and kv_lora_rank")
        }
        let qkDim = nope + ropeDim
        let interleaved = config.field("rope_interleave")?.boolValue ?? true
        var q: [Float]
        if reader.has(p + "q_a_proj.weight") {
            let qa = try Math.linear(x, tokens: t, try reader.weight(p + "q_a_proj.weight"))
            let qn = try Math.rmsNorm(qa, tokens: t, weight: try reader.vector(p + "q_a_layernorm.weight"), eps: 1e-6, name: p + "q_a_layernorm.weight")
            q = try Math.linear(qn, tokens: t, try reader.weight(p + "q_b_proj.weight"), rows: heads * qkDim)
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
                       scale: 1 / Float(qkDim).squareRoot() * mlaScale)
        return try Math.linear(o, tokens: t, try reader.weight(p + "o_proj.weight"), rows: hidden)
    }
}
