#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import StrictJSON

/// DeepSeek-V4's attention of one layer (`layers.N.attn.`), for a whole prompt without a cache:
/// - q: wq_a, RMSNorm (q_norm), wq_b, then each head RMS-normalised without a weight; one key=value head:
///   wkv then RMSNorm (norm); rotary on the last rope dims of every head in interleaved pairs (2i, 2i + 1),
///   the main rope on sliding layers, the compress rope on the others;
/// - keys: the tokens of the sliding window (a token sees the last sliding_window ones, itself included) and, on
///   compressed layers, the compressed entries a query may see (`compress`, `indexerChoice`);
/// - softmax with a learned sink per head (attn_sink: a logit in the denominator whose share is dropped);
/// - the output, whose rope dims carry the keys' rotation (values are the keys), rotated back by the query's
///   position, then the grouped output projection: each of o_groups groups of heads through its own rows of
///   wo_a (o_lora_rank each), then wo_b.
struct CompressedAttention {
    /// What config.json fixes for every layer's attention.
    struct Sizes {
        let heads: Int
        let headDim: Int
        let ropeDim: Int
        let queryRank: Int
        let groups: Int
        let groupRank: Int
        let window: Int
        let rates: (csa: Int, hca: Int)
        let indexHeads: Int
        let indexDim: Int
        let indexTopK: Int
        let mainRope: InterleavedRope
        let compressRope: InterleavedRope

        init(_ config: ModelConfig, heads: Int, headDim: Int) throws(ForwardError) {
            self.heads = heads
            self.headDim = headDim
            let nested = config.field("rope_parameters")?.objectValue
            let main = nested?["main"]?.objectValue, compress = nested?["compress"]?.objectValue
            // The rotated width: partial_rotary_factor (transformers), the release's qk_rope_head_dim, or 64 of 512.
            let factor = main?["partial_rotary_factor"]?.doubleValue ?? config.field("partial_rotary_factor")?.doubleValue
                ?? config.int("qk_rope_head_dim").map { Double($0) / Double(headDim) } ?? 64.0 / 512.0
            ropeDim = Int(Double(headDim) * factor)
            guard let q = config.int("q_lora_rank"), let g = config.int("o_groups"), let r = config.int("o_lora_rank") else {
                throw ForwardError(.configInvalid, "config.json: DeepSeek-V4 attention needs q_lora_rank, o_groups and o_lora_rank")
            }
            (queryRank, groups, groupRank) = (q, g, r)
            window = config.int("sliding_window") ?? 128
            rates = config.deepSeekV4CompressRates
            indexHeads = config.int("index_n_heads") ?? 64
            indexDim = config.int("index_head_dim") ?? 128
            indexTopK = config.int("index_topk") ?? 512
            guard ropeDim >= 2, ropeDim % 2 == 0, ropeDim <= headDim, ropeDim <= indexDim else {
                throw ForwardError(.configInvalid, "config.json: partial_rotary_factor \(factor) of head_dim \(headDim) must leave a positive even number of rotary dimensions, at most head_dim and index_head_dim \(indexDim)")
            }
            guard q >= 1, g >= 1, r >= 1, (heads * headDim) % g == 0, window >= 1, rates.csa >= 1, rates.hca >= 1,
                  indexHeads >= 1, indexDim >= 1, indexTopK >= 1 else {
                throw ForwardError(.configInvalid, "config.json: q_lora_rank \(q), o_groups \(g) (dividing heads x head_dim \(heads * headDim)), o_lora_rank \(r), sliding_window \(window), compress rates \(rates.csa)/\(rates.hca), index_n_heads \(indexHeads), index_head_dim \(indexDim) and index_topk \(indexTopK) must be positive")
            }
            let positions = config.int("max_position_embeddings")
            if let main, let compress {  // transformers' config.json: both ropes spelled out
                mainRope = try InterleavedRope(main, theta: config.field("rope_theta")?.doubleValue ?? 10000, dim: ropeDim, positions: positions, defaultFactor: nil)
                compressRope = try InterleavedRope(compress, theta: 160000, dim: ropeDim, positions: positions, defaultFactor: nil)
            } else {
                // The release's: rope_theta for the sliding layers, compress_rope_theta with rope_scaling's YaRN for the
                // compressed ones, whose cos and sin the release does not scale (attention_factor 1 unless given).
                let scaling = nested ?? config.field("rope_scaling")?.objectValue ?? JSONObject([])
                mainRope = try InterleavedRope(JSONObject([]), theta: config.field("rope_theta")?.doubleValue ?? 10000, dim: ropeDim, positions: positions, defaultFactor: nil)
                compressRope = try InterleavedRope(scaling, theta: config.field("compress_rope_theta")?.doubleValue ?? 160000, dim: ropeDim,
                                                   positions: positions, defaultFactor: 1)
            }
        }
    }

    let model: DeepSeekV4
    let kind: DeepSeekV4Attention
    let sizes: CompressedAttention.Sizes
    let prefix: String
    var reader: WeightReader { model.reader }
    var rope: InterleavedRope { kind == .sliding ? sizes.mainRope : sizes.compressRope }

    init(_ model: DeepSeekV4, layer: Int) throws(ForwardError) {
        guard layer < model.kinds.count else {
            throw ForwardError(.configInvalid, "config.json: no attention kind for layer \(layer)")
        }
        self.model = model
        kind = model.kinds[layer]
        sizes = model.attention
        prefix = model.layerRoot + "\(layer).attn."
    }

    /// x: the normalised collapsed streams, [tokens][hidden]; returns [tokens][hidden].
    func forward(_ x: [Float], tokens t: Int) throws(ForwardError) -> [Float] {
        let (heads, hd, eps) = (sizes.heads, sizes.headDim, model.eps)
        let qa = try Math.linear(x, tokens: t, try reader.weight(prefix + "wq_a.weight"), rows: sizes.queryRank)
        let qr = try Math.rmsNorm(qa, tokens: t, weight: try reader.vector(prefix + "q_norm.weight"), eps: eps, name: prefix + "q_norm.weight")
        var q = try Math.linear(qr, tokens: t, try reader.weight(prefix + "wq_b.weight"), rows: heads * hd)
        q = try Math.rmsNorm(q, tokens: t * heads, weight: [Float](repeating: 1, count: hd), eps: eps)
        var kv = try Math.linear(x, tokens: t, try reader.weight(prefix + "wkv.weight"), rows: hd)
        kv = try Math.rmsNorm(kv, tokens: t, weight: try reader.vector(prefix + "norm.weight"), eps: eps, name: prefix + "norm.weight")
        rotate(&q, width: hd, perToken: heads, rope)
        rotate(&kv, width: hd, perToken: 1, rope)

        // Compressed entries [entries][head_dim], and which of them each query sees.
        var entries: [Float] = []
        var visible: [[Int]] = Array(repeating: [], count: t)
        switch kind {
        case .sliding:
            break
        case .heavilyCompressed:
            let rate = sizes.rates.hca
            entries = try compress(x, tokens: t, prefix: prefix + "compressor.", rate: rate, overlapping: false, dim: hd)
            let count = entries.count / hd
            visible = (0..<t).map { i in Array(0..<min(count, (i + 1) / rate)) }
        case .compressedSparse:
            entries = try compress(x, tokens: t, prefix: prefix + "compressor.", rate: sizes.rates.csa, overlapping: true, dim: hd)
            visible = try indexerChoice(x, queries: qr, tokens: t)
        }
        let sinks = try reader.vector(prefix + "attn_sink")
        guard sinks.count == heads else { throw ForwardError(.shapeMismatch, "\(prefix)attn_sink has \(sinks.count) values for \(heads) heads") }
        var out = attend(q: q, kv: kv, entries: entries, visible: visible, sinks: sinks, tokens: t)
        rotate(&out, width: hd, perToken: heads, rope, inverse: true)
        return try project(out, tokens: t)
    }

    /// Rotates the last rope dims of each of `perToken` vectors of `width` per token, at the token's position.
    func rotate(_ v: inout [Float], width: Int, perToken: Int, _ rope: InterleavedRope, inverse: Bool = false, positionStep: Int = 1) {
        let tokens = v.count / (width * perToken)
        v.withUnsafeMutableBufferPointer { b in
            for i in 0..<tokens {
                for k in 0..<perToken {
                    rope.rotate(b.baseAddress! + (i * perToken + k + 1) * width - rope.dim, position: i * positionStep, inverse: inverse)
                }
            }
        }
    }

    /// Softmax attention of each head of q over the window's keys and the visible entries, a sink in each
    /// denominator; the values are the keys. Returns [tokens][heads][head_dim].
    func attend(q: [Float], kv: [Float], entries: [Float], visible: [[Int]], sinks: [Float], tokens t: Int) -> [Float] {
        let (heads, hd) = (sizes.heads, sizes.headDim)
        let scale = Float(1 / Double(hd).squareRoot())
        var out = [Float](repeating: 0, count: t * heads * hd)
        func dot(_ a: Int, _ b: [Float], _ bOffset: Int) -> Float {
            var s: Float = 0
            for d in 0..<hd { s += q[a + d] * b[bOffset + d] }
            return s
        }
        for i in 0..<t {
            let keys = Array(max(0, i - sizes.window + 1)...i)
            for h in 0..<heads {
                let qo = (i * heads + h) * hd
                let logits = keys.map { dot(qo, kv, $0 * hd) * scale } + visible[i].map { dot(qo, entries, $0 * hd) * scale }
                let top = max(logits.max() ?? -.infinity, sinks[h])
                let e = logits.map { expf($0 - top) }
                let z = e.reduce(0, +) + expf(sinks[h] - top)
                for (n, j) in keys.enumerated() {
                    let w = e[n] / z
                    for d in 0..<hd { out[qo + d] += w * kv[j * hd + d] }
                }
                for (n, j) in visible[i].enumerated() {
                    let w = e[keys.count + n] / z
                    for d in 0..<hd { out[qo + d] += w * entries[j * hd + d] }
                }
            }
        }
        return out
    }

    /// The grouped output projection: heads x head_dim split into o_groups groups, group g through rows
    /// g x o_lora_rank ..< (g + 1) x o_lora_rank of wo_a, the groups' outputs side by side through wo_b.
    func project(_ o: [Float], tokens t: Int) throws(ForwardError) -> [Float] {
        let (g, rank) = (sizes.groups, sizes.groupRank)
        let width = sizes.heads * sizes.headDim / g
        let woA = try reader.weight(prefix + "wo_a.weight")
        guard woA.rows == g * rank, woA.cols == width else {
            throw ForwardError(.shapeMismatch, "\(prefix)wo_a.weight is [\(woA.rows), \(woA.cols)]; o_groups \(g) x o_lora_rank \(rank) and heads x head_dim / o_groups make it [\(g * rank), \(width)]")
        }
        var grouped = [Float](repeating: 0, count: t * g * rank)
        for group in 0..<g {
            var slice = [Float](repeating: 0, count: t * width)
            for i in 0..<t {
                let start = (i * g + group) * width
                for c in 0..<width { slice[i * width + c] = o[start + c] }
            }
            let y = try Math.linear(slice, tokens: t, woA.rows(group * rank..<((group + 1) * rank)))
            for i in 0..<t { for r in 0..<rank { grouped[(i * g + group) * rank + r] = y[i * rank + r] } }
        }
        return try Math.linear(grouped, tokens: t, try reader.weight(prefix + "wo_b.weight"), rows: model.hidden)
    }

    /// The compressor at `prefix` (wkv, wgate, ape, norm): every complete window of `rate` tokens pooled into one
    /// entry of `dim`, each dimension a softmax over the window's gates (wgate x + ape) of its kv (wkv x); then
    /// RMSNorm (norm) and the compress rope at the window's first position. Overlapping (CSA): wkv and wgate give
    /// two series of `dim` per token, and entry w pools the first series of window w - 1 (none for w = 0) with
    /// the second of window w. Returns [windows][dim]; the tokens after the last complete window are left out.
    func compress(_ x: [Float], tokens t: Int, prefix: String, rate: Int, overlapping: Bool, dim: Int) throws(ForwardError) -> [Float] {
        let width = overlapping ? 2 * dim : dim
        let windows = t / rate
        guard windows > 0 else { return [] }
        let kv = try Math.linear(x, tokens: t, try reader.weight(prefix + "wkv.weight"), rows: width)
        let gate = try Math.linear(x, tokens: t, try reader.weight(prefix + "wgate.weight"), rows: width)
        let ape = try reader.matrix(prefix + "ape")
        guard ape.rows == rate, ape.cols == width else {
            throw ForwardError(.shapeMismatch, "\(prefix)ape is [\(ape.rows), \(ape.cols)]; the compress rate and width make it [\(rate), \(width)]")
        }
        var pooled = [Float](repeating: 0, count: windows * dim)
        var slots: [(kv: Float, gate: Float)] = []
        for w in 0..<windows {
            for d in 0..<dim {
                slots.removeAll(keepingCapacity: true)
                // (token, offset into its series): the previous window's first series, then this window's last.
                if overlapping && w > 0 {
                    for r in 0..<rate { let j = (w - 1) * rate + r; slots.append((kv[j * width + d], gate[j * width + d] + ape.values[r * width + d])) }
                }
                let series = overlapping ? dim : 0
                for r in 0..<rate {
                    let j = w * rate + r
                    slots.append((kv[j * width + series + d], gate[j * width + series + d] + ape.values[r * width + series + d]))
                }
                let top = slots.map(\.gate).max()!
                let e = slots.map { expf($0.gate - top) }
                let z = e.reduce(0, +)
                var sum: Float = 0
                for (n, s) in slots.enumerated() { sum += s.kv * (e[n] / z) }
                pooled[w * dim + d] = sum
            }
        }
        var normed = try Math.rmsNorm(pooled, tokens: windows, weight: try reader.vector(prefix + "norm.weight"), eps: model.eps, name: prefix + "norm.weight")
        rotate(&normed, width: dim, perToken: 1, sizes.compressRope, positionStep: rate)
        return normed
    }

    /// The lightning indexer (`attn.indexer.`): its own overlapping compressor at index_head_dim gives keys K;
    /// queries from the attention's q_norm output (wq_b, index_n_heads heads, compress rope at the token's
    /// position); score(i, e) = sum_h relu(q_ih . K_e) / sqrt(index_head_dim) x weights_proj(x)_ih /
    /// sqrt(index_n_heads). Query i may see entries e < (i + 1) / rate; of those it keeps its index_topk best
    /// (a top-k over all entries, the future ones at -inf, then the future ones dropped).
    func indexerChoice(_ x: [Float], queries qr: [Float], tokens t: Int) throws(ForwardError) -> [[Int]] {
        let p = prefix + "indexer."
        let (nI, dI, rate) = (sizes.indexHeads, sizes.indexDim, sizes.rates.csa)
        let keys = try compress(x, tokens: t, prefix: p + "compressor.", rate: rate, overlapping: true, dim: dI)
        let count = keys.count / dI
        guard count > 0 else { return Array(repeating: [], count: t) }
        var q = try Math.linear(qr, tokens: t, try reader.weight(p + "wq_b.weight"), rows: nI * dI)
        rotate(&q, width: dI, perToken: nI, sizes.compressRope)
        let weights = try Math.linear(x, tokens: t, try reader.weight(p + "weights_proj.weight"), rows: nI)
        let (softmaxScale, weightScale) = (Float(1 / Double(dI).squareRoot()), Float(1 / Double(nI).squareRoot()))
        let k = min(sizes.indexTopK, count)
        return (0..<t).map { i in
            let threshold = (i + 1) / rate
            let scores = (0..<count).map { e -> Float in
                guard e < threshold else { return -.infinity }
                var total: Float = 0
                for h in 0..<nI {
                    var s: Float = 0
                    for d in 0..<dI { s += q[(i * nI + h) * dI + d] * keys[e * dI + d] }
                    total += max(s, 0) * softmaxScale * (weights[i * nI + h] * weightScale)
                }
                return total
            }
            let best = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(k)
            return best.filter { $0 < threshold }.sorted()
        }
    }
}

/// Rotary position embedding on interleaved pairs (2i, 2i + 1) of the last `dim` values of a vector (DeepSeek-V4's
/// layout: the rotated dims end each head), with one frequency per pair: plain (theta) or YaRN as transformers
/// computes it; cos and sin times the attention factor.
struct InterleavedRope {
    let dim: Int
    let invFreq: [Float]
    let factor: Float

    /// `p`: one rope's parameters (rope_type, rope_theta, YaRN's fields); `theta` when p has no rope_theta;
    /// `defaultFactor`: YaRN's attention factor when p gives none (nil: transformers' mscale).
    init(_ p: JSONObject, theta: Double, dim: Int, positions: Int?, defaultFactor: Float?) throws(ForwardError) {
        self.dim = dim
        let base = p["rope_theta"]?.doubleValue ?? theta
        switch p["rope_type"]?.stringValue ?? p["type"]?.stringValue ?? "default" {
        case "default":
            invFreq = (0..<(dim / 2)).map { i in Float(1.0 / pow(base, Double(Float(2 * i) / Float(dim)))) }
            factor = 1
        case "yarn":
            let yarn = try Transformer.Yarn(p, base: base, dim: dim, maxPositions: positions)
            invFreq = yarn.invFreq
            factor = p["attention_factor"] == nil ? defaultFactor ?? yarn.attentionFactor : yarn.attentionFactor
        case let other:
            throw ForwardError(.unsupportedModel, "config.json: rope type \"\(other)\" is not one DeepSeek-V4's verify runs (default, yarn)")
        }
    }

    /// Rotates the `dim` values at `v` by position `p` (by -p when `inverse`).
    func rotate(_ v: UnsafeMutablePointer<Float>, position p: Int, inverse: Bool = false) {
        for i in 0..<(dim / 2) {
            let angle = Float(p) * invFreq[i]
            let c = cos(angle) * factor, s = (inverse ? -sin(angle) : sin(angle)) * factor
            let (x0, x1) = (v[2 * i], v[2 * i + 1])
            v[2 * i] = x0 * c - x1 * s
            v[2 * i + 1] = x1 * c + x0 * s
        }
    }
}
