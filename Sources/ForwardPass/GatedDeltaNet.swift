#if canImport(Glibc)
import Glibc
#endif
import Checkpoint

/// Qwen3-Next's and Qwen3.5's linear-attention token mixer (Gated DeltaNet), as transformers runs a whole prompt
/// without the flash-linear-attention and causal-conv1d packages: projections, a causal depthwise conv1d and
/// SiLU over [q | k | v], the gated delta rule in chunks of `chunkSize` tokens (torch_chunk_gated_delta_rule),
/// a gated RMSNorm per value head, the output projection.
///
/// Per value head h (key head h / (valueHeads / keyHeads)), with q, k L2-normalised and q scaled by 1/sqrt(dk):
///   beta_t = sigmoid(b_t), g_t = -exp(A_log) * softplus(a_t + dt_bias)   (log of the state's decay)
///   S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - exp(g_t) S_{t-1}^T k_t))^T,   o_t = S_t^T q_t
/// computed, as transformers does for a prompt, chunk by chunk (the chunked and the token-by-token orders agree
/// to about 1e-5 on the logits of the fixture, not bit for bit; this is the chunked one).
struct GatedDeltaNet {
    /// transformers' chunk_size for torch_chunk_gated_delta_rule.
    static let chunkSize = 64
    /// The epsilon of the q/k L2 norm (transformers' l2norm, matching flash-linear-attention).
    static let l2Eps: Float = 1e-6

    let keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, kernel: Int

    init(_ config: ModelConfig) throws(ForwardError) {
        let fields = ["linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim"]
        let values = fields.map { config.int($0) ?? 0 }
        guard values.allSatisfy({ $0 >= 1 }), values[1] % values[0] == 0 else {
            throw ForwardError(.configInvalid, "config.json: \(fields.joined(separator: ", ")) must be positive, with the value heads a multiple of the key heads, for the linear-attention layers")
        }
        (keyHeads, valueHeads, keyDim, valueDim, kernel) = (values[0], values[1], values[2], values[3], values[4])
    }

    /// The linear-attention mixer of the layer whose tensors start with `p` ("...layers.N.linear_attn."), on
    /// `x` (tokens x hidden, after the input norm); returns tokens x hidden.
    func forward(_ x: [Float], tokens t: Int, reader: WeightReader, prefix p: String, hidden: Int, eps: Float) throws(ForwardError) -> [Float] {
        let (nk, nv, dk, dv) = (keyHeads, valueHeads, keyDim, valueDim)
        let channels = 2 * nk * dk + nv * dv
        var (mixed, z, b, a) = try project(x, tokens: t, reader: reader, prefix: p)
        let conv = try convolutionWeights(reader, p + "conv1d.weight", channels: channels)
        mixed = causalConvolution(mixed, tokens: t, channels: channels, weights: conv)
        let aLog = try reader.vector(p + "A_log"), dtBias = try reader.vector(p + "dt_bias")
        guard aLog.count == nv, dtBias.count == nv else {
            throw ForwardError(.shapeMismatch, "\(p)A_log (\(aLog.count)) and \(p)dt_bias (\(dtBias.count)) need one value per value head (\(nv))")
        }
        var out = [Float](repeating: 0, count: t * nv * dv)
        let group = nv / nk
        for h in 0..<nv {
            let kh = h / group
            var q = [Float](repeating: 0, count: t * dk), k = q, v = [Float](repeating: 0, count: t * dv)
            var beta = [Float](repeating: 0, count: t), g = beta
            for i in 0..<t {
                let row = i * channels
                for d in 0..<dk {
                    q[i * dk + d] = mixed[row + kh * dk + d]
                    k[i * dk + d] = mixed[row + nk * dk + kh * dk + d]
                }
                for d in 0..<dv { v[i * dv + d] = mixed[row + 2 * nk * dk + h * dv + d] }
                beta[i] = Math.sigmoid(b[i * nv + h])
                g[i] = -expf(aLog[h]) * Self.softplus(a[i * nv + h] + dtBias[h])
            }
            Self.l2Normalize(&q, width: dk, scale: 1 / Float(dk).squareRoot())
            Self.l2Normalize(&k, width: dk, scale: 1)
            let o = Self.chunkedDeltaRule(q: q, k: k, v: v, g: g, beta: beta, tokens: t, dk: dk, dv: dv)
            for i in 0..<t { for d in 0..<dv { out[(i * nv + h) * dv + d] = o[i * dv + d] } }
        }
        let normWeight = try reader.vector(p + "norm.weight")
        guard normWeight.count == dv else { throw ForwardError(.shapeMismatch, "\(p)norm.weight has \(normWeight.count) values for value heads of \(dv)") }
        for r in 0..<(t * nv) {
            // Qwen3NextRMSNormGated: normalised, times weight (not 1 + weight), times silu(z).
            var ss: Float = 0
            for d in 0..<dv { ss += out[r * dv + d] * out[r * dv + d] }
            let inv = 1 / (ss / Float(dv) + eps).squareRoot()
            for d in 0..<dv { out[r * dv + d] = normWeight[d] * (out[r * dv + d] * inv) * Math.silu(z[r * dv + d]) }
        }
        return try Math.linear(out, tokens: t, try reader.weight(p + "out_proj.weight"), rows: hidden)
    }

    /// [q | k | v] per token (tokens x channels, heads in order), z (tokens x valueHeads x dv), b and a (tokens x
    /// valueHeads): Qwen3.5's four projections, or Qwen3-Next's two fused ones, whose rows are grouped by key head
    /// (per key head: q dk, k dk, v and z group x dv each; then b and a group each).
    func project(_ x: [Float], tokens t: Int, reader: WeightReader, prefix p: String)
        throws(ForwardError) -> (mixed: [Float], z: [Float], b: [Float], a: [Float]) {
        let (nk, nv, dk, dv) = (keyHeads, valueHeads, keyDim, valueDim)
        let channels = 2 * nk * dk + nv * dv
        if !reader.has(p + "in_proj_qkvz.weight") {
            let mixed = try Math.linear(x, tokens: t, try reader.weight(p + "in_proj_qkv.weight"), rows: channels)
            return (mixed, try Math.linear(x, tokens: t, try reader.weight(p + "in_proj_z.weight"), rows: nv * dv),
                    try Math.linear(x, tokens: t, try reader.weight(p + "in_proj_b.weight"), rows: nv),
                    try Math.linear(x, tokens: t, try reader.weight(p + "in_proj_a.weight"), rows: nv))
        }
        let group = nv / nk
        let width = 2 * dk + 2 * group * dv
        let qkvz = try Math.linear(x, tokens: t, try reader.weight(p + "in_proj_qkvz.weight"), rows: nk * width)
        let ba = try Math.linear(x, tokens: t, try reader.weight(p + "in_proj_ba.weight"), rows: 2 * nv)
        var mixed = [Float](repeating: 0, count: t * channels), z = [Float](repeating: 0, count: t * nv * dv)
        var b = [Float](repeating: 0, count: t * nv), a = b
        for i in 0..<t {
            for kh in 0..<nk {
                let src = i * nk * width + kh * width
                for d in 0..<dk {
                    mixed[i * channels + kh * dk + d] = qkvz[src + d]
                    mixed[i * channels + nk * dk + kh * dk + d] = qkvz[src + dk + d]
                }
                for d in 0..<(group * dv) {
                    mixed[i * channels + 2 * nk * dk + kh * group * dv + d] = qkvz[src + 2 * dk + d]
                    z[i * nv * dv + kh * group * dv + d] = qkvz[src + 2 * dk + group * dv + d]
                }
                for j in 0..<group {
                    b[i * nv + kh * group + j] = ba[i * 2 * nv + kh * 2 * group + j]
                    a[i * nv + kh * group + j] = ba[i * 2 * nv + kh * 2 * group + group + j]
                }
            }
        }
        return (mixed, z, b, a)
    }

    /// conv1d.weight [channels, 1, kernel] as channels x kernel.
    func convolutionWeights(_ reader: WeightReader, _ name: String, channels: Int) throws(ForwardError) -> [Float] {
        var w: [Float] = []
        w.reserveCapacity(channels * kernel)
        for c in 0..<channels {
            let row = try reader.matrix(name, index: c)
            guard row.rows == 1, row.cols == kernel else {
                throw ForwardError(.shapeMismatch, "\(name) is not [\(channels), 1, \(kernel)] (linear_conv_kernel_dim \(kernel))")
            }
            w += row.values
        }
        return w
    }

    /// Each channel convolved causally with its own kernel (the last tap on the current token, zeros before
    /// the first), then SiLU: y[t][c] = silu(sum_j w[c][j] x[t - kernel + 1 + j][c]).
    func causalConvolution(_ x: [Float], tokens t: Int, channels: Int, weights w: [Float]) -> [Float] {
        var y = [Float](repeating: 0, count: t * channels)
        for i in 0..<t {
            for c in 0..<channels {
                var s: Float = 0
                for j in 0..<kernel {
                    let src = i - kernel + 1 + j
                    if src >= 0 { s += w[c * kernel + j] * x[src * channels + c] }
                }
                y[i * channels + c] = Math.silu(s)
            }
        }
        return y
    }

    /// torch's softplus (beta 1, threshold 20: the input itself above it).
    static func softplus(_ x: Float) -> Float { x > 20 ? x : log1pf(expf(x)) }

    /// Each row of `width` values times scale / sqrt(sum of squares + l2Eps).
    static func l2Normalize(_ x: inout [Float], width: Int, scale: Float) {
        for r in 0..<(x.count / width) {
            var ss: Float = 0
            for d in 0..<width { ss += x[r * width + d] * x[r * width + d] }
            let inv = 1 / (ss + l2Eps).squareRoot()
            for d in 0..<width { x[r * width + d] = x[r * width + d] * inv * scale }
        }
    }

    /// The gated delta rule of one head in chunks of `chunkSize`, in torch_chunk_gated_delta_rule's order.
    /// q, k: tokens x dk (normalised, q scaled); v: tokens x dv; g (log decay) and beta per token. Inside a chunk
    /// of n tokens, with c the cumulative sum of g from the chunk's start:
    ///   D[i][j] = exp(c_i - c_j) for j <= i (0 above the diagonal)
    ///   L = I + strictly-lower((beta k) k^T * D): U = L^-1 (beta v), W = L^-1 (beta k * exp(c))
    ///   v'_i = U_i - W_i S;   o_i = (q_i exp(c_i)) S + sum_{j <= i} (q_i . k_j) D[i][j] v'_j
    ///   S <- S exp(c_last) + sum_i (k_i exp(c_last - c_i)) v'_i^T       (S: dk x dv, zero at the start)
    /// Returns tokens x dv.
    static func chunkedDeltaRule(q: [Float], k: [Float], v: [Float], g: [Float], beta: [Float],
                                 tokens: Int, dk: Int, dv: Int) -> [Float] {
        var out = [Float](repeating: 0, count: tokens * dv)
        var state = [Float](repeating: 0, count: dk * dv)
        for start in stride(from: 0, to: tokens, by: chunkSize) {
            let chunk = Chunk(q: q, k: k, v: v, g: g, beta: beta, tokens: start..<min(tokens, start + chunkSize), dk: dk, dv: dv)
            let corrected = chunk.corrected(state)
            chunk.read(state, corrected, into: &out)
            chunk.advance(&state, corrected)
        }
        return out
    }

    /// One chunk of the chunked delta rule: what does not depend on the state carried in (the cumulative decay,
    /// the pairwise decays and the solved system U, W), then the three steps that do.
    struct Chunk {
        let q: [Float], k: [Float]
        let tokens: Range<Int>
        let dk: Int, dv: Int
        /// c: the cumulative log decay from the chunk's start; decay: D, n x n, row-major.
        let c: [Float], decay: [Float]
        /// U (n x dv) and W (n x dk): L^-1 (beta v) and L^-1 (beta k exp(c)).
        let u: [Float], w: [Float]

        init(q: [Float], k: [Float], v: [Float], g: [Float], beta: [Float], tokens: Range<Int>, dk: Int, dv: Int) {
            (self.q, self.k, self.tokens, self.dk, self.dv) = (q, k, tokens, dk, dv)
            let n = tokens.count, first = tokens.lowerBound
            var c = [Float](repeating: 0, count: n), running: Float = 0
            for i in 0..<n { running += g[first + i]; c[i] = running }
            var decay = [Float](repeating: 0, count: n * n)
            for i in 0..<n { for j in 0...i { decay[i * n + j] = expf(c[i] - c[j]) } }
            // Forward substitution of the unit lower-triangular system, both right-hand sides at once.
            var u = [Float](repeating: 0, count: n * dv), w = [Float](repeating: 0, count: n * dk)
            for i in 0..<n {
                let b = beta[first + i], row = (first + i) * dk
                for d in 0..<dv { u[i * dv + d] = v[(first + i) * dv + d] * b }
                for d in 0..<dk { w[i * dk + d] = k[row + d] * b * expf(c[i]) }
                for j in 0..<i {
                    var kk: Float = 0  // (beta_i k_i) . k_j: beta on k first, as transformers' k_beta
                    for d in 0..<dk { kk += (k[row + d] * b) * k[(first + j) * dk + d] }
                    let l = kk * decay[i * n + j]
                    for d in 0..<dv { u[i * dv + d] -= l * u[j * dv + d] }
                    for d in 0..<dk { w[i * dk + d] -= l * w[j * dk + d] }
                }
            }
            (self.c, self.decay, self.u, self.w) = (c, decay, u, w)
        }

        /// v' = U - W S: the new values, less what the carried state already predicts.
        func corrected(_ state: [Float]) -> [Float] {
            var values = u
            for i in 0..<tokens.count {
                for e in 0..<dv {
                    var s: Float = 0
                    for d in 0..<dk { s += w[i * dk + d] * state[d * dv + e] }
                    values[i * dv + e] -= s
                }
            }
            return values
        }

        /// Each token's output: the carried state read by its decayed query, plus the chunk's own causal attention.
        func read(_ state: [Float], _ values: [Float], into out: inout [Float]) {
            let n = tokens.count, first = tokens.lowerBound
            for i in 0..<n {
                let query = (0..<dk).map { q[(first + i) * dk + $0] * expf(c[i]) }
                let attention = (0...i).map { j -> Float in
                    var s: Float = 0
                    for d in 0..<dk { s += q[(first + i) * dk + d] * k[(first + j) * dk + d] }
                    return s * decay[i * n + j]
                }
                for e in 0..<dv {
                    var inter: Float = 0
                    for d in 0..<dk { inter += query[d] * state[d * dv + e] }
                    var intra: Float = 0
                    for j in 0...i { intra += attention[j] * values[j * dv + e] }
                    out[(first + i) * dv + e] = inter + intra
                }
            }
        }

        /// The state after the chunk: decayed over the whole chunk, plus each token's key (decayed to the chunk's
        /// end) times its corrected value.
        func advance(_ state: inout [Float], _ values: [Float]) {
            let n = tokens.count, first = tokens.lowerBound
            let last = c[n - 1], chunkDecay = expf(last)
            let toEnd = (0..<n).map { expf(last - c[$0]) }
            for d in 0..<dk {
                for e in 0..<dv {
                    var s: Float = 0
                    for i in 0..<n { s += k[(first + i) * dk + d] * toEnd[i] * values[i * dv + e] }
                    state[d * dv + e] = state[d * dv + e] * chunkDecay + s
                }
            }
        }
    }
}
