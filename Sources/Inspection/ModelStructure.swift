import Checkpoint
import SafetensorsFormat

/// What a tensor is for in a transformer checkpoint, read from its name.
public struct TensorRole: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case embedding, lmHead = "lm_head", norm, attention, router, routedExpert = "routed_expert"
        case sharedExpert = "shared_expert", denseMLP = "dense_mlp", mtp, other
    }

    public let kind: Kind
    /// Decoder layer index, when the name has a `layers.N.` part.
    public let layer: Int?
    /// Routed expert index for per-expert names (`experts.E.`); nil for fused expert tensors.
    public let expert: Int?
    /// Fused expert tensors (`experts.gate_up_proj` [E, 2I, H]) hold all experts of a layer.
    public let fused: Bool

    /// Classifies `name`. The rules follow the naming of DeepSeek-V2/V3, Qwen2/3-MoE,
    /// Mixtral and Llama-style dense models, as written by transformers and by the
    /// original checkpoints.
    public static func classify(_ name: String) -> TensorRole {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        var layer: Int? = nil
        var rest = parts[...]
        if let i = parts.firstIndex(of: "layers"), i + 1 < parts.count, let l = Int(parts[i + 1]) {
            layer = l
            rest = parts[(i + 2)...]
        }
        guard let layer else {
            if parts.contains("embed_tokens") || parts.contains("wte") || parts.contains("tok_embeddings") {
                return TensorRole(kind: .embedding, layer: nil, expert: nil, fused: false)
            }
            if parts.first == "lm_head" || parts.contains("lm_head") || parts.contains("output") {
                return TensorRole(kind: .lmHead, layer: nil, expert: nil, fused: false)
            }
            if parts.contains(where: { $0.hasSuffix("norm") }) {
                return TensorRole(kind: .norm, layer: nil, expert: nil, fused: false)
            }
            return TensorRole(kind: .other, layer: nil, expert: nil, fused: false)
        }
        func role(_ kind: Kind, expert: Int? = nil, fused: Bool = false) -> TensorRole {
            TensorRole(kind: kind, layer: layer, expert: expert, fused: fused)
        }
        if let i = rest.firstIndex(of: "experts") {
            if i + 1 < rest.endIndex, let e = Int(rest[i + 1]) { return role(.routedExpert, expert: e) }
            return role(.routedExpert, fused: true)
        }
        if rest.contains("shared_experts") || rest.contains("shared_expert") { return role(.sharedExpert) }
        if rest.contains("shared_expert_gate") { return role(.router) }
        if rest.contains("gate") || rest.contains("router") {
            // `mlp.gate.weight`, `block_sparse_moe.gate.weight`, `mlp.router.*`; not `gate_proj`.
            return role(.router)
        }
        let mtpParts: Set<Substring> = ["enorm", "hnorm", "eh_proj", "shared_head", "embed_tokens"]
        if rest.contains(where: { mtpParts.contains($0) }) { return role(.mtp) }
        if rest.contains("self_attn") || rest.contains("attention") || rest.contains("attn") { return role(.attention) }
        if rest.contains("mlp") || rest.contains("feed_forward") || rest.contains("block_sparse_moe") { return role(.denseMLP) }
        if rest.contains(where: { $0.hasSuffix("norm") || $0.hasSuffix("layernorm") }) { return role(.norm) }
        return role(.other)
    }
}

/// One decoder layer as found in the checkpoint.
public struct LayerSummary: Sendable {
    public let index: Int
    public let isMTP: Bool
    /// Routed experts found: distinct `experts.E` indices, or the leading dimension of fused tensors.
    public let routedExperts: Int
    public let hasRouter: Bool
    public let hasSharedExperts: Bool
    public let parameters: UInt64
    public let routedParameters: UInt64
    public var isMoE: Bool { routedExperts > 0 }
}

/// The mixture-of-experts view of a checkpoint: layers, experts and parameter
/// counts, from the tensor names and shapes, checked against config.json.
public struct ModelStructure: Sendable {
    public enum ExpertLayout: String, Sendable {
        case perExpert = "per_expert"
        case fused = "fused"
        case none = "none"
    }

    public let layers: [LayerSummary]
    /// Decoder layers of the main model (MTP layers excluded).
    public let decoderLayers: Int
    public let moeLayers: Int
    public let denseLayers: Int
    public let mtpLayers: Int
    /// Routed experts per MoE layer: from config.json when it says, else the most found in a layer.
    public let routedExperts: Int
    public let expertsPerToken: Int?
    public let sharedExperts: Int
    public let routers: Int
    public let expertLayout: ExpertLayout
    public let totalParameters: UInt64
    public let mtpParameters: UInt64
    public let routedParameters: UInt64
    /// Parameters one token goes through in the main model: everything except MTP
    /// layers and the routed experts not chosen (k of E count in each MoE layer).
    public let activeParameters: UInt64?
    public let warnings: [Warning]

    /// `tensors`: every tensor of the checkpoint; `config` when config.json was found.
    public init(tensors: [TensorInfo], config: ModelConfig?, source: String) {
        struct Acc {
            var experts = Set<Int>()
            var fusedExperts = 0
            var router = false
            var shared = false
            var mtpMarker = false
            var params: UInt64 = 0
            var routed: UInt64 = 0
        }
        var byLayer: [Int: Acc] = [:]
        var total: UInt64 = 0
        var sawPerExpert = false
        var sawFused = false
        for t in tensors {
            let n = t.elementCount
            total += n
            let role = TensorRole.classify(t.name)
            guard let l = role.layer else { continue }
            var acc = byLayer[l, default: Acc()]
            acc.params += n
            switch role.kind {
            case .routedExpert:
                acc.routed += n
                if let e = role.expert {
                    acc.experts.insert(e)
                    sawPerExpert = true
                } else {
                    sawFused = true
                    if t.shape.count == 3 { acc.fusedExperts = max(acc.fusedExperts, Int(clamping: t.shape[0])) }
                }
            case .router: acc.router = true
            case .sharedExpert: acc.shared = true
            case .mtp: acc.mtpMarker = true
            default: break
            }
            byLayer[l] = acc
        }

        let configLayers = config?.numHiddenLayers
        var summaries: [LayerSummary] = []
        for l in byLayer.keys.sorted() {
            let a = byLayer[l]!
            let isMTP = configLayers.map { l >= $0 } ?? a.mtpMarker
            summaries.append(LayerSummary(
                index: l, isMTP: isMTP, routedExperts: max(a.experts.count, a.fusedExperts),
                hasRouter: a.router, hasSharedExperts: a.shared, parameters: a.params, routedParameters: a.routed))
        }
        let main = summaries.filter { !$0.isMTP }
        let moe = main.filter(\.isMoE)
        layers = summaries
        decoderLayers = configLayers ?? main.count
        moeLayers = moe.count
        denseLayers = decoderLayers - moeLayers
        mtpLayers = summaries.filter(\.isMTP).count
        let foundExperts = moe.map(\.routedExperts).max() ?? 0
        routedExperts = config?.routedExperts ?? foundExperts
        expertsPerToken = config?.expertsPerToken
        let anyShared = moe.contains(where: \.hasSharedExperts)
        sharedExperts = anyShared ? (config?.nSharedExperts ?? 1) : 0
        routers = summaries.filter(\.hasRouter).count
        expertLayout = sawFused ? .fused : (sawPerExpert ? .perExpert : .none)
        totalParameters = total
        mtpParameters = summaries.filter(\.isMTP).reduce(0) { $0 + $1.parameters }
        routedParameters = main.reduce(0) { $0 + $1.routedParameters }

        var warnings: [Warning] = []
        if let config {
            for l in main {
                let expected = config.isMoELayer(l.index) ?? false
                if expected && l.routedExperts != routedExperts {
                    warnings.append(Warning(file: source, kind: .expertCountMismatch,
                        "layer \(l.index): found \(l.routedExperts) routed experts, config.json says \(routedExperts)"))
                } else if !expected && l.isMoE {
                    warnings.append(Warning(file: source, kind: .expertCountMismatch,
                        "layer \(l.index): has \(l.routedExperts) routed experts, but config.json makes it a dense layer"))
                }
            }
            if main.count != decoderLayers {
                warnings.append(Warning(file: source, kind: .expertCountMismatch,
                    "found \(main.count) decoder layers, config.json says \(decoderLayers)"))
            }
        } else {
            warnings.append(Warning(file: source, kind: .configMissing,
                "no config.json beside the weights: layer and expert counts come from tensor names alone, active parameters unknown"))
        }
        self.warnings = warnings

        if let k = expertsPerToken, moeLayers > 0 {
            // Per MoE layer, k of its E routed experts are used by a token.
            var active = total - mtpParameters - routedParameters
            for l in moe {
                let e = UInt64(l.routedExperts)
                let used = UInt64(min(k, l.routedExperts))
                active += l.routedParameters / e * used + (l.routedParameters % e) * used / e
            }
            activeParameters = active
        } else if moeLayers == 0 {
            activeParameters = total - mtpParameters
        } else {
            activeParameters = nil
        }
    }
}
