import Checkpoint
import SafetensorsFormat
import Support
import WeightReading

/// What a tensor is for in a transformer checkpoint, read from its name.
public struct TensorRole: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case embedding, lmHead = "lm_head", norm, attention, router, routedExpert = "routed_expert"
        case sharedExpert = "shared_expert", denseMLP = "dense_mlp", mtp
        /// A vision or audio tower and its projector: parameters of the model, but no text token goes through them.
        case multimodal
        case other
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
        var name = name
        return name.withUTF8 { bytes in
            withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: bytes.count + 1) { storage in
                classify(NameParts(bytes, storage: storage))
            }
        }
    }

    /// The index N of a Qwen3-Next-style MTP block's `mtp.layers.N.` tensor.
    static func mtpBlockLayer(_ name: String) -> Int? {
        guard name.hasPrefix("mtp.layers.") else { return nil }
        return Int(name.dropFirst("mtp.layers.".count).prefix { $0.isNumber })
    }

    /// Where DeepSeek-V4's MTP layers (`mtp.K.`, outside `layers.`) are tallied: far past any decoder layer, then
    /// reported after the main model's layers.
    static let mtpLayerBase = 1 << 24

    private static func classify(_ n: NameParts) -> TensorRole {
        // DeepSeek-V4's MTP layers (`mtp.K.`): counted apart, as layer mtpLayerBase + K.
        if n.equals(0, "mtp"), n.count > 2, let k = n.number(1) {
            return TensorRole(kind: .mtp, layer: mtpLayerBase + k, expert: nil, fused: false)
        }
        // Qwen3-Next's and Qwen3.5's multi-token-prediction block lives apart from the decoder (mtp.fc,
        // mtp.layers.N.*, mtp.norm): never part of the main model, whatever its own layer numbers say.
        if n.count > 1 && n.equals(0, "mtp") {
            return TensorRole(kind: .mtp, layer: nil, expert: nil, fused: false)
        }
        if MultimodalTower.nameParts.contains(where: { n.contains($0) }) {
            return TensorRole(kind: .multimodal, layer: nil, expert: nil, fused: false)
        }
        var layer: Int? = nil
        var restStart = 0
        if let i = n.firstIndex(of: "layers"), i + 1 < n.count, let l = n.number(i + 1) {
            layer = l
            restStart = i + 2
        }
        guard let layer else {
            // DeepSeek-V4's release: `embed.weight`, `head.weight`.
            if n.equals(0, "embed") { return TensorRole(kind: .embedding, layer: nil, expert: nil, fused: false) }
            if n.equals(0, "head") { return TensorRole(kind: .lmHead, layer: nil, expert: nil, fused: false) }
            if n.contains("embed_tokens") || n.contains("wte") || n.contains("tok_embeddings") {
                return TensorRole(kind: .embedding, layer: nil, expert: nil, fused: false)
            }
            if n.contains("lm_head") || n.contains("output") {
                return TensorRole(kind: .lmHead, layer: nil, expert: nil, fused: false)
            }
            if n.contains(where: { n.hasSuffix($0, "norm") }) {
                return TensorRole(kind: .norm, layer: nil, expert: nil, fused: false)
            }
            return TensorRole(kind: .other, layer: nil, expert: nil, fused: false)
        }
        func role(_ kind: Kind, expert: Int? = nil, fused: Bool = false) -> TensorRole {
            TensorRole(kind: kind, layer: layer, expert: expert, fused: fused)
        }
        let rest = restStart..<n.count
        if let i = n.firstIndex(of: "experts", in: rest) {
            if i + 1 < n.count, let e = n.number(i + 1) { return role(.routedExpert, expert: e) }
            return role(.routedExpert, fused: true)
        }
        if n.contains("shared_experts", in: rest) || n.contains("shared_expert", in: rest) { return role(.sharedExpert) }
        if n.contains("shared_expert_gate", in: rest) { return role(.router) }
        // `mlp.gate.weight`, `block_sparse_moe.gate.weight`, `mlp.router.*`; not `gate_proj`.
        if n.contains("gate", in: rest) || n.contains("router", in: rest) { return role(.router) }
        for marker: StaticString in ["enorm", "hnorm", "eh_proj", "shared_head", "embed_tokens"]
        where n.contains(marker, in: rest) {
            return role(.mtp)
        }
        if n.contains("self_attn", in: rest) || n.contains("attention", in: rest) || n.contains("attn", in: rest) {
            return role(.attention)
        }
        if n.contains("mlp", in: rest) || n.contains("feed_forward", in: rest) || n.contains("block_sparse_moe", in: rest) {
            return role(.denseMLP)
        }
        if rest.contains(where: { n.hasSuffix($0, "norm") }) { return role(.norm) }
        return role(.other)
    }
}

/// The dot-separated parts of a tensor name, compared as bytes (names are
/// classified by the hundred thousand, so this avoids String comparisons).
struct NameParts {
    let bytes: UnsafeBufferPointer<UInt8>
    let ranges: UnsafeMutableBufferPointer<Range<Int>>
    let count: Int

    /// `storage` needs room for one range per dot plus one.
    init(_ bytes: UnsafeBufferPointer<UInt8>, storage: UnsafeMutableBufferPointer<Range<Int>>) {
        self.bytes = bytes
        ranges = storage
        var n = 0
        var start = 0
        for i in 0..<bytes.count where bytes[i] == UInt8(ascii: ".") {
            storage.initializeElement(at: n, to: start..<i)
            n += 1
            start = i + 1
        }
        storage.initializeElement(at: n, to: start..<bytes.count)
        count = n + 1
    }

    func equals(_ i: Int, _ literal: StaticString) -> Bool {
        let r = ranges[i]
        guard r.count == literal.utf8CodeUnitCount else { return false }
        let p = literal.utf8Start
        for k in 0..<r.count where bytes[r.lowerBound + k] != p[k] { return false }
        return true
    }

    func hasSuffix(_ i: Int, _ literal: StaticString) -> Bool {
        let r = ranges[i]
        let n = literal.utf8CodeUnitCount
        guard r.count >= n else { return false }
        let p = literal.utf8Start
        for k in 0..<n where bytes[r.upperBound - n + k] != p[k] { return false }
        return true
    }

    /// The part as a number when it is all digits (at most 9).
    func number(_ i: Int) -> Int? { decimalValue(bytes, ranges[i]) }

    func firstIndex(of literal: StaticString, in range: Range<Int>? = nil) -> Int? {
        (range ?? 0..<count).first { equals($0, literal) }
    }

    func contains(_ literal: StaticString, in range: Range<Int>? = nil) -> Bool {
        firstIndex(of: literal, in: range) != nil
    }

    func contains(where predicate: (Int) -> Bool) -> Bool {
        (0..<count).contains(where: predicate)
    }
}

    /// Per-layer tallies while walking the tensors.
/// Per-layer tallies while walking the tensors; tallies of disjoint tensor sets merge.
private struct LayerTally {
    var experts = Set<Int>()
    var fusedExperts = 0
    var router = false
    var shared = false
    var mtpMarker = false
    var params: UInt64 = 0
    var routed: UInt64 = 0

    mutating func merge(_ o: LayerTally) {
        experts.formUnion(o.experts)
        fusedExperts = max(fusedExperts, o.fusedExperts)
        router = router || o.router
        shared = shared || o.shared
        mtpMarker = mtpMarker || o.mtpMarker
        params += o.params
        routed += o.routed
    }
}

/// Tallies of one group of tensors (one file).
private struct Tally {
    var layers: [Int: LayerTally] = [:]
    var total: UInt64 = 0
    var multimodal: UInt64 = 0
    /// Parameters of an MTP block kept apart from the decoder (mtp.*), and its layers (mtp.layers.N).
    var separateMTP: UInt64 = 0
    var separateMTPLayers = Set<Int>()
    /// Elements and bytes of quantization bookkeeping (scales, zero points, shapes), not parameters.
    var overheadElements: UInt64 = 0
    var overheadBytes: UInt64 = 0
    var sawPerExpert = false
    var sawFused = false

    init() {}

    init(_ tensors: some Sequence<TensorInfo>, counting: ParameterCounting) {
        var layerSlots = Interner<Int>()  // layer -> index into accs
        var accs: [LayerTally] = []
        for t in tensors {
            guard case .parameters(let n) = counting.kind(t) else {
                overheadElements += t.elementCount
                overheadBytes += t.byteCount
                continue
            }
            total += n
            let role = TensorRole.classify(t.name)
            if role.kind == .multimodal { multimodal += n }
            if role.kind == .mtp && role.layer == nil {
                separateMTP += n
                if let l = TensorRole.mtpBlockLayer(t.name) { separateMTPLayers.insert(l) }
            }
            guard let l = role.layer else { continue }
            let slot = layerSlots.id(l)
            if slot == accs.count { accs.append(LayerTally()) }
            accs[slot].params += n
            switch role.kind {
            case .routedExpert:
                accs[slot].routed += n
                if let e = role.expert {
                    accs[slot].experts.insert(e)
                    sawPerExpert = true
                } else {
                    sawFused = true
                    // [E, out, in], or gpt-oss's MXFP4 blocks [E, out, in/32, 16].
                    if t.shape.count == 3 || (t.shape.count == 4 && t.name.hasSuffix("_blocks")) {
                        accs[slot].fusedExperts = max(accs[slot].fusedExperts, Int(clamping: t.shape[0]))
                    }
                }
            case .router: accs[slot].router = true
            case .sharedExpert: accs[slot].shared = true
            case .mtp: accs[slot].mtpMarker = true
            default: break
            }
        }
        for (slot, l) in layerSlots.values.enumerated() { layers[l] = accs[slot] }
    }

    mutating func merge(_ o: Tally) {
        for (l, t) in o.layers { layers[l, default: LayerTally()].merge(t) }
        total += o.total
        multimodal += o.multimodal
        separateMTP += o.separateMTP
        separateMTPLayers.formUnion(o.separateMTPLayers)
        overheadElements += o.overheadElements
        overheadBytes += o.overheadBytes
        sawPerExpert = sawPerExpert || o.sawPerExpert
        sawFused = sawFused || o.sawFused
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
    /// Vision and audio towers and their projectors (TensorRole.Kind.multimodal).
    public let multimodalParameters: UInt64
    /// Quantization bookkeeping (ParameterCounting.Kind.overhead): elements and bytes, apart from the parameters.
    public let overheadElements: UInt64
    public let overheadBytes: UInt64
    public let routedParameters: UInt64
    /// Parameters one text token goes through in the main model: everything except MTP layers, vision and
    /// audio towers, and the routed experts not chosen (k of E count in each MoE layer).
    public let activeParameters: UInt64?
    public let warnings: [Warning]
    /// Disagreements with config.json that make a loader build the model wrongly (an expert or a layer
    /// missing: its weights would be randomly initialised).
    public let problems: [Problem]

    /// `tensors`: every tensor of the checkpoint; `config` when config.json was found.
    public init(tensors: some Sequence<TensorInfo>, config: ModelConfig?, source: String) {
        self.init(tally: Tally(tensors, counting: ParameterCounting(config: config)), config: config, source: source)
    }

    /// The structure of a whole checkpoint, its files classified in parallel.
    public init(files: [SafetensorsFile], config: ModelConfig?, source: String) {
        var tally = Tally()
        let counting = ParameterCounting(config: config)
        for part in parallelMap(files.count, { Tally(files[$0].tensors, counting: counting) }) { tally.merge(part) }
        self.init(tally: tally, config: config, source: source)
    }

    private init(tally: Tally, config: ModelConfig?, source: String) {
        let total = tally.total
        let sawFused = tally.sawFused
        let sawPerExpert = tally.sawPerExpert
        let configLayers = config?.numHiddenLayers
        var summaries: [LayerSummary] = []
        for l in tally.layers.keys.sorted() {
            let a = tally.layers[l]!
            let isMTP = configLayers.map { l >= $0 } ?? a.mtpMarker
            let index = l >= TensorRole.mtpLayerBase ? (configLayers ?? 0) + l - TensorRole.mtpLayerBase : l
            summaries.append(LayerSummary(
                index: index, isMTP: isMTP, routedExperts: max(a.experts.count, a.fusedExperts),
                hasRouter: a.router, hasSharedExperts: a.shared, parameters: a.params, routedParameters: a.routed))
        }
        let main = summaries.filter { !$0.isMTP }
        let moe = main.filter(\.isMoE)
        layers = summaries
        decoderLayers = configLayers ?? main.count
        moeLayers = moe.count
        denseLayers = decoderLayers - moeLayers
        mtpLayers = summaries.filter(\.isMTP).count + tally.separateMTPLayers.count
        let foundExperts = moe.map(\.routedExperts).max() ?? 0
        routedExperts = config?.routedExperts ?? foundExperts
        expertsPerToken = config?.expertsPerToken
        let anyShared = moe.contains(where: \.hasSharedExperts)
        sharedExperts = anyShared ? (config?.nSharedExperts ?? 1) : 0
        routers = summaries.filter(\.hasRouter).count
        expertLayout = sawFused ? .fused : (sawPerExpert ? .perExpert : .none)
        totalParameters = total
        mtpParameters = summaries.filter(\.isMTP).reduce(0) { $0 + $1.parameters } + tally.separateMTP
        multimodalParameters = tally.multimodal
        overheadElements = tally.overheadElements
        overheadBytes = tally.overheadBytes
        routedParameters = main.reduce(0) { $0 + $1.routedParameters }

        var warnings: [Warning] = []
        var problems: [Problem] = []
        if let config {
            for l in main {
                let expected = config.isMoELayer(l.index) ?? false
                if expected && l.routedExperts != routedExperts {
                    problems.append(Problem(file: source, rule: .expertCountMismatch,
                        "layer \(l.index): found \(counted(l.routedExperts, "routed expert")), config.json says \(routedExperts)"))
                } else if !expected && l.isMoE {
                    problems.append(Problem(file: source, rule: .expertCountMismatch,
                        "layer \(l.index): has \(counted(l.routedExperts, "routed expert")), but config.json makes it a dense layer"))
                }
            }
            if main.count != decoderLayers {
                problems.append(Problem(file: source, rule: .layerCountMismatch,
                    "found \(main.count) decoder layers, config.json says \(decoderLayers)"))
            }
        } else if !summaries.isEmpty {
            warnings.append(Warning(file: source, kind: .configMissing,
                "no config.json beside the weights: layer and expert counts come from tensor names alone, active parameters unknown"))
        }
        self.problems = problems
        self.warnings = warnings

        if let k = expertsPerToken, moeLayers > 0 {
            // Per MoE layer, k of its E routed experts are used by a token.
            var active = total - mtpParameters - multimodalParameters - routedParameters
            for l in moe {
                let e = UInt64(l.routedExperts)
                let used = UInt64(min(k, l.routedExperts))
                active += l.routedParameters / e * used + (l.routedParameters % e) * used / e
            }
            activeParameters = active
        } else if moeLayers == 0 {
            activeParameters = total - mtpParameters - multimodalParameters
        } else {
            activeParameters = nil
        }
    }
}
