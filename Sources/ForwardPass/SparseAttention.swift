import Checkpoint

/// DeepSeek Sparse Attention (DSA, DeepSeek-V3.2; GLM-5's variant): in each layer a small "lightning indexer" scores
/// every earlier token for each query, and MLA then attends only to the `topK` best of them. The indexer's scores,
/// as transformers computes them (its float32 path; DeepSeek's own kernels quantize q and k to FP8 after a Hadamard
/// rotation, which transformers leaves out since the rotation keeps dot products):
///
///     q[i, h]   = wq_b(query latent i)[h]                       (index_n_heads x index_head_dim)
///     k[j]      = LayerNorm(wk(x_j))                            (one key head, weight and bias, eps 1e-6)
///     rotary on the first qk_rope_head_dim dims of q and k (the model's cos/sin, YaRN factor included)
///     w[i, h]   = weights_proj(x_i)[h] / sqrt(index_n_heads)
///     score[i, j] = sum_h w[i, h] * relu(q[i, h] . k[j] / sqrt(index_head_dim))
///
/// Query i keeps the `topK` keys j <= i of highest score; the others are masked out of its softmax. So the
/// selection changes nothing until a query has more than `topK` keys to choose from: sequences of at most
/// index_topk tokens attend densely.
struct SparseAttention {
    let heads: Int
    let headDim: Int
    let topK: Int
    /// Rotary pairs (2i, 2i + 1) (GLM-5) instead of DeepSeek-V3.2's half-split pairs (i, i + d/2).
    let interleavedRotary: Bool
    /// GLM-5's "shared" layers have no indexer: they reuse the selection of the last layer that has one.
    let sharedLayers: Set<Int>

    /// The DSA fields of config.json: index_n_heads, index_head_dim (at least the rotary dims) and index_topk; for
    /// glm_moe_dsa also which layers share a selection (ModelConfig.indexerTypes).
    init(_ config: ModelConfig, type: String, layers: Int, rotaryDim: Int) throws(ForwardError) {
        guard let heads = config.int("index_n_heads"), let headDim = config.int("index_head_dim"),
              let topK = config.int("index_topk"), heads >= 1, topK >= 1, headDim >= rotaryDim else {
            throw ForwardError(.configInvalid, "config.json: DSA needs index_n_heads and index_topk (positive) and index_head_dim (at least qk_rope_head_dim, \(rotaryDim))")
        }
        self.heads = heads
        self.headDim = headDim
        self.topK = topK
        interleavedRotary = type == "glm_moe_dsa"
        let kinds = config.indexerTypes ?? Array(repeating: "full", count: layers)
        guard kinds.count >= layers, kinds.allSatisfy({ $0 == "full" || $0 == "shared" }) else {
            throw ForwardError(.configInvalid, "config.json: indexer_types must name each of the \(layers) layers \"full\" or \"shared\"")
        }
        guard kinds.first != "shared" else {
            throw ForwardError(.configInvalid, "config.json: indexer_types makes layer 0 share the selection of an earlier layer, and there is none")
        }
        sharedLayers = Set((0..<layers).filter { kinds[$0] == "shared" })
    }

    /// The keys each query may attend to (ascending, all <= the query): every key while a query has at most
    /// `topK`, else the `topK` of highest score. `scores[i]` holds query i's scores of keys 0...i. Ties go to the
    /// earlier key (the fixtures keep every kept score at least 1e-3 above every dropped one).
    static func select(scores: [[Float]], topK: Int) -> [[Int]] {
        scores.enumerated().map { i, row in
            guard i + 1 > topK else { return Array(0...i) }
            let ranked = (0...i).sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }
            return ranked.prefix(topK).sorted()
        }
    }

    /// LayerNorm of each token: (x - mean) / sqrt(var + eps) * weight + bias (biased variance), as torch's.
    static func layerNorm(_ x: [Float], tokens: Int, weight: [Float], bias: [Float], eps: Float, name: String) throws(ForwardError) -> [Float] {
        let n = weight.count
        guard n > 0, bias.count == n, x.count == tokens * n else {
            throw ForwardError(.shapeMismatch, "\(name) has \(n) weights and \(bias.count) biases, but the indexer normalises keys of \(tokens > 0 ? x.count / tokens : 0) here")
        }
        var y = x
        for t in 0..<tokens {
            let row = x[(t * n)..<((t + 1) * n)]
            let mean = row.reduce(0, +) / Float(n)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(n)
            let r = 1 / (variance + eps).squareRoot()
            for i in 0..<n { y[t * n + i] = (x[t * n + i] - mean) * r * weight[i] + bias[i] }
        }
        return y
    }
}

extension Transformer {
    /// Layer `l`'s DSA selection: for each query, the keys it attends to. `x` is the layer's normed input
    /// (tokens x hidden), `queryLatent` MLA's q_a_layernorm(q_a_proj(x)) (tokens x q_lora_rank).
    func sparseSelection(_ dsa: SparseAttention, x: [Float], queryLatent: [Float], tokens t: Int, layer l: Int) throws(ForwardError) -> [[Int]] {
        let p = "model.layers.\(l).self_attn.indexer."
        let (heads, dim) = (dsa.heads, dsa.headDim)
        var q = try Math.linear(queryLatent, tokens: t, try reader.weight(p + "wq_b.weight"), rows: heads * dim)
        let kProjected = try Math.linear(x, tokens: t, try reader.weight(p + "wk.weight"), rows: dim)
        var k = try SparseAttention.layerNorm(kProjected, tokens: t, weight: try reader.vector(p + "k_norm.weight"),
                                              bias: try reader.vector(p + "k_norm.bias"), eps: 1e-6, name: p + "k_norm")
        let w = try Math.linear(x, tokens: t, try reader.weight(p + "weights_proj.weight"), rows: heads)
        q.withUnsafeMutableBufferPointer { qb in
            for i in 0..<t { for h in 0..<heads { rope(qb.baseAddress! + (i * heads + h) * dim, rotaryDim, position: i, interleaved: dsa.interleavedRotary) } }
        }
        k.withUnsafeMutableBufferPointer { kb in
            for i in 0..<t { rope(kb.baseAddress! + i * dim, rotaryDim, position: i, interleaved: dsa.interleavedRotary) }
        }
        let scale = 1 / Float(dim).squareRoot(), headScale = 1 / Float(heads).squareRoot()
        let scores: [[Float]] = (0..<t).map { i in
            (0...i).map { j in
                var total: Float = 0
                for h in 0..<heads {
                    var dot: Float = 0
                    for d in 0..<dim { dot += q[(i * heads + h) * dim + d] * k[j * dim + d] }
                    total += w[i * heads + h] * headScale * max(dot * scale, 0)
                }
                return total
            }
        }
        return SparseAttention.select(scores: scores, topK: dsa.topK)
    }
}
