import ArgumentParser
import Checkpoint
import ForwardPass
import SafetensorsFormat
import StrictJSON

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Run MoE layers of one or two checkpoints on the CPU and report how far the outputs differ.",
        discussion: """
            Whole-model mode (the default for checkpoints up to 2 GiB of weights): the model runs on the same \
            token ids in both checkpoints; logits, hidden states and routers are compared. Layer mode \
            (--layers, the default for larger checkpoints): each chosen MoE layer (router, routed and shared \
            experts) runs on the same deterministic hidden states. All in float32, weights read from F32, BF16, \
            F16 or FP8 with block scales. With B, exit 0 when everything is within the thresholds, 1 otherwise; \
            with A alone, a smoke test (every output finite). See Docs/verify.md.
            """)

    @Argument(help: "The reference checkpoint (e.g. the original BF16).") var a: String
    @Argument(help: "The checkpoint to compare (e.g. the converted FP8).") var b: String?
    @OptionGroup var source: CheckpointSource
    @Option(help: "Layer mode: MoE layers to run, e.g. 3,30,60 (\"all\": every MoE layer).") var layers: String?
    @Option(help: "Tokens per run (whole model: deterministic ids; layers: hidden states).") var tokens = 32
    @Option(help: "Layer mode: \"all\" experts, or N: only the N experts A's router picks most often (the rest left out of both).") var experts = "all"
    @Option(help: "Whole model: the token ids to run, e.g. 1,2,3 (default: deterministic ids).") var tokenIds: String?
    @Option(help: "Fail when fewer tokens than this share keep the same most likely next token (whole model).") var minTop1Agreement = 0.75
    @Option(help: "Fail when the mean KL divergence of the next-token distributions (nats) is above this (whole model).") var maxKl = 0.01
    @Option(help: "Seed of the hidden states.") var seed: UInt64 = 0
    @Option(help: "Fail when a layer's relative error ||a-b||/||a|| is above this.") var maxRelError = 0.15
    @Option(help: "Fail when a layer's output cosine similarity is below this.") var minCosine = 0.99
    @Option(help: "Fail when the share of tokens keeping the same experts is below this.") var minRouterAgreement = 0.6
    @Flag(help: "Print a JSON report (schema moetool.verify/1).") var json = false
    @Option(help: ArgumentHelp("Write the outputs (logits, hidden states, router choices) to this safetensors file.", valueName: "file")) var saveOutputs: String?

    /// The limits the run was judged by (only those of its mode), for --json.
    func thresholds(model: Bool) -> JSONValue {
        var t = JSONObject([("max_relative_error", .double(maxRelError)), ("min_cosine", .double(minCosine)),
                            ("min_router_agreement", .double(minRouterAgreement))])
        if model {
            t.append("min_top1_agreement", .double(minTop1Agreement))
            t.append("max_kl", .double(maxKl))
        }
        return .object(t)
    }

    /// Most tokens a whole-model run takes.
    static let maxModelTokens = 4096

    func validate() throws {
        // A NaN limit would switch its check off: every limit is a number in its range.
        let limits: [(String, Double, ClosedRange<Double>)] = [
            ("--max-rel-error", maxRelError, 0...Double.greatestFiniteMagnitude), ("--min-cosine", minCosine, -1...1),
            ("--min-router-agreement", minRouterAgreement, 0...1), ("--min-top1-agreement", minTop1Agreement, 0...1),
            ("--max-kl", maxKl, 0...Double.greatestFiniteMagnitude),
        ]
        for (flag, value, range) in limits where !range.contains(value) {
            let upper = range.upperBound == Double.greatestFiniteMagnitude ? "any finite number from \(fmt(range.lowerBound))"
                : "a number from \(fmt(range.lowerBound)) to \(fmt(range.upperBound))"
            throw ValidationError("\(flag) must be \(upper), not \(value)")
        }
        if tokens < 1 || tokens > 1 << 16 { throw ValidationError("--tokens must be 1 to 65536") }
        if let tokenIds, tokenIds.split(separator: ",", omittingEmptySubsequences: false).contains(where: { (Int($0) ?? -1) < 0 }) {
            throw ValidationError("--token-ids takes one or more token ids (non-negative integers) separated by commas")
        }
        if let layers, layers != "all" {
            let numbers = layers.split(separator: ",").compactMap { Int($0) }
            if let twice = numbers.first(where: { n in numbers.filter { $0 == n }.count > 1 }) {
                throw ValidationError("--layers names layer \(twice) twice")
            }
        }
        // Options of the other mode would be silently ignored: refuse them.
        if layers != nil && tokenIds != nil { throw ValidationError("--token-ids applies to whole-model mode; layer mode runs --tokens hidden states") }
        if experts != "all" && (Int(experts) ?? 0) < 1 { throw ValidationError("--experts takes \"all\" or a positive number") }
        if let tokenIds, tokenIds.split(separator: ",").contains(where: { Int($0) == nil }) {
            throw ValidationError("--token-ids takes token ids separated by commas")
        }
        if let layers, layers != "all", layers.split(separator: ",").contains(where: { Int($0) == nil }) {
            throw ValidationError("--layers takes layer numbers separated by commas, e.g. 3,30,60")
        }
    }

    func open(_ path: String) throws -> Checkpoint {
        do {
            let c = try Checkpoint(path: path)
            guard c.config != nil else { throw ForwardError("\(path): no config.json beside the weights: verify needs the model's config") }
            return c
        } catch let e as InvalidInput {
            for p in e.problems.prefix(20) { FileHandleOutput.stderr("error: \(p)\n") }
            throw ExitStatus.invalidInput
        }
    }

    func run() throws {
        do {
            try verify()
        } catch let e as ForwardError {
            FileHandleOutput.stderr("error: \(e)\n")
            throw ExitStatus.invalidInput
        }
    }

    func verify() throws {
        let located = try source.locate([a] + (b.map { [$0] } ?? []))
        let ca = try open(located[0])
        let cb = try b.map { _ in try open(located[1]) }
        if let saveOutputs {
            // The outputs never replace, or land inside, what is being verified.
            let inputs = [ca, cb].compactMap { $0 }.flatMap { c in [c.path] + c.files.map(\.path) + (c.configPath.map { [$0] } ?? []) }
            if let why = OutputPlacement.conflict(output: saveOutputs, inputs: inputs) {
                throw ForwardError("--save-outputs \(escapeForDisplay(saveOutputs)) \(why); choose a file outside the checkpoints")
            }
        }
        if let cb, ca.config?.modelType != cb.config?.modelType {
            throw ForwardError("the checkpoints are different models (model_type \(escapeForDisplay(ca.config?.modelType ?? "?")) and \(escapeForDisplay(cb.config?.modelType ?? "?"))): verify compares a model with a conversion of it")
        }
        let weightBytes = ca.files.reduce(UInt64(0)) { $0 + $1.header.dataBytes }
        if layers == nil && tokenIds == nil && weightBytes > 2 << 30 {
            FileHandleOutput.stderr("note: \(a) holds \(weightBytes >> 30) GiB of weights: running every MoE layer (layer mode); give --token-ids for the whole model\n")
        }
        if layers == nil && (tokenIds != nil || weightBytes <= 2 << 30) {
            guard experts == "all" else {
                throw ValidationError("--experts applies to layer mode, and this runs the whole model: give --layers too")
            }
            return try verifyModel(ca, cb)
        }
        let available = MoELayers.of(ca)
        let chosen = layers.flatMap { $0 == "all" ? nil : $0.split(separator: ",").map { Int($0)! } } ?? available
        if let missing = chosen.first(where: { !available.contains($0) }) {
            throw ForwardError("\(a): layer \(missing) is not an MoE layer (MoE layers: \(available.map(String.init).joined(separator: ",")))")
        }
        guard !chosen.isEmpty else { throw ForwardError("\(a): no MoE layers found") }
        var results: [LayerDifference] = []
        var failures: [String] = []
        var coverage: [ExpertCoverage] = []
        var out = OutputFile()
        for layer in chosen {
            let la = try MoELayer(try WeightReader(ca), config: ca.config!, layer: layer)
            let x = try HiddenStates.make(tokens: tokens, hidden: la.hidden, seed: seed &+ UInt64(layer), norm: la.inputNorm, eps: la.normEps)
            var sample: Set<Int>? = nil
            var routingA: [Routing]? = nil
            if let n = Int(experts) {
                var uses = [Int](repeating: 0, count: la.experts)
                routingA = try la.route(x, tokens: tokens)
                for r in routingA! { for e in r.experts { uses[e] += 1 } }
                sample = Set(uses.indices.sorted { uses[$0] > uses[$1] || (uses[$0] == uses[$1] && $0 < $1) }.prefix(n))
            }
            let ra = try la.forward(x, tokens: tokens, only: sample, routing: routingA)
            let rb: (output: [Float], routing: [Routing])
            // B's layer is read once, for the forward pass and for the experts run alone.
            let lb = try cb.map { c throws(ForwardError) in try MoELayer(try WeightReader(c), config: c.config!, layer: layer) }
            if let lb {
                guard lb.hidden == la.hidden, lb.experts == la.experts, lb.topK == la.topK else {
                    throw ForwardError("layer \(layer): the checkpoints differ in shape (hidden \(la.hidden)/\(lb.hidden), experts \(la.experts)/\(lb.experts), top-k \(la.topK)/\(lb.topK))")
                }
                rb = try lb.forward(x, tokens: tokens, only: sample)
            } else {
                rb = ra
            }
            let d = LayerDifference.between(ra, rb, layer: layer, tokens: tokens, topK: la.topK)
            do {
                // Every expert (or the sample) also runs on its own and is judged alone: one bad expert among the
                // k a token mixes can stay under the layer's limits, and some experts no token reaches at all.
                let layerSweep = try ExpertSweep.compare(la, lb, seed: seed, experts: sample.map { $0.sorted() })
                coverage.append(ExpertCoverage(layer: layer, experts: la.experts, routings: [ra.routing, rb.routing], sweep: layerSweep))
                failures += ExpertSweep.failures(layerSweep, compared: cb != nil, maxRelativeError: maxRelError, minCosine: minCosine)
            }
            if saveOutputs != nil {
                out.floats("layer.\(layer).input", x, shape: [tokens, la.hidden])
                for (prefix, r) in cb == nil ? [("", ra)] : [("a.", ra), ("b.", rb)] {
                    out.floats(prefix + "layer.\(layer).output", r.output, shape: [tokens, la.hidden])
                    out.routing(prefix + "router.layer.\(layer)", r.routing)
                }
            }
            results.append(d)
            if !d.finite { failures.append("layer \(layer): non-finite outputs") }
            if cb != nil {
                if d.relativeError > maxRelError { failures.append("layer \(layer): relative error \(d.relativeError) > \(maxRelError)") }
                if d.cosine < minCosine { failures.append("layer \(layer): cosine \(d.cosine) < \(minCosine)") }
                if d.routerAgreement < minRouterAgreement {
                    failures.append("layer \(layer): router agreement \(d.routerAgreement) < \(minRouterAgreement)")
                }
            }
        }
        if let saveOutputs { try out.write(to: saveOutputs) }
        if json {
            var o = JSONObject()
            o.append("schema", "moetool.verify/1")
            o.append("a", .string(a))
            o.append("b", b.map { .string($0) } ?? .null)
            o.append("mode", "layers")
            o.append("tokens", .number(JSONNumber(tokens)))
            o.append("seed", .number(JSONNumber(seed)))
            o.append("experts", experts == "all" ? .string("all") : .int(Int(experts)!))  // a sample makes a partial check
            o.append("thresholds", thresholds(model: false))
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
            FileHandleOutput.document(JSONSerializer.pretty(.object(o)))
        } else {
            FileHandleOutput.stdout("\(a)\(b.map { " vs \($0)" } ?? ""): \(results.count) MoE layer(s), \(tokens) tokens each, seed \(seed)\n")
            FileHandleOutput.stdout("layer   max abs err    rel error      cosine   routers same   weight change   output norm\n")
            for d in results {
                FileHandleOutput.stdout(String(d.layer).leftPad(5) + fmt(d.maxAbsError).leftPad(14) + fmt(d.relativeError).leftPad(13)
                    + fmt(d.cosine).leftPad(12) + fmt(d.routerAgreement).leftPad(15) + fmt(d.meanWeightChange).leftPad(16)
                    + fmt(d.outputNorm).leftPad(14) + "\n")
            }
            printCoverage(coverage)
            printVerdict(failures)
        }
        if !failures.isEmpty { throw ExitStatus.invalidInput }
    }

    func verifyModel(_ ca: Checkpoint, _ cb: Checkpoint?) throws {
        let ma = try Transformer(ca)
        let ids = tokenIds.map { $0.split(separator: ",").map { Int($0)! } } ?? (0..<tokens).map { ($0 * 7919 + 13) % ma.vocab }
        // Attention over all tokens is quadratic: 8192 tokens of the tiny model already take 40 s.
        guard ids.count <= Verify.maxModelTokens else {
            throw ValidationError("whole-model mode runs at most \(Verify.maxModelTokens) tokens (attention cost grows with their square); use fewer, or layer mode (--layers) for more")
        }
        let ra = try ma.forward(ids)
        var rb = ra
        if let cb {
            let mb = try Transformer(cb)
            guard mb.hidden == ma.hidden, mb.vocab == ma.vocab, mb.layers == ma.layers else {
                throw ForwardError("the checkpoints differ in shape (hidden \(ma.hidden)/\(mb.hidden), vocab \(ma.vocab)/\(mb.vocab), layers \(ma.layers)/\(mb.layers))")
            }
            rb = try mb.forward(ids)
        }
        let d = ModelDifference.between(ra, rb, vocab: ma.vocab, topK: ra.topK)
        // Every routed expert of every MoE layer runs on its own too: the tokens reach only some of them.
        var sweep: [ExpertSweep.ExpertDifference] = []
        var coverage: [ExpertCoverage] = []
        var structure: [String] = []
        for l in MoELayers.of(ca) {
            let la = try MoELayer(try WeightReader(ca), config: ca.config!, layer: l)
            let lb = try cb.map { c throws(ForwardError) in try MoELayer(try WeightReader(c), config: c.config!, layer: l) }
            let layerSweep = try ExpertSweep.compare(la, lb, seed: seed)
            if let lb, lb.hasRouterBias != la.hasRouterBias {
                structure.append("layer \(l): the router's e_score_correction_bias is \(la.hasRouterBias ? "in A but missing from B" : "in B but missing from A")")
            }
            sweep += layerSweep
            coverage.append(ExpertCoverage(layer: l, experts: la.experts, routings: [ra.routing[l] ?? [], rb.routing[l] ?? []],
                                           sweep: layerSweep))
        }
        if let saveOutputs {
            var out = OutputFile()
            out.ints("token_ids", ids, shape: [ids.count])
            for (prefix, r) in cb == nil ? [("", ra)] : [("a.", ra), ("b.", rb)] {
                out.floats(prefix + "logits", r.logits, shape: [ids.count, ma.vocab])
                for (i, h) in r.hidden.enumerated() {
                    out.floats(prefix + (i == 0 ? "hidden.embeddings" : "hidden.layer.\(i - 1)"), h, shape: [ids.count, ma.hidden])
                }
                for (l, routing) in r.routing.sorted(by: { $0.key < $1.key }) { out.routing(prefix + "router.layer.\(l)", routing) }
            }
            try out.write(to: saveOutputs)
        }
        var failures: [String] = []
        if !d.logits.finite { failures.append("logits: non-finite values") }
        if cb != nil {
            if d.logits.relativeError > maxRelError { failures.append("logits: relative error \(fmt(d.logits.relativeError)) > \(maxRelError)") }
            if d.logits.cosine < minCosine { failures.append("logits: cosine \(fmt(d.logits.cosine)) < \(minCosine)") }
            if d.top1Agreement < minTop1Agreement { failures.append("logits: top-1 agreement \(fmt(d.top1Agreement)) < \(minTop1Agreement)") }
            if d.klDivergence > maxKl { failures.append("logits: KL divergence \(fmt(d.klDivergence)) > \(maxKl)") }
            for r in d.routers where r.agreement < minRouterAgreement {
                failures.append("layer \(r.layer): router agreement \(fmt(r.agreement)) < \(minRouterAgreement)")
            }
        }
        failures += structure
        failures += ExpertSweep.failures(sweep, compared: cb != nil, maxRelativeError: maxRelError, minCosine: minCosine)
        if json {
            var o = JSONObject()
            o.append("schema", "moetool.verify/1")
            o.append("a", .string(a))
            o.append("b", b.map { .string($0) } ?? .null)
            o.append("mode", "model")
            o.append("tokens", .number(JSONNumber(ids.count)))
            o.append("thresholds", thresholds(model: true))
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
            o.append("expert_coverage", coverageJSON(coverage))
            FileHandleOutput.document(JSONSerializer.pretty(.object(o)))
        } else {
            FileHandleOutput.stdout("\(a)\(b.map { " vs \($0)" } ?? ""): whole model, \(ids.count) tokens\n")
            FileHandleOutput.stdout("logits: max abs err \(fmt(d.logits.maxAbsError)), rel error \(fmt(d.logits.relativeError)), cosine \(fmt(d.logits.cosine)), top-1 agreement \(fmt(d.top1Agreement)), KL \(fmt(d.klDivergence))\n")
            FileHandleOutput.stdout("hidden states, rel error: " + d.hiddenRelativeError.enumerated().map { i, e in
                (i == 0 ? "embeddings " : "layer \(i - 1) ") + fmt(e) }.joined(separator: ", ") + "\n")
            for r in d.routers {
                FileHandleOutput.stdout("layer \(r.layer) routers: same experts for \(fmt(r.agreement)) of tokens, mean weight change \(fmt(r.weightChange))\n")
            }
            printCoverage(coverage)
            printVerdict(failures)
        }
        if !failures.isEmpty { throw ExitStatus.invalidInput }
    }

    /// Per MoE layer: experts, how many the tokens reached, how many ran on their own, the worst of those.
    func coverageJSON(_ coverage: [ExpertCoverage]) -> JSONValue {
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

    func printCoverage(_ coverage: [ExpertCoverage]) {
        for c in coverage {
            var line = "layer \(c.layer) experts: \(c.reachedByTokens) of \(c.experts) reached by the tokens, \(c.swept) run alone on \(ExpertSweep.tokens) hidden states"
            if let w = c.worst {
                line += w.difference.finite
                    ? ", worst expert \(w.expert): rel error \(fmt(w.difference.relativeError)), cosine \(fmt(w.difference.cosine))"
                    : ", expert \(w.expert) gives non-finite outputs"
            }
            FileHandleOutput.stdout(line + "\n")
        }
    }

    /// "passed", or each failure (the first 20, then how many more).
    func printVerdict(_ failures: [String]) {
        guard !failures.isEmpty else { return FileHandleOutput.stdout("passed\n") }
        var lines = failures.prefix(20).map { "FAILED " + $0 }
        if failures.count > 20 { lines.append("FAILED ... and \(failures.count - 20) more (--json lists them all)") }
        FileHandleOutput.stdout(lines.joined(separator: "\n") + "\n")
    }

    func num(_ v: Double) -> JSONValue { .number(JSONNumber(text: v.isFinite ? fmt(v) : "null")) }
    func fmt(_ v: Double) -> String {
        guard v.isFinite else { return "inf" }
        if v == 0 { return "0" }
        var s = "\(Double(String(format6: v)) ?? v)"
        if s.hasSuffix(".0") { s.removeLast(2) }
        return s
    }
}

extension String {
    /// Six significant digits.
    init(format6 v: Double) {
        let m = abs(v)
        let e = m > 0 ? Int((m.logarithm10()).rounded(.down)) : 0
        let scale = pow10(5 - e)
        self = "\((v * scale).rounded() / scale)"
    }
}

private func pow10(_ n: Int) -> Double {
    var r = 1.0
    if n >= 0 { for _ in 0..<n { r *= 10 } } else { for _ in 0..<(-n) { r /= 10 } }
    return r
}

extension Double {
    func logarithm10() -> Double { log10(self) }
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

    func write(to path: String) throws {
        do {
            _ = try SafetensorsWriter.write(to: path, tensors: specs, metadata: [(key: "format", value: "pt")]) { info, sink in
                try bytes[info.name]!.withUnsafeBytes { try sink.write($0) }
            }
        } catch {
            throw ForwardError("\(path): cannot write the outputs: \(error)")
        }
    }
}

