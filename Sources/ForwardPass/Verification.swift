import Checkpoint
import SafetensorsFormat
import StrictJSON

/// The limits a comparison is judged by. A run is judged only by those of its mode.
public struct VerifyThresholds: Sendable {
    /// A layer's (or the logits') ||a-b|| / ||a||, and each expert's run alone.
    public var maxRelativeError = 0.15
    public var minCosine = 0.99
    /// Share of tokens keeping the same experts.
    public var minRouterAgreement = 0.6
    /// Whole model: share of tokens keeping the same most likely next token.
    public var minTop1Agreement = 0.75
    /// Whole model: mean KL divergence of the next-token distributions, in nats.
    public var maxKL = 0.01

    public init() {}

    func json(model: Bool) -> JSONValue {
        var t = JSONObject([("max_relative_error", .double(maxRelativeError)), ("min_cosine", .double(minCosine)),
                            ("min_router_agreement", .double(minRouterAgreement))])
        if model {
            t.append("min_top1_agreement", .double(minTop1Agreement))
            t.append("max_kl", .double(maxKL))
        }
        return .object(t)
    }
}

/// What to compare: checkpoint A (the reference) with B (its conversion), or A alone (a smoke test: every
/// output finite). `a` and `b` are the names the report shows.
public struct VerifyRequest: Sendable {
    public var a: String
    public var b: String?
    /// Layer mode: tokens of hidden states per layer; whole model: deterministic ids when `tokenIds` is nil.
    public var tokens = 32
    public var tokenIds: [Int]? = nil
    public var seed: UInt64 = 0
    /// Layer mode: only the N experts A's router picks most often run (in both); nil: every expert.
    public var expertSample: Int? = nil
    public var thresholds = VerifyThresholds()
    /// A safetensors file for the outputs (logits, hidden states, router choices).
    public var saveOutputs: String? = nil
    /// Threads of the matrix products (0: all cores).
    public var threads = 0
    /// Called after each step (a layer, or a model's forward pass) with the steps done and the steps in all.
    public var progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil

    public init(a: String, b: String?) {
        self.a = a
        self.b = b
    }
}

/// What verify found, with its verdict: the failures (empty: passed), a text report and a JSON one.
public struct VerifyReport: Sendable {
    public enum Mode: String, Sendable {
        case layers
        case model
    }
    public let mode: Mode
    public let failures: [String]
    public let json: JSONValue
    /// The lines printed for a person; the verdict comes last.
    public let text: String
    public var passed: Bool { failures.isEmpty }
}

/// Runs MoE layers, or whole models, of one or two checkpoints and judges the differences (Docs/verify.md).
public enum Verification {
    /// Checkpoints with more weights than this run in layer mode unless token ids are given.
    public static let wholeModelLimitBytes: UInt64 = 2 << 30
    /// Most tokens a whole-model run takes: attention over all tokens is quadratic (8192 tokens of the tiny
    /// model already take 40 s).
    public static let maxModelTokens = 4096

    /// The checkpoints must be the same model: a conversion is compared with its original.
    static func checkSameModel(_ ca: Checkpoint, _ cb: Checkpoint?) throws(ForwardError) {
        if let cb, ca.config?.modelType != cb.config?.modelType {
            throw ForwardError(.checkpointsDiffer, "the checkpoints are different models (model_type \(escapeForDisplay(ca.config?.modelType ?? "?")) and \(escapeForDisplay(cb.config?.modelType ?? "?"))): verify compares a model with a conversion of it")
        }
    }

    /// The `n` experts the routing picks most often (ties: the lower index).
    public static func mostUsed(_ routing: [Routing], experts: Int, n: Int) -> Set<Int> {
        var uses = [Int](repeating: 0, count: experts)
        for r in routing { for e in r.experts { uses[e] += 1 } }
        return Set(uses.indices.sorted { uses[$0] > uses[$1] || (uses[$0] == uses[$1] && $0 < $1) }.prefix(n))
    }

    /// Layer mode: each of `layers` (MoE layers of A) runs on the same deterministic hidden states in A and B;
    /// every expert (or the sample) also runs alone.
    public static func layers(_ ca: Checkpoint, _ cb: Checkpoint?, layers chosen: [Int]?, request: VerifyRequest) throws(ForwardError) -> VerifyReport {
        try withThreads(request.threads) { () throws(ForwardError) in try runLayers(ca, cb, layers: chosen, request: request) }
    }

    /// Whole-model mode: both models run on the same token ids; logits, hidden states and routers are
    /// compared, and every routed expert of every MoE layer runs alone too.
    public static func model(_ ca: Checkpoint, _ cb: Checkpoint?, request: VerifyRequest) throws(ForwardError) -> VerifyReport {
        try withThreads(request.threads) { () throws(ForwardError) in try runModel(ca, cb, request: request) }
    }

    /// `body` with the matrix products on `threads` threads.
    static func withThreads<R>(_ threads: Int, _ body: () throws(ForwardError) -> R) throws(ForwardError) -> R {
        let result: Result<R, ForwardError> = Math.$threads.withValue(threads) {
            do throws(ForwardError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    static func runLayers(_ ca: Checkpoint, _ cb: Checkpoint?, layers chosen: [Int]?, request: VerifyRequest) throws(ForwardError) -> VerifyReport {
        try checkSameModel(ca, cb)
        if let config = ca.config { try Transformer.checkSizes(config) }
        let available = MoELayers.of(ca)
        let chosen = chosen ?? available
        if let missing = chosen.first(where: { !available.contains($0) }) {
            throw ForwardError(.notAnMoELayer, "\(request.a): layer \(missing) is not an MoE layer (MoE layers: \(available.map(String.init).joined(separator: ",")))")
        }
        guard !chosen.isEmpty else { throw ForwardError(.notAnMoELayer, "\(request.a): no MoE layers found") }
        let limits = request.thresholds
        let tokens = request.tokens
        let readerA = try WeightReader(ca)
        let readerB = try cb.map { c throws(ForwardError) in try WeightReader(c) }
        var results: [LayerDifference] = []
        var failures: [String] = []
        var coverage: [ExpertCoverage] = []
        var out = OutputFile()
        for (done, layer) in chosen.enumerated() {
            defer { request.progress?(done + 1, chosen.count) }
            let la = try MoELayer(readerA, config: ca.config!, layer: layer)
            let x = try HiddenStates.make(tokens: tokens, hidden: la.hidden, seed: request.seed &+ UInt64(layer), norm: la.inputNorm, eps: la.normEps)
            var sample: Set<Int>? = nil
            var routingA: [Routing]? = nil
            if let n = request.expertSample {
                routingA = try la.route(x, tokens: tokens)
                sample = mostUsed(routingA!, experts: la.experts, n: n)
            }
            let ra = try la.forward(x, tokens: tokens, only: sample, routing: routingA)
            let rb: (output: [Float], routing: [Routing])
            // B's layer is read once, for the forward pass and for the experts run alone.
            let lb = try readerB.map { r throws(ForwardError) in try MoELayer(r, config: cb!.config!, layer: layer) }
            if let lb {
                guard lb.hidden == la.hidden, lb.experts == la.experts, lb.topK == la.topK else {
                    throw ForwardError(.checkpointsDiffer, "layer \(layer): the checkpoints differ in shape (hidden \(la.hidden)/\(lb.hidden), experts \(la.experts)/\(lb.experts), top-k \(la.topK)/\(lb.topK))")
                }
                rb = try lb.forward(x, tokens: tokens, only: sample)
            } else {
                rb = ra
            }
            let d = LayerDifference.between(ra, rb, layer: layer, tokens: tokens, topK: la.topK)
            // Every expert (or the sample) also runs on its own and is judged alone: one bad expert among the
            // k a token mixes can stay under the layer's limits, and some experts no token reaches at all.
            let layerSweep = try ExpertSweep.compare(la, lb, seed: request.seed, experts: sample.map { $0.sorted() })
            coverage.append(ExpertCoverage(layer: layer, experts: la.experts, routings: [ra.routing, rb.routing], sweep: layerSweep))
            failures += ExpertSweep.failures(layerSweep, compared: cb != nil, maxRelativeError: limits.maxRelativeError, minCosine: limits.minCosine)
            if request.saveOutputs != nil {
                out.floats("layer.\(layer).input", x, shape: [tokens, la.hidden])
                for (prefix, r) in cb == nil ? [("", ra)] : [("a.", ra), ("b.", rb)] {
                    out.floats(prefix + "layer.\(layer).output", r.output, shape: [tokens, la.hidden])
                    out.routing(prefix + "router.layer.\(layer)", r.routing)
                }
            }
            results.append(d)
            if !d.finite { failures.append("layer \(layer): non-finite outputs") }
            if cb != nil {
                if d.relativeError > limits.maxRelativeError { failures.append("layer \(layer): relative error \(d.relativeError) > \(limits.maxRelativeError)") }
                if d.cosine < limits.minCosine { failures.append("layer \(layer): cosine \(d.cosine) < \(limits.minCosine)") }
                if d.routerAgreement < limits.minRouterAgreement {
                    failures.append("layer \(layer): router agreement \(d.routerAgreement) < \(limits.minRouterAgreement)")
                }
            }
        }
        if let path = request.saveOutputs { try out.write(to: path) }
        return VerifyReport(mode: .layers, failures: failures,
                            json: layersJSON(request, results: results, coverage: coverage, failures: failures),
                            text: layersText(request, results: results, coverage: coverage, failures: failures))
    }

    static func runModel(_ ca: Checkpoint, _ cb: Checkpoint?, request: VerifyRequest) throws(ForwardError) -> VerifyReport {
        try checkSameModel(ca, cb)
        let ma = try Transformer(ca)
        let ids = request.tokenIds ?? (0..<request.tokens).map { ($0 * 7919 + 13) % ma.vocab }
        guard ids.count <= maxModelTokens else {
            throw ForwardError(.inputOutOfRange, "whole-model mode runs at most \(maxModelTokens) tokens (attention cost grows with their square); use fewer, or layer mode (--layers) for more")
        }
        let limits = request.thresholds
        let moeLayers = MoELayers.of(ca)
        // Steps: each model's forward pass, then each MoE layer's experts run alone.
        let steps = (cb == nil ? 1 : 2) + moeLayers.count
        let ra = try ma.forward(ids)
        request.progress?(1, steps)
        var rb = ra
        if let cb {
            let mb = try Transformer(cb)
            guard mb.hidden == ma.hidden, mb.vocab == ma.vocab, mb.layers == ma.layers else {
                throw ForwardError(.checkpointsDiffer, "the checkpoints differ in shape (hidden \(ma.hidden)/\(mb.hidden), vocab \(ma.vocab)/\(mb.vocab), layers \(ma.layers)/\(mb.layers))")
            }
            rb = try mb.forward(ids)
            request.progress?(2, steps)
        }
        let d = ModelDifference.between(ra, rb, vocab: ma.vocab, topK: ra.topK)
        // Every routed expert of every MoE layer runs on its own too: the tokens reach only some of them.
        let readerA = try WeightReader(ca)
        let readerB = try cb.map { c throws(ForwardError) in try WeightReader(c) }
        var sweep: [ExpertSweep.ExpertDifference] = []
        var coverage: [ExpertCoverage] = []
        var structure: [String] = []
        for (i, l) in moeLayers.enumerated() {
            defer { request.progress?(steps - moeLayers.count + i + 1, steps) }
            let la = try MoELayer(readerA, config: ca.config!, layer: l)
            let lb = try readerB.map { r throws(ForwardError) in try MoELayer(r, config: cb!.config!, layer: l) }
            let layerSweep = try ExpertSweep.compare(la, lb, seed: request.seed)
            if let lb, lb.hasRouterBias != la.hasRouterBias {
                structure.append("layer \(l): the router's e_score_correction_bias is \(la.hasRouterBias ? "in A but missing from B" : "in B but missing from A")")
            }
            sweep += layerSweep
            coverage.append(ExpertCoverage(layer: l, experts: la.experts, routings: [ra.routing[l] ?? [], rb.routing[l] ?? []],
                                           sweep: layerSweep))
        }
        if let path = request.saveOutputs {
            var out = OutputFile()
            out.ints("token_ids", ids, shape: [ids.count])
            for (prefix, r) in cb == nil ? [("", ra)] : [("a.", ra), ("b.", rb)] {
                out.floats(prefix + "logits", r.logits, shape: [ids.count, ma.vocab])
                for (i, h) in r.hidden.enumerated() {
                    // DeepSeek-V4's layers hand on hc_mult streams per token: [tokens, streams, hidden].
                    let streams = h.count / (ids.count * ma.hidden)
                    out.floats(prefix + (i == 0 ? "hidden.embeddings" : "hidden.layer.\(i - 1)"), h,
                               shape: streams == 1 ? [ids.count, ma.hidden] : [ids.count, streams, ma.hidden])
                }
                for (l, routing) in r.routing.sorted(by: { $0.key < $1.key }) { out.routing(prefix + "router.layer.\(l)", routing) }
            }
            try out.write(to: path)
        }
        var failures: [String] = []
        if !d.logits.finite { failures.append("logits: non-finite values") }
        if cb != nil {
            if d.logits.relativeError > limits.maxRelativeError { failures.append("logits: relative error \(fmt(d.logits.relativeError)) > \(limits.maxRelativeError)") }
            if d.logits.cosine < limits.minCosine { failures.append("logits: cosine \(fmt(d.logits.cosine)) < \(limits.minCosine)") }
            if d.top1Agreement < limits.minTop1Agreement { failures.append("logits: top-1 agreement \(fmt(d.top1Agreement)) < \(limits.minTop1Agreement)") }
            if d.klDivergence > limits.maxKL { failures.append("logits: KL divergence \(fmt(d.klDivergence)) > \(limits.maxKL)") }
            for r in d.routers where r.agreement < limits.minRouterAgreement {
                failures.append("layer \(r.layer): router agreement \(fmt(r.agreement)) < \(limits.minRouterAgreement)")
            }
        }
        failures += structure
        failures += ExpertSweep.failures(sweep, compared: cb != nil, maxRelativeError: limits.maxRelativeError, minCosine: limits.minCosine)
        return VerifyReport(mode: .model, failures: failures,
                            json: modelJSON(request, ids: ids, difference: d, coverage: coverage, failures: failures),
                            text: modelText(request, ids: ids, difference: d, coverage: coverage, failures: failures))
    }
}

// MARK: - Reports

extension Verification {
    /// The fields both modes' JSON reports start with.
    static func header(_ request: VerifyRequest, mode: VerifyReport.Mode) -> JSONObject {
        var o = JSONObject()
        o.append("schema", "moetool.verify/1")
        o.append("a", .string(request.a))
        o.append("b", request.b.map { .string($0) } ?? .null)
        o.append("mode", .string(mode.rawValue))
        return o
    }

    static func layersJSON(_ request: VerifyRequest, results: [LayerDifference], coverage: [ExpertCoverage], failures: [String]) -> JSONValue {
        var o = header(request, mode: .layers)
        o.append("tokens", .number(JSONNumber(request.tokens)))
        o.append("seed", .number(JSONNumber(request.seed)))
        o.append("experts", request.expertSample.map { .int($0) } ?? .string("all"))  // a sample makes a partial check
        o.append("thresholds", request.thresholds.json(model: false))
        o.append("passed", .bool(failures.isEmpty))
        o.append("failures", .array(failures.map { .string($0) }))
        o.append("layers", .array(results.map { d in
            .object(JSONObject([
                ("layer", .number(JSONNumber(d.layer))), ("max_abs_error", num(d.maxAbsError)),
                ("relative_error", num(d.relativeError)), ("cosine", num(d.cosine)),
                ("router_agreement", num(d.routerAgreement)), ("mean_weight_change", num(d.meanWeightChange)),
                ("output_norm", num(d.outputNorm)), ("finite", .bool(d.finite)),
            ]))
        }))
        o.append("expert_coverage", coverageJSON(coverage))
        return .object(o)
    }

    static func layersText(_ request: VerifyRequest, results: [LayerDifference], coverage: [ExpertCoverage], failures: [String]) -> String {
        var s = "\(request.a)\(request.b.map { " vs \($0)" } ?? ""): \(results.count) MoE layer\(results.count == 1 ? "" : "s"), \(request.tokens) tokens each, seed \(request.seed)\n"
        s += "layer   max abs err    rel error      cosine   routers same   weight change   output norm\n"
        for d in results {
            s += pad(String(d.layer), 5) + pad(fmt(d.maxAbsError), 14) + pad(fmt(d.relativeError), 13) + pad(fmt(d.cosine), 12)
                + pad(fmt(d.routerAgreement), 15) + pad(fmt(d.meanWeightChange), 16) + pad(fmt(d.outputNorm), 14) + "\n"
        }
        return s + coverageText(coverage, compared: request.b != nil) + verdictText(failures)
    }

    static func modelJSON(_ request: VerifyRequest, ids: [Int], difference d: ModelDifference, coverage: [ExpertCoverage],
                          failures: [String]) -> JSONValue {
        var o = header(request, mode: .model)
        o.append("tokens", .number(JSONNumber(ids.count)))
        o.append("thresholds", request.thresholds.json(model: true))
        o.append("token_ids", .array(ids.map { .number(JSONNumber($0)) }))
        o.append("passed", .bool(failures.isEmpty))
        o.append("failures", .array(failures.map { .string($0) }))
        o.append("logits", .object(JSONObject([
            ("max_abs_error", num(d.logits.maxAbsError)), ("relative_error", num(d.logits.relativeError)),
            ("cosine", num(d.logits.cosine)), ("top1_agreement", num(d.top1Agreement)), ("kl_divergence", num(d.klDivergence)),
            ("norm", num(d.logits.outputNorm)), ("finite", .bool(d.logits.finite)),
        ])))
        o.append("hidden_states", .array(d.hiddenRelativeError.enumerated().map { i, e in
            .object(JSONObject([("after", .string(i == 0 ? "embeddings" : "layer \(i - 1)")), ("relative_error", num(e))]))
        }))
        o.append("moe_layers", .array(d.routers.map { r in
            .object(JSONObject([("layer", .number(JSONNumber(r.layer))), ("router_agreement", num(r.agreement)),
                                ("mean_weight_change", num(r.weightChange))]))
        }))
        if !d.keySelections.isEmpty {
            o.append("key_selections", .array(d.keySelections.map { k in
                .object(JSONObject([("layer", .int(k.layer)), ("queries", .int(k.queries)), ("same_keys", .int(k.same)),
                                    ("queries_dropping_keys", .int(k.sparse))]))
            }))
        }
        o.append("expert_coverage", coverageJSON(coverage))
        return .object(o)
    }

    static func modelText(_ request: VerifyRequest, ids: [Int], difference d: ModelDifference, coverage: [ExpertCoverage],
                          failures: [String]) -> String {
        var s = "\(request.a)\(request.b.map { " vs \($0)" } ?? ""): whole model, \(ids.count) token\(ids.count == 1 ? "" : "s")\n"
        guard request.b != nil else {
            // A alone: a smoke test; there is nothing to compare, only whether the outputs are finite.
            s += "logits: norm \(fmt(d.logits.outputNorm)), \(d.logits.finite ? "every value finite" : "NOT every value finite")\n"
            return s + coverageText(coverage, compared: request.b != nil) + verdictText(failures)
        }
        s += "logits: max abs err \(fmt(d.logits.maxAbsError)), rel error \(fmt(d.logits.relativeError)), cosine \(fmt(d.logits.cosine)), top-1 agreement \(fmt(d.top1Agreement)), KL \(fmt(d.klDivergence))\n"
        s += "hidden states, rel error: " + d.hiddenRelativeError.enumerated().map { i, e in
            (i == 0 ? "embeddings " : "layer \(i - 1) ") + fmt(e) }.joined(separator: ", ") + "\n"
        for r in d.routers {
            let same = Int((r.agreement * Double(ids.count)).rounded())
            s += "layer \(r.layer) routers: same experts for \(same) of \(ids.count) token\(ids.count == 1 ? "" : "s"), mean weight change \(fmt(r.weightChange))\n"
        }
        for k in d.keySelections {
            s += "layer \(k.layer) sparse attention: same keys for \(k.same) of \(k.queries) queries; \(k.sparse) attend to only some of the keys before them\n"
        }
        return s + coverageText(coverage, compared: request.b != nil) + verdictText(failures)
    }

    /// Per MoE layer: experts, how many the tokens reached, how many ran on their own, the worst of those.
    static func coverageJSON(_ coverage: [ExpertCoverage]) -> JSONValue {
        .array(coverage.map { c in
            var o = JSONObject([("layer", .int(c.layer)), ("experts", .int(c.experts)), ("reached_by_tokens", .int(c.reachedByTokens)),
                                ("run_alone", .int(c.swept))])
            if let w = c.worst {
                o.append("worst_expert", .int(w.expert))
                o.append("worst_relative_error", num(w.difference.relativeError))
                o.append("worst_cosine", num(w.difference.cosine))
                o.append("worst_finite", .bool(w.difference.finite))
            }
            return .object(o)
        })
    }

    /// `compared`: B was given (else the worst expert is only whether some output is not finite).
    static func coverageText(_ coverage: [ExpertCoverage], compared: Bool) -> String {
        coverage.map { c in
            var line = "layer \(c.layer) experts: \(c.reachedByTokens) of \(c.experts) reached by the tokens, \(c.swept) run alone on \(ExpertSweep.tokens) hidden states"
            if let w = c.worst, !compared {
                line += w.difference.finite ? ", every output finite" : ", expert \(w.expert) gives non-finite outputs"
            } else if let w = c.worst {
                line += w.difference.finite
                    ? ", worst expert \(w.expert): rel error \(fmt(w.difference.relativeError)), cosine \(fmt(w.difference.cosine))"
                    : ", expert \(w.expert) gives non-finite outputs"
            }
            return line + "\n"
        }.joined()
    }

    /// "passed", or each failure (the first 20, then how many more).
    static func verdictText(_ failures: [String]) -> String {
        guard !failures.isEmpty else { return "passed\n" }
        var lines = failures.prefix(20).map { "FAILED " + $0 }
        if failures.count > 20 { lines.append("FAILED ... and \(failures.count - 20) more (--json lists them all)") }
        return lines.joined(separator: "\n") + "\n"
    }

    static func num(_ v: Double) -> JSONValue { .number(JSONNumber(text: v.isFinite ? fmt(v) : "null")) }

    /// Six significant digits, without a trailing ".0"; "inf" for what is not finite.
    public static func fmt(_ v: Double) -> String {
        guard v.isFinite else { return "inf" }
        if v == 0 { return "0" }
        let e = Int(log10(abs(v)).rounded(.down))
        // 10^(5-e) by repeated multiplication or division, as the reports have always rounded.
        var scale = 1.0
        if 5 - e >= 0 { for _ in 0..<(5 - e) { scale *= 10 } } else { for _ in 0..<(e - 5) { scale /= 10 } }
        var s = "\((v * scale).rounded() / scale)"
        if s.hasSuffix(".0") { s.removeLast(2) }
        return s
    }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
}

#if canImport(Glibc)
import Glibc
#endif

/// Tensors gathered for --save-outputs, written as one safetensors file (atomically).
struct OutputFile {
    var specs: [TensorSpec] = []
    var bytes: [String: [UInt8]] = [:]

    mutating func floats(_ name: String, _ v: [Float], shape: [Int]) {
        specs.append(TensorSpec(name: name, dtype: .F32, shape: shape.map(UInt64.init)))
        bytes[name] = v.withUnsafeBytes { Array($0) }
    }

    mutating func ints(_ name: String, _ v: [Int], shape: [Int]) {
        specs.append(TensorSpec(name: name, dtype: .I64, shape: shape.map(UInt64.init)))
        bytes[name] = v.map { Int64($0).littleEndian }.withUnsafeBytes { Array($0) }
    }

    /// `<name>.experts` (I64, tokens x k, ascending) and `<name>.weights` (F32).
    mutating func routing(_ name: String, _ r: [Routing]) {
        let k = r.first?.experts.count ?? 0
        ints(name + ".experts", r.flatMap(\.experts), shape: [r.count, k])
        floats(name + ".weights", r.flatMap(\.weights), shape: [r.count, k])
    }

    func write(to path: String) throws(ForwardError) {
        do {
            _ = try SafetensorsWriter.write(to: path, tensors: specs, metadata: [(key: "format", value: "pt")]) { info, sink in
                try bytes[info.name]!.withUnsafeBytes { try sink.write($0) }
            }
        } catch {
            throw ForwardError(.outputUnwritable, "\(path): cannot write the outputs: \(error)")
        }
    }
}
