import Checkpoint

/// Deterministic hidden states: N(0, 1) from a seeded generator (SplitMix64, Box-Muller), then,
/// when the layer has one, its post-attention RMSNorm, so the block sees inputs shaped like a
/// real forward pass's.
public enum HiddenStates {
    public static func make(tokens: Int, hidden: Int, seed: UInt64, norm: [Float]?, eps: Float) throws(ForwardError) -> [Float] {
        var rng = SplitMix64(seed: seed &+ 0x9E37_79B9_7F4A_7C15)
        func next() -> UInt64 { rng.next() }
        var x = [Float](repeating: 0, count: tokens * hidden)
        var i = 0
        while i < x.count {
            let u1 = max(Double(next() >> 11) * 0x1p-53, 1e-300), u2 = Double(next() >> 11) * 0x1p-53
            let r = (-2 * log(u1)).squareRoot()
            x[i] = Float(r * cos(2 * .pi * u2))
            if i + 1 < x.count { x[i + 1] = Float(r * sin(2 * .pi * u2)) }
            i += 2
        }
        guard let norm else { return x }
        return try Math.rmsNorm(x, tokens: tokens, weight: norm, eps: eps, name: "post_attention_layernorm.weight")
    }
}

/// How far two runs of one layer are apart.
public struct LayerDifference: Sendable {
    public var layer: Int
    public var tokens: Int
    public var maxAbsError: Double
    /// ||a - b|| / ||a||, over all tokens.
    public var relativeError: Double
    public var cosine: Double
    /// Share of tokens whose chosen expert set is the same.
    public var routerAgreement: Double
    /// Mean over tokens of (1/k) sum over experts |w_a - w_b| (a weight is 0 where not chosen).
    public var meanWeightChange: Double
    public var outputNorm: Double
    public var finite: Bool

    public static func between(_ a: (output: [Float], routing: [Routing]), _ b: (output: [Float], routing: [Routing]),
                               layer: Int, tokens: Int, topK: Int) -> LayerDifference {
        let d = OutputDifference.between(a.output, b.output)
        var same = 0
        var change = 0.0
        for (ra, rb) in zip(a.routing, b.routing) {
            if ra.experts == rb.experts { same += 1 }
            var wa = [Int: Float](), wb = [Int: Float]()
            for (e, w) in zip(ra.experts, ra.weights) { wa[e] = w }
            for (e, w) in zip(rb.experts, rb.weights) { wb[e] = w }
            let all = Set(wa.keys).union(wb.keys)
            change += all.reduce(0.0) { $0 + abs(Double((wa[$1] ?? 0) - (wb[$1] ?? 0))) } / Double(topK)
        }
        return LayerDifference(
            layer: layer, tokens: tokens, maxAbsError: d.maxAbsError, relativeError: d.relativeError, cosine: d.cosine,
            routerAgreement: tokens > 0 ? Double(same) / Double(tokens) : 1, meanWeightChange: tokens > 0 ? change / Double(tokens) : 0,
            outputNorm: d.norm, finite: d.finite)
    }
}

/// How far two outputs of the same computation are apart.
public struct OutputDifference: Sendable {
    public var maxAbsError: Double
    /// ||a - b|| / ||a||.
    public var relativeError: Double
    public var cosine: Double
    /// ||a||.
    public var norm: Double
    public var finite: Bool

    public static func between(_ a: [Float], _ b: [Float]) -> OutputDifference {
        var maxAbs = 0.0, diff2 = 0.0, a2 = 0.0, b2 = 0.0, ab = 0.0
        var finite = true
        for (x, y) in zip(a, b) {
            let (dx, dy) = (Double(x), Double(y))
            if !dx.isFinite || !dy.isFinite { finite = false; continue }
            maxAbs = max(maxAbs, abs(dx - dy))
            diff2 += (dx - dy) * (dx - dy)
            a2 += dx * dx
            b2 += dy * dy
            ab += dx * dy
        }
        return OutputDifference(
            maxAbsError: maxAbs, relativeError: a2 > 0 ? (diff2 / a2).squareRoot() : (diff2 > 0 ? .infinity : 0),
            cosine: a2 > 0 && b2 > 0 ? ab / (a2 * b2).squareRoot() : (a2 == b2 ? 1 : 0), norm: a2.squareRoot(), finite: finite)
    }
}

/// The MoE layers of a checkpoint, from its config (first_k_dense_replace, mlp_only_layers,
/// decoder_sparse_step) and its tensors (a router under the layer).
public enum MoELayers {
    public static func of(_ checkpoint: Checkpoint) -> [Int] {
        guard let config = checkpoint.config, let n = config.numHiddenLayers, n <= ModelConfig.maximumLayers else { return [] }
        return (0..<n).filter { i in MoELayer.routerWeightNames(layer: i, prefix: config.decoderPrefix).contains { checkpoint.locate($0) != nil } }
    }
}

#if canImport(Glibc)
import Glibc
import Support
#endif

/// How far two whole-model runs on the same tokens are apart.
public struct ModelDifference: Sendable {
    public var logits: LayerDifference
    /// Share of tokens whose most likely next token is the same.
    public var top1Agreement: Double
    /// Mean over tokens of KL(softmax(a) || softmax(b)), in nats.
    public var klDivergence: Double
    /// ||a - b|| / ||a|| of the hidden states after the embeddings (0) and each layer.
    public var hiddenRelativeError: [Double]
    /// Per MoE layer: router agreement and mean weight change.
    public var routers: [(layer: Int, agreement: Double, weightChange: Double)]
    /// Per layer with sparse attention (DeepSeek-V3.2, GLM-5): how many queries attend to the same keys in both, and
    /// how many of A's queries attend to fewer keys than they could see (only those can differ).
    public var keySelections: [(layer: Int, same: Int, sparse: Int, queries: Int)] = []

    public static func between(_ a: Transformer.Output, _ b: Transformer.Output, vocab: Int, topK: [Int: Int]) -> ModelDifference {
        let tokens = a.logits.count / vocab
        let logits = LayerDifference.between((a.logits, []), (b.logits, []), layer: -1, tokens: tokens, topK: 1)
        var top1 = 0
        var kl = 0.0
        for t in 0..<tokens {
            let x = a.logits[(t * vocab)..<((t + 1) * vocab)].map(Double.init)
            let y = b.logits[(t * vocab)..<((t + 1) * vocab)].map(Double.init)
            if x.indices.max(by: { x[$0] < x[$1] }) == y.indices.max(by: { y[$0] < y[$1] }) { top1 += 1 }
            let (mx, my) = (x.max()!, y.max()!)
            let zx = x.reduce(0) { $0 + exp($1 - mx) }, zy = y.reduce(0) { $0 + exp($1 - my) }
            for i in 0..<vocab {
                let lp = x[i] - mx - log(zx), lq = y[i] - my - log(zy)
                kl += exp(lp) * (lp - lq)
            }
        }
        let hidden = zip(a.hidden, b.hidden).map { ha, hb -> Double in
            var d = 0.0, n = 0.0
            for (x, y) in zip(ha, hb) { d += Double(x - y) * Double(x - y); n += Double(x) * Double(x) }
            return n > 0 ? (d / n).squareRoot() : 0
        }
        let routers = a.routing.keys.sorted().map { l -> (layer: Int, agreement: Double, weightChange: Double) in
            let d = LayerDifference.between(([], a.routing[l]!), ([], b.routing[l] ?? []), layer: l, tokens: tokens, topK: topK[l] ?? 1)
            return (l, d.routerAgreement, d.meanWeightChange)
        }
        let keySelections = a.keys.keys.sorted().map { l -> (layer: Int, same: Int, sparse: Int, queries: Int) in
            let ka = a.keys[l]!, kb = b.keys[l] ?? []
            let same = ka.indices.filter { $0 < kb.count && ka[$0] == kb[$0] }.count
            let sparse = ka.enumerated().filter { $0.element.count < $0.offset + 1 }.count
            return (l, same, sparse, ka.count)
        }
        return ModelDifference(logits: logits, top1Agreement: tokens > 0 ? Double(top1) / Double(tokens) : 1,
                               klDivergence: tokens > 0 ? kl / Double(tokens) : 0, hiddenRelativeError: hidden, routers: routers,
                               keySelections: keySelections)
    }
}
