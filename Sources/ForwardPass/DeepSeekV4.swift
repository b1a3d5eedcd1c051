#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import StrictJSON

/// DeepSeek-V4 (config.json's model_type deepseek_v4) as transformers 5.23 computes a whole prompt in float32
/// with eager attention and no cache. What differs from the other models, each a piece of its own:
/// - the residual is `streams` (hc_mult) parallel copies of the hidden state; around the attention and around
///   the MoE block a hyper-connection (HyperConnection) collapses them into the block's input and mixes the
///   block's output back in; after the last layer the hyper head collapses them once more;
/// - attention (CompressedAttention, DeepSeekV4Attention.swift): one key=value head, sliding window, per-head sinks, rotary on the
///   last dims of each head in interleaved pairs, a grouped output projection, and on CSA / HCA layers entries
///   compressed from windows of tokens appended to the keys (chosen per query by a lightning indexer on CSA);
/// - the MoE block (MoELayer, router .sqrtSoftplus): hash routing by token id on the first layers, top-k on
///   the others, a shared expert, SwiGLU clamped at swiglu_limit.
/// Names are the release's (`layers.N.attn.wq_a.weight`, `embed.weight`, `hc_head_fn`, `head.weight`), or
/// what transformers' save_pretrained writes (the same under `model.`, with `model.embed_tokens.weight`,
/// `model.hc_head.hc_fn`, `model.norm.weight`, and `head.weight` or `lm_head.weight`).
struct DeepSeekV4 {
    let model: Transformer
    var reader: WeightReader { model.reader }
    var config: ModelConfig { model.config }
    var hidden: Int { model.hidden }
    var eps: Float { model.eps }
    /// hc_mult: parallel copies of the residual.
    let streams: Int
    let sinkhornIterations: Int
    let hcEps: Float
    let kinds: [DeepSeekV4Attention]
    let attention: CompressedAttention.Sizes
    /// "layers." (the release) or "model.layers." (transformers' save_pretrained).
    let layerRoot: String
    /// The release's name of a top-level tensor, or transformers'.
    let names: (embed: String, norm: String, head: String, hcHead: String)

    init(_ model: Transformer) throws(ForwardError) {
        self.model = model
        let config = model.config
        streams = config.int("hc_mult") ?? 4
        sinkhornIterations = config.int("hc_sinkhorn_iters") ?? 20
        hcEps = Float(config.field("hc_eps")?.doubleValue ?? 1e-6)
        // The release uses 4 streams and 20 Sinkhorn rounds; far more rounds change nothing but the time taken.
        guard streams >= 1, streams <= 64, sinkhornIterations >= 1, sinkhornIterations <= 10_000 else {
            throw ForwardError(.configInvalid, "config.json: hc_mult \(streams) must be 1 to 64 and hc_sinkhorn_iters \(sinkhornIterations) 1 to 10000")
        }
        guard let kinds = config.deepSeekV4Attention else {
            throw ForwardError(.configInvalid, "config.json: layer_types (or compress_ratios) must give one of \(DeepSeekV4Attention.allCases.map(\.rawValue).joined(separator: ", ")) (compress ratio 0, 4 or 128) for each of the \(model.layers) layers")
        }
        self.kinds = kinds
        attention = try CompressedAttention.Sizes(config, heads: model.heads, headDim: model.headDim)
        let release = model.reader.has("layers.0.attn_norm.weight")
        layerRoot = release ? "layers." : "model.layers."
        // transformers' save_pretrained writes the release's head.weight beside its own other names.
        let head = model.reader.has("head.weight") ? "head.weight" : "lm_head.weight"
        names = release ? ("embed.weight", "norm.weight", head, "hc_head_")
                        : ("model.embed_tokens.weight", "model.norm.weight", head, "model.hc_head.hc_")
    }

    func forward(_ ids: [Int]) throws(ForwardError) -> Transformer.Output {
        let t = ids.count, n = streams
        let embed = try reader.weight(names.embed)
        guard embed.rows == model.vocab, embed.cols == hidden else {
            throw ForwardError(.configInvalid, "\(names.embed) is [\(embed.rows), \(embed.cols)]; config.json says [\(model.vocab), \(hidden)]")
        }
        // Every stream starts as the token's embedding: [tokens][streams][hidden].
        var s = [Float](repeating: 0, count: t * n * hidden)
        for (i, id) in ids.enumerated() {
            guard id >= 0, id < model.vocab else { throw ForwardError(.inputOutOfRange, "token id \(id) is outside the vocabulary of \(model.vocab)") }
            s.withUnsafeMutableBufferPointer { buffer in
                embed.decodeRow(id, into: buffer.baseAddress! + i * n * hidden)
                for k in 1..<max(n, 1) {
                    (buffer.baseAddress! + (i * n + k) * hidden).update(from: buffer.baseAddress! + i * n * hidden, count: hidden)
                }
            }
        }
        var states = [s]
        var routing: [Int: [Routing]] = [:]
        var topK: [Int: Int] = [:]
        for l in 0..<model.layers {
            let p = layerRoot + "\(l)."
            let attn = try HyperConnection(self, prefix: p + "hc_attn_")
            var mix = try attn.weights(s, tokens: t)
            let x = try Math.rmsNorm(mix.collapsed, tokens: t, weight: try reader.vector(p + "attn_norm.weight"), eps: eps, name: p + "attn_norm.weight")
            let a = try CompressedAttention(self, layer: l).forward(x, tokens: t)
            s = attn.expand(a, into: s, with: mix, tokens: t)
            let ffn = try HyperConnection(self, prefix: p + "hc_ffn_")
            mix = try ffn.weights(s, tokens: t)
            let y = try Math.rmsNorm(mix.collapsed, tokens: t, weight: try reader.vector(p + "ffn_norm.weight"), eps: eps, name: p + "ffn_norm.weight")
            let block = try MoELayer(reader, config: config, layer: l)
            let r = try block.forward(y, tokens: t, ids: ids)
            routing[l] = r.routing
            topK[l] = block.topK
            s = ffn.expand(r.output, into: s, with: mix, tokens: t)
            states.append(s)
        }
        let collapsed = try hyperHead(s, tokens: t)
        let h = try Math.rmsNorm(collapsed, tokens: t, weight: try reader.vector(names.norm), eps: eps, name: names.norm)
        states[states.count - 1] = h
        let head = try reader.weight(names.head)
        return Transformer.Output(logits: try Math.linear(h, tokens: t, head, rows: model.vocab), hidden: states, routing: routing, topK: topK)
    }

    /// Each token's streams flattened and RMS-normalised without a weight, [tokens][streams x hidden].
    func flatNorm(_ s: [Float], tokens t: Int) throws(ForwardError) -> [Float] {
        try Math.rmsNorm(s, tokens: t, weight: [Float](repeating: 1, count: streams * hidden), eps: eps)
    }

    /// The hyper head: pre = sigmoid(hc_head_fn . norm(streams) x scale + base) + hc_eps, then sum_k pre_k x
    /// stream_k.
    func hyperHead(_ s: [Float], tokens t: Int) throws(ForwardError) -> [Float] {
        let n = streams
        let fn = try reader.weight(names.hcHead + "fn")
        let base = try reader.vector(names.hcHead + "base"), scale = try reader.vector(names.hcHead + "scale")
        guard base.count == n, scale.count == 1 else {
            throw ForwardError(.shapeMismatch, "\(names.hcHead)base has \(base.count) values and \(names.hcHead)scale \(scale.count); hc_mult \(n) and 1 are expected")
        }
        let mixes = try Math.linear(try flatNorm(s, tokens: t), tokens: t, fn, rows: n)
        var out = [Float](repeating: 0, count: t * hidden)
        for i in 0..<t {
            for k in 0..<n {
                let pre = Math.sigmoid(mixes[i * n + k] * scale[0] + base[k]) + hcEps
                for d in 0..<hidden { out[i * hidden + d] += pre * s[(i * n + k) * hidden + d] }
            }
        }
        return out
    }
}

/// A manifold-constrained hyper-connection (layers.N.hc_attn_* or hc_ffn_*: fn [(2 + n) n, n x hidden],
/// base [(2 + n) n], scale [3]). From each token's n normalised streams one linear map gives, per token:
/// pre = sigmoid(.) + hc_eps (how the streams collapse into the block's input), post = 2 sigmoid(.) (how the
/// block's output spreads back over them) and comb = softmax(.) + hc_eps, an n x n matrix made doubly
/// stochastic by Sinkhorn-Knopp (columns, then rows and columns again, hc_sinkhorn_iters in all) that mixes the
/// old streams: new_k = post_k x output + sum_j comb[j][k] x old_j.
struct HyperConnection {
    let n: Int
    let hidden: Int
    let fn: Weight
    let base: [Float]
    let scale: [Float]
    let iterations: Int
    let hcEps: Float
    let model: DeepSeekV4

    init(_ model: DeepSeekV4, prefix: String) throws(ForwardError) {
        self.model = model
        n = model.streams
        hidden = model.hidden
        fn = try model.reader.weight(prefix + "fn")
        base = try model.reader.vector(prefix + "base")
        scale = try model.reader.vector(prefix + "scale")
        iterations = model.sinkhornIterations
        hcEps = model.hcEps
        let width = (2 + n) * n
        guard fn.rows == width, fn.cols == n * hidden, base.count == width, scale.count == 3 else {
            throw ForwardError(.shapeMismatch, "\(prefix)fn is [\(fn.rows), \(fn.cols)], \(prefix)base \(base.count) and \(prefix)scale \(scale.count) values; hc_mult \(n) and hidden \(hidden) make them [\(width), \(n * hidden)], \(width) and 3")
        }
    }

    /// Per token: post [n], comb [n][n], and the streams collapsed by pre [hidden].
    struct Mix {
        var post: [Float]
        var comb: [Float]
        var collapsed: [Float]
    }

    func weights(_ s: [Float], tokens t: Int) throws(ForwardError) -> Mix {
        let width = (2 + n) * n
        let mixes = try Math.linear(try model.flatNorm(s, tokens: t), tokens: t, fn, rows: width)
        var mix = Mix(post: [Float](repeating: 0, count: t * n), comb: [Float](repeating: 0, count: t * n * n),
                      collapsed: [Float](repeating: 0, count: t * hidden))
        for i in 0..<t {
            let m = i * width
            for k in 0..<n {
                let pre = Math.sigmoid(mixes[m + k] * scale[0] + base[k]) + hcEps
                for d in 0..<hidden { mix.collapsed[i * hidden + d] += pre * s[(i * n + k) * hidden + d] }
                mix.post[i * n + k] = 2 * Math.sigmoid(mixes[m + n + k] * scale[1] + base[n + k])
            }
            var comb = [Float](repeating: 0, count: n * n)
            for r in 0..<n {
                let logits = (0..<n).map { c in mixes[m + 2 * n + r * n + c] * scale[2] + base[2 * n + r * n + c] }
                let top = logits.max()!
                let e = logits.map { expf($0 - top) }
                let z = e.reduce(0, +)
                for c in 0..<n { comb[r * n + c] = e[c] / z + hcEps }
            }
            Self.normaliseColumns(&comb, n, hcEps)
            for _ in 1..<iterations {
                Self.normaliseRows(&comb, n, hcEps)
                Self.normaliseColumns(&comb, n, hcEps)
            }
            for j in 0..<(n * n) { mix.comb[i * n * n + j] = comb[j] }
        }
        return mix
    }

    static func normaliseRows(_ m: inout [Float], _ n: Int, _ eps: Float) {
        for r in 0..<n {
            var sum: Float = 0
            for c in 0..<n { sum += m[r * n + c] }
            for c in 0..<n { m[r * n + c] /= sum + eps }
        }
    }

    static func normaliseColumns(_ m: inout [Float], _ n: Int, _ eps: Float) {
        for c in 0..<n {
            var sum: Float = 0
            for r in 0..<n { sum += m[r * n + c] }
            for r in 0..<n { m[r * n + c] /= sum + eps }
        }
    }

    /// new_k = post_k x output + sum_j comb[j][k] x old_j, for every token.
    func expand(_ output: [Float], into s: [Float], with mix: Mix, tokens t: Int) -> [Float] {
        var out = [Float](repeating: 0, count: s.count)
        for i in 0..<t {
            for k in 0..<n {
                let o = (i * n + k) * hidden
                let post = mix.post[i * n + k]
                for d in 0..<hidden {
                    var mixed: Float = 0
                    for j in 0..<n { mixed += mix.comb[(i * n + j) * n + k] * s[(i * n + j) * hidden + d] }
                    out[o + d] = post * output[i * hidden + d] + mixed
                }
            }
        }
        return out
    }
}
