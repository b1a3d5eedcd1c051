#if canImport(Glibc)
import Glibc
#endif
import Checkpoint

/// How a model's router turns logits into experts and weights.
public enum Router: Sendable, Equatable {
    /// DeepSeek-V3 (and GLM-4.5, and MiniMax-M2 with one group and no scaling: the same router): sigmoid scores; choice by score + e_score_correction_bias; group score = sum of
    /// the top two biased scores of each of `groups` groups; the best `topkGroup` groups kept; the top
    /// k experts inside them; weights from the unbiased scores, normalised if `normTopk`, times
    /// `scaling`.
    case deepseekV3(groups: Int, topkGroup: Int, scaling: Float, normTopk: Bool)
    /// Mixtral (normalised) and Qwen2/3-MoE (normalised if norm_topk_prob): softmax over all
    /// experts, the top k, their probabilities renormalised or not.
    case softmaxTopK(normalize: Bool)
    /// gpt-oss: the k largest logits (the router's bias added), their softmax as the weights.
    case topKSoftmax
    /// Llama 4: the k largest logits, each weight the sigmoid of its logit (not normalised); a weight scales what
    /// goes into its expert, not what comes out (the expert is not linear, so the two differ).
    case sigmoidTopKOnInput

    /// Whether the routing weights multiply the experts' inputs rather than their outputs.
    public var weighsInputs: Bool { self == .sigmoidTopKOnInput }

    /// DeepSeek-V4: scores sqrt(softplus(logit)); the experts the k best of score + e_score_correction_bias, or,
    /// on a hash layer, the token id's row of the frozen table `hash` (tid2eid, [vocab][k]); weights the chosen
    /// scores renormalised, times `scaling`.
    case sqrtSoftplus(scaling: Float, hash: [[Int]]?)
}

/// What a router chose for one token: experts ascending, with their weights.
public struct Routing: Sendable, Equatable {
    public var experts: [Int]
    public var weights: [Float]
}

/// One MoE layer's feed-forward block, read from a checkpoint: router, routed experts (read
/// when first used) and shared experts.
public struct MoELayer {
    public let layer: Int
    public let router: Router
    public let topK: Int
    public let experts: Int
    let reader: WeightReader
    let prefix: String
    let naming: ExpertNaming
    let routerWeight: Matrix
    /// The router's own name, "<prefix>gate" or "<prefix>router".
    let routerName: String
    /// A Linear bias of the router, added to its logits (gpt-oss).
    let logitBias: [Float]?
    /// DeepSeek's e_score_correction_bias: added to the scores for the choice only.
    let bias: [Float]?
    let shared: (gate: Weight, up: Weight, down: Weight)?
    let sharedGate: Matrix?
    /// The layer's post-attention RMSNorm weight (what feeds the MoE block), when present.
    public let inputNorm: [Float]?
    public let normEps: Float
    /// DeepSeek-V4's swiglu_limit: every expert's gate clamped above and its up projection to [-limit, limit].
    let swigluLimit: Float?

    enum ExpertNaming {
        case perExpert(gate: String, up: String, down: String)  // "{prefix}experts.{e}.<name>.weight"
        case fused  // experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I]
        /// gpt-oss: experts.gate_up_proj (gate unit i is output 2i, up unit i output 2i + 1) and experts.down_proj,
        /// stored as transformers holds them ([E, in, out]) or as MXFP4 blocks ([E, out, in/32, 16]); each with a
        /// bias ([E, out]); the clamped SwiGLU (Math.clampedSwiGLU).
        case gptOss(gateUpBias: Matrix, downBias: Matrix, alpha: Float, limit: Float)
        /// Llama 4: experts.gate_up_proj [E, H, 2I] (gate outputs are columns 0..<I, up outputs I..<2I) and
        /// experts.down_proj [E, I, H], stored as transformers holds them ([E, in, out]), without biases.
        case fusedInputMajor
    }

    /// Where an MoE layer keeps its router, after "model.layers.N." (DeepSeek-V4's release: "layers.N."): the
    /// block's prefix and the router's module (Mixtral's block_sparse_moe.gate, gpt-oss's mlp.router, Llama 4's
    /// feed_forward.router, DeepSeek-V4's ffn.gate, everyone else's mlp.gate).
    static let routerLocations = [("mlp.", "gate"), ("block_sparse_moe.", "gate"), ("mlp.", "router"), ("feed_forward.", "router"), ("ffn.", "gate")]

    /// Where layer `layer`'s weights may start: under the decoder's prefix (ModelConfig.decoderPrefix: "model.",
    /// Llama 4's "language_model.model.", Qwen3.5's "model.language_model."), or DeepSeek-V4's release "layers.N.".
    public static func layerPrefixes(_ layer: Int, prefix: String = "model.") -> [String] {
        ["\(prefix)layers.\(layer).", "layers.\(layer)."]
    }

    /// The names layer `layer`'s router weight may have, one per architecture's naming.
    public static func routerWeightNames(layer: Int, prefix: String = "model.") -> [String] {
        layerPrefixes(layer, prefix: prefix).flatMap { base in routerLocations.map { base + $0.0 + $0.1 + ".weight" } }
    }

    /// Reads layer `layer` of a checkpoint of one of Transformer.modelTypes.
    public init(_ reader: WeightReader, config: ModelConfig, layer: Int) throws(ForwardError) {
        try Transformer.checkSizes(config)
        self.layer = layer
        self.reader = reader
        let type = config.architecture ?? ""
        let located = Self.layerPrefixes(layer, prefix: config.decoderPrefix).lazy
            .flatMap { base in Self.routerLocations.map { (base, $0.0, $0.1) } }
            .first { reader.has($0.0 + $0.1 + $0.2 + ".weight") }
        guard let (base, block, module) = located else {
            let expected = config.decoderPrefix + "layers.\(layer)." + (type == "llama4" ? "feed_forward.router" : "mlp.gate") + ".weight"
            throw ForwardError(.notAnMoELayer, "layer \(layer) has no router (\(expected)): not an MoE layer")
        }
        let prefix = base + block
        self.prefix = prefix
        routerName = prefix + module
        routerWeight = try reader.matrix(routerName + ".weight")
        experts = routerWeight.rows
        // DeepSeek-V4's gate.bias is its e_score_correction_bias (for the choice only), not a bias of the logits.
        logitBias = type != "deepseek_v4" && reader.has(routerName + ".bias") ? try reader.vector(routerName + ".bias") : nil
        if let logitBias, logitBias.count != experts {
            throw ForwardError(.shapeMismatch, "\(routerName).bias has \(logitBias.count) values for \(experts) experts")
        }
        guard let k = config.expertsPerToken, k >= 1, k <= experts else {
            throw ForwardError(.configInvalid, "config.json: num_experts_per_tok missing or not in 1...\(experts)")
        }
        topK = k
        switch type {
        case "deepseek_v3", "deepseek_v32", "glm4_moe", "glm_moe_dsa":
            let groups = config.nGroup ?? 1
            // Left out of config.json: every group for DeepSeek (as before), the GLM configs' default (1) for GLM.
            let topkGroup = config.topkGroup ?? (type.hasPrefix("glm") ? 1 : groups)
            guard groups >= 1, experts % groups == 0, topkGroup >= 1, topkGroup <= groups else {
                throw ForwardError(.configInvalid, "config.json: n_group \(groups) / topk_group \(topkGroup) do not fit \(experts) experts")
            }
            let scaling = config.field("routed_scaling_factor")?.doubleValue ?? 1
            router = .deepseekV3(groups: groups, topkGroup: topkGroup, scaling: Float(scaling), normTopk: config.normTopkProb ?? true)
            bias = try Self.correctionBias(reader, prefix + "gate.e_score_correction_bias", experts: experts)
        case "minimax_m2":
            // MiniMaxM2TopKRouter: no groups, the chosen unbiased scores always renormalised, no scaling; the
            // correction bias belongs to the block (block_sparse_moe.e_score_correction_bias), not to the gate.
            router = .deepseekV3(groups: 1, topkGroup: 1, scaling: 1, normTopk: true)
            bias = try Self.correctionBias(reader, prefix + "e_score_correction_bias", experts: experts)
        case "mixtral":
            router = .softmaxTopK(normalize: true)
            bias = nil
        case "qwen2_moe", "qwen3_moe":
            router = .softmaxTopK(normalize: config.normTopkProb ?? false)
            bias = nil
        case "qwen3_next":  // Qwen3NextTopKRouter: norm_topk_prob defaults to true
            router = .softmaxTopK(normalize: config.normTopkProb ?? true)
            bias = nil
        case "qwen3_5_moe":  // Qwen3VLMoeTextTopKRouter: always renormalised
            router = .softmaxTopK(normalize: true)
            bias = nil
        case "gpt_oss":
            router = .topKSoftmax
            bias = nil
        case "llama4":
            router = .sigmoidTopKOnInput
            bias = nil
        case "deepseek_v4":
            let scaling = Float(config.field("routed_scaling_factor")?.doubleValue ?? 1.5)
            let hash = try Self.hashTable(reader, name: routerName + ".tid2eid", layer: layer, config: config, experts: experts, k: k)
            router = .sqrtSoftplus(scaling: scaling, hash: hash)
            bias = hash == nil ? try Self.correctionBias(reader, routerName + ".bias", experts: experts) : nil
        default:
            throw Transformer.unsupported(type)
        }
        if type == "gpt_oss" {
            naming = try Self.gptOssExperts(reader, config: config, prefix: prefix, experts: experts)
        } else if type == "llama4" {
            // Fused as transformers holds them, or one Linear per expert as the FP8 releases store them.
            if reader.has(prefix + "experts.0.gate_proj.weight") {
                naming = .perExpert(gate: "gate_proj", up: "up_proj", down: "down_proj")
            } else {
                guard reader.has(prefix + "experts.gate_up_proj"), reader.has(prefix + "experts.down_proj") else {
                    throw ForwardError(.notAnMoELayer, "layer \(layer): \(prefix)experts.gate_up_proj and \(prefix)experts.down_proj are missing")
                }
                naming = .fusedInputMajor
            }
        } else if reader.has(prefix + "experts.gate_up_proj") {
            naming = .fused
        } else if reader.has(prefix + "experts.0.w1.weight") {
            naming = .perExpert(gate: "w1", up: "w3", down: "w2")
        } else if reader.has(prefix + "experts.0.gate_proj.weight") {
            naming = .perExpert(gate: "gate_proj", up: "up_proj", down: "down_proj")
        } else {
            throw ForwardError(.notAnMoELayer, "layer \(layer): no expert weights under \(prefix)experts.")
        }
        // Llama 4's MoE block always has its shared expert, and Qwen2-MoE's, Qwen3-Next's and Qwen3.5's a gated one when config.json
        // sizes one: looked for by name, so that a checkpoint without it is refused rather than run without it.
        let gatedSharedRequired = (Transformer.hybridTypes.contains(type) || type == "qwen2_moe") && (config.sharedExpertIntermediateSize ?? 0) > 0
        let sharedRequired = type == "llama4" || gatedSharedRequired
        let sharedPrefix = [prefix + "shared_experts.", prefix + "shared_expert."].first { reader.has($0 + "gate_proj.weight") }
            ?? (sharedRequired ? prefix + "shared_expert." : nil)
        if let sp = sharedPrefix {
            shared = (try reader.weight(sp + "gate_proj.weight"), try reader.weight(sp + "up_proj.weight"), try reader.weight(sp + "down_proj.weight"))
        } else if reader.has(prefix + "shared_experts.w1.weight") {  // DeepSeek-V4's release: w1 gate, w3 up, w2 down
            let sp = prefix + "shared_experts."
            shared = (try reader.weight(sp + "w1.weight"), try reader.weight(sp + "w3.weight"), try reader.weight(sp + "w2.weight"))
        } else {
            shared = nil
        }
        let gateName = prefix + "shared_expert_gate.weight"
        sharedGate = reader.has(gateName) || gatedSharedRequired ? try reader.matrix(gateName) : nil
        normEps = Float(config.field("rms_norm_eps")?.doubleValue ?? 1e-6)
        // The norm before the block (DeepSeek-V4's release calls it ffn_norm), and the weights it multiplies by:
        // Qwen3-Next's and Qwen3.5's scale by 1 + weight.
        let normName = base + (type == "deepseek_v4" && reader.has(base + "ffn_norm.weight") ? "ffn_norm.weight" : "post_attention_layernorm.weight")
        let zeroCentred = Transformer.hybridTypes.contains(type)
        inputNorm = reader.has(normName) ? try reader.vector(normName).map { zeroCentred ? 1 + $0 : $0 } : nil
        swigluLimit = type == "deepseek_v4" ? Float(config.field("swiglu_limit")?.doubleValue ?? 10) : nil
    }

    /// DeepSeek-V4's hash routing table at `name` ([vocab, k] integers, each an expert), when config.json makes
    /// layer `layer` a hash_moe layer (mlp_layer_types, or the release's num_hash_layers: the first ones).
    static func hashTable(_ reader: WeightReader, name: String, layer: Int, config: ModelConfig, experts: Int, k: Int) throws(ForwardError) -> [[Int]]? {
        guard config.isDeepSeekV4HashLayer(layer) else { return nil }
        let (rows, cols, values) = try reader.integers(name)
        guard cols == k, rows >= 1, values.allSatisfy({ $0 >= 0 && $0 < experts }) else {
            throw ForwardError(.shapeMismatch, "\(name) is [\(rows), \(cols)] with experts \(values.min() ?? 0)...\(values.max() ?? 0); a hash layer needs [vocab, num_experts_per_tok \(k)] of experts below \(experts)")
        }
        return (0..<rows).map { Array(values[($0 * cols)..<(($0 + 1) * cols)]) }
    }

    /// The e_score_correction_bias at `name`, if the checkpoint has one: a value per expert.
    static func correctionBias(_ reader: WeightReader, _ name: String, experts: Int) throws(ForwardError) -> [Float]? {
        guard reader.has(name) else { return nil }
        let bias = try reader.vector(name)
        guard bias.count == experts else { throw ForwardError(.shapeMismatch, "\(name) has \(bias.count) values for \(experts) experts") }
        return bias
    }

    /// gpt-oss's expert biases ([E, 2I] and [E, H]) and its SwiGLU's alpha and limit (transformers' defaults,
    /// 1.702 and 7, when config.json leaves them out).
    static func gptOssExperts(_ reader: WeightReader, config: ModelConfig, prefix: String, experts: Int) throws(ForwardError) -> ExpertNaming {
        let p = prefix + "experts."
        guard reader.has(p + "gate_up_proj"), reader.has(p + "down_proj") else {
            throw ForwardError(.notAnMoELayer, "\(p)gate_up_proj and \(p)down_proj (or their _blocks and _scales) are missing")
        }
        let gateUpBias = try reader.matrix(p + "gate_up_proj_bias"), downBias = try reader.matrix(p + "down_proj_bias")
        guard gateUpBias.rows == experts, downBias.rows == experts, gateUpBias.cols % 2 == 0 else {
            throw ForwardError(.shapeMismatch, "\(p)gate_up_proj_bias [\(gateUpBias.rows), \(gateUpBias.cols)] and down_proj_bias [\(downBias.rows), \(downBias.cols)] are not [\(experts), 2 x intermediate] and [\(experts), hidden]")
        }
        let alpha = config.field("swiglu_alpha")?.doubleValue ?? 1.702, limit = config.field("swiglu_limit")?.doubleValue ?? 7
        return .gptOss(gateUpBias: gateUpBias, downBias: downBias, alpha: Float(alpha), limit: Float(limit))
    }

    public var hidden: Int { routerWeight.cols }
    /// Whether the router has DeepSeek's e_score_correction_bias (it changes which experts are chosen).
    public var hasRouterBias: Bool { bias != nil }

    /// Expert `e`'s gate, up and down projections, read from the map as they are used (not gpt-oss's, whose
    /// gate and up outputs are interleaved: runExpert reads those).
    func expert(_ e: Int) throws(ForwardError) -> (gate: Weight, up: Weight, down: Weight) {
        switch naming {
        case .gptOss:
            preconditionFailure("gpt-oss experts are run by runExpert")
        case .fusedInputMajor:
            // Each expert's stacks as Linear weights ([out, in]), the gate rows first, then the up rows.
            let gateUp = try reader.expertRows(prefix + "experts.gate_up_proj", expert: e)
            let down = try reader.expertRows(prefix + "experts.down_proj", expert: e)
            let i = gateUp.rows / 2
            guard gateUp.rows % 2 == 0, gateUp.cols == hidden, down.rows == hidden, down.cols == i else {
                throw ForwardError(.shapeMismatch, "\(prefix)experts: expert \(e)'s gate_up_proj is [in \(gateUp.cols), out \(gateUp.rows)] and down_proj [in \(down.cols), out \(down.rows)]; with hidden \(hidden) they should be [\(hidden), 2 x intermediate] and [intermediate, \(hidden)]")
            }
            return (gateUp.rows(0..<i), gateUp.rows(i..<(2 * i)), down)
        case .perExpert(let g, let u, let d):
            let p = prefix + "experts.\(e)."
            return (try reader.weight(p + g + ".weight"), try reader.weight(p + u + ".weight"), try reader.weight(p + d + ".weight"))
        case .fused:
            // Gate rows first, then up rows: both read in place from the map, like the other layouts.
            let gateUp = try reader.weight(prefix + "experts.gate_up_proj", index: e)
            let i = gateUp.rows / 2
            return (gateUp.rows(0..<i), gateUp.rows(i..<(2 * i)), try reader.weight(prefix + "experts.down_proj", index: e))
        }
    }

    /// The token ids a hash layer is routed by when the caller has none (layer mode's made-up hidden states):
    /// those of whole-model mode's default prompt, i * 7919 + 13 modulo the table's rows.
    func defaultTokenIDs(_ tokens: Int) -> [Int] {
        guard case .sqrtSoftplus(_, let hash?) = router else { return [] }
        return (0..<tokens).map { ($0 * 7919 + 13) % hash.count }
    }

    /// The router's choice for each of `tokens` tokens of `x` (tokens x hidden). `ids`: the tokens' ids, which
    /// a hash layer routes by (defaultTokenIDs when nil).
    public func route(_ x: [Float], tokens: Int, ids: [Int]? = nil) throws(ForwardError) -> [Routing] {
        let logits = try Math.linear(x, tokens: tokens, routerWeight, name: routerName + ".weight")
        var hashed: [[Int]]? = nil
        if case .sqrtSoftplus(_, let hash?) = router {
            let ids = ids ?? defaultTokenIDs(tokens)
            guard ids.count == tokens, ids.allSatisfy({ $0 >= 0 && $0 < hash.count }) else {
                throw ForwardError(.inputOutOfRange, "\(routerName).tid2eid has \(hash.count) rows; the token ids must be below that")
            }
            hashed = ids.map { hash[$0] }
        }
        return (0..<tokens).map { t in
            var row = Array(logits[(t * experts)..<((t + 1) * experts)])
            if let logitBias { for e in 0..<experts { row[e] += logitBias[e] } }
            switch router {
            case .deepseekV3(let groups, let topkGroup, let scaling, let normTopk):
                let scores = row.map(Math.sigmoid)
                let choice = scores.indices.map { scores[$0] + (bias?[$0] ?? 0) }
                let size = experts / groups
                let groupScore = (0..<groups).map { g -> Float in
                    let top = choice[(g * size)..<((g + 1) * size)].sorted(by: >)
                    return top[0] + (size > 1 ? top[1] : 0)
                }
                let keptGroups = Set(topIndices(groupScore, topkGroup))
                let masked = choice.indices.map { keptGroups.contains($0 / size) ? choice[$0] : -Float.infinity }
                let chosen = topIndices(masked, topK).sorted()
                var weights = chosen.map { scores[$0] }
                if normTopk {
                    let sum = weights.reduce(0, +) + 1e-20
                    weights = weights.map { $0 / sum }
                }
                return Routing(experts: chosen, weights: weights.map { $0 * scaling })
            case .softmaxTopK(let normalize):
                let m = row.max() ?? 0
                let e = row.map { expf($0 - m) }
                let z = e.reduce(0, +)
                let probs = e.map { $0 / z }
                let chosen = topIndices(probs, topK).sorted()
                var weights = chosen.map { probs[$0] }
                if normalize {
                    let sum = weights.reduce(0, +)
                    weights = weights.map { $0 / sum }
                }
                return Routing(experts: chosen, weights: weights)
            case .topKSoftmax:
                let top = topIndices(row, topK)
                let m = top.map { row[$0] }.max() ?? 0
                let e = top.map { expf(row[$0] - m) }
                let z = e.reduce(0, +)
                let pairs = zip(top, e.map { $0 / z }).sorted { $0.0 < $1.0 }
                return Routing(experts: pairs.map(\.0), weights: pairs.map(\.1))
            case .sigmoidTopKOnInput:
                let chosen = topIndices(row, topK).sorted()
                return Routing(experts: chosen, weights: chosen.map { Math.sigmoid(row[$0]) })
            case .sqrtSoftplus(let scaling, _):
                // softplus as torch computes it (linear above 20), then the square root.
                let scores = row.map { ($0 > 20 ? $0 : log1pf(expf($0))).squareRoot() }
                let chosen = hashed?[t].sorted() ?? topIndices(scores.indices.map { scores[$0] + (bias?[$0] ?? 0) }, topK).sorted()
                let sum = chosen.reduce(Float(0)) { $0 + scores[$1] } + 1e-20
                return Routing(experts: chosen, weights: chosen.map { scores[$0] / sum * scaling })
            }
        }
    }

    /// Indices of the k largest values (the lower index first among equals).
    func topIndices(_ v: [Float], _ k: Int) -> [Int] {
        Array(v.indices.sorted { v[$0] > v[$1] || (v[$0] == v[$1] && $0 < $1) }.prefix(k))
    }

    /// The block's output for `x` (tokens x hidden), and the routing it used. Experts are read
    /// from the checkpoint one at a time, only those some token chose.
    /// `only`: run just these routed experts (the others' contributions are left out), to sample a
    /// layer of hundreds of experts; nil runs every expert some token chose.
    /// `routing`: this block's routing of `x` when the caller already has it (it is not computed again).
    /// `ids`: the tokens' ids, for a hash layer's routing.
    public func forward(_ x: [Float], tokens: Int, only: Set<Int>? = nil,
                        routing known: [Routing]? = nil, ids: [Int]? = nil) throws(ForwardError) -> (output: [Float], routing: [Routing]) {
        let h = hidden
        precondition(x.count == tokens * h)
        let routing: [Routing]
        if let known { routing = known } else { routing = try route(x, tokens: tokens, ids: ids) }
        var out = [Float](repeating: 0, count: tokens * h)
        var users = [[(token: Int, weight: Float)]](repeating: [], count: experts)
        for (t, r) in routing.enumerated() {
            for (e, w) in zip(r.experts, r.weights) { users[e].append((t, w)) }
        }
        let onInput = router.weighsInputs
        for e in 0..<experts where !users[e].isEmpty && (only?.contains(e) ?? true) {
            let sub = users[e].flatMap { u in x[(u.token * h)..<((u.token + 1) * h)].map { onInput ? $0 * u.weight : $0 } }
            let y = try runExpert(e, sub, tokens: users[e].count)
            for (j, u) in users[e].enumerated() {
                let w = onInput ? 1 : u.weight
                for i in 0..<h { out[u.token * h + i] += w * y[j * h + i] }
            }
        }
        if let shared {
            let y = try Math.swiglu(x, tokens: tokens, gate: shared.gate, up: shared.up, down: shared.down, limit: swigluLimit)
            let gates = try sharedGate.map { m throws(ForwardError) in
                try Math.linear(x, tokens: tokens, m, name: prefix + "shared_expert_gate.weight", rows: 1).map(Math.sigmoid)
            }
            for t in 0..<tokens {
                let g = gates?[t] ?? 1
                for i in 0..<h { out[t * h + i] += g * y[t * h + i] }
            }
        }
        return (out, routing)
    }

}
