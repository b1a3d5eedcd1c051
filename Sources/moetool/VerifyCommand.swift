import ArgumentParser
import Checkpoint
import ForwardPass
import SafetensorsFormat
import StrictJSON
import Support

struct Verify: ReportsErrorsAsJSON {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Run MoE layers of one or two checkpoints on the CPU and report how far the outputs differ.",
        discussion: """
            Whole-model mode (the default for checkpoints up to 2 GiB of weights): the model runs on the same \
            token ids in both checkpoints; logits, hidden states and routers are compared. Layer mode \
            (--layers, the default for larger checkpoints): each chosen MoE layer (router, routed and shared \
            experts) runs on the same deterministic hidden states. All in float32, weights read in any format \
            inspect recognises (FP8 blocks, compressed-tensors INT4/NVFP4/MXFP4/FP8, gpt-oss's and DeepSeek-V4's \
            FP4 experts), from plain or compressed shards. With B, exit 0 when everything is within the thresholds, \
            1 otherwise; \
            with A alone, a smoke test (every output finite). Architectures (config.json's model_type): \
            \(Transformer.modelTypes.joined(separator: ", ")), and \
            \(ModelConfig.architectureAliases.sorted { $0.key < $1.key }.map { "\($0.key) as \($0.value)" }.joined(separator: ", ")). \
            See Docs/verify.md.
            """)

    @Argument(help: "The reference checkpoint (e.g. the original BF16).") var a: String
    @Argument(help: "The checkpoint to compare (e.g. the converted FP8).") var b: String?
    @OptionGroup var source: CheckpointSource
    @Option(help: "Layer mode: MoE layers to run, e.g. 3,30,60 (\"all\": every MoE layer).") var layers: String?
    @Option(help: "Tokens per run (whole model: deterministic ids; layers: hidden states).") var tokens = 32
    @Option(help: "Layer mode: \"all\" experts, or N: only the N experts A's router picks most often (the rest left out of both).") var experts = "all"
    @Option(help: "Whole model: the token ids to run, e.g. 1,2,3 (default: deterministic ids).") var tokenIds: String?
    @Option(help: "Whole model: fail when fewer tokens than this share keep the same most likely next token (default 0.75).") var minTop1Agreement: Double?
    @Option(help: "Whole model: fail when the mean KL divergence of the next-token distributions (nats) is above this (default 0.01).") var maxKl: Double?
    @Option(help: "Seed of the hidden states.") var seed: UInt64 = 0
    @Option(help: "Fail when a layer's relative error ||a-b||/||a|| is above this.") var maxRelError = 0.15
    @Option(help: "Fail when a layer's output cosine similarity is below this.") var minCosine = 0.99
    @Option(help: "Fail when the share of tokens keeping the same experts is below this.") var minRouterAgreement = 0.6
    @OptionGroup var common: CommonOptions
    @Option(help: ArgumentHelp("Write the outputs (logits, hidden states, router choices) to this safetensors file.", valueName: "file")) var saveOutputs: String?

    func validate() throws {
        // A NaN limit would switch its check off: every limit is a number in its range.
        let limits: [(String, Double, ClosedRange<Double>)] = [
            ("--max-rel-error", maxRelError, 0...Double.greatestFiniteMagnitude), ("--min-cosine", minCosine, -1...1),
            ("--min-router-agreement", minRouterAgreement, 0...1), ("--min-top1-agreement", minTop1Agreement ?? 0, 0...1),
            ("--max-kl", maxKl ?? 0, 0...Double.greatestFiniteMagnitude),
        ]
        for (flag, value, range) in limits where !range.contains(value) {
            let upper = range.upperBound == Double.greatestFiniteMagnitude ? "any finite number from \(Verification.fmt(range.lowerBound))"
                : "a number from \(Verification.fmt(range.lowerBound)) to \(Verification.fmt(range.upperBound))"
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
        if layers != nil, let flag = [(minTop1Agreement, "--min-top1-agreement"), (maxKl, "--max-kl")].first(where: { $0.0 != nil })?.1 {
            throw ValidationError("\(flag) judges the logits of whole-model mode; layer mode (--layers) has no logits")
        }
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
            guard c.config != nil else { throw ForwardError(.configInvalid, "\(path): no config.json beside the weights: verify needs the model's config") }
            return c
        } catch let e as InvalidInput {
            throw CommandError("invalid_input", "\(escapeForDisplay(path)): invalid input (\(counted(e.problems.count, "problem")))",
                               hint: "fix the problems listed (moetool inspect shows the same with --json)",
                               details: e.problems.prefix(200).map(\.description))
        }
    }

    func run() throws {
        do {
            try verify()
        } catch let e as ForwardError {
            throw CommandError(e)
        }
    }

    /// The request the options make (validated already).
    func request() -> VerifyRequest {
        var r = VerifyRequest(a: a, b: b)
        r.tokens = tokens
        r.tokenIds = tokenIds.map { $0.split(separator: ",").map { Int($0)! } }
        r.seed = seed
        r.expertSample = Int(experts)
        r.thresholds.maxRelativeError = maxRelError
        r.thresholds.minCosine = minCosine
        r.thresholds.minRouterAgreement = minRouterAgreement
        if let minTop1Agreement { r.thresholds.minTop1Agreement = minTop1Agreement }
        if let maxKl { r.thresholds.maxKL = maxKl }
        r.saveOutputs = saveOutputs
        r.threads = common.threads
        return r
    }

    func verify() throws {
        let located = try source.locate([a] + (b.map { [$0] } ?? []))
        let ca = try open(located[0])
        let cb = try b.map { _ in try open(located[1]) }
        if let saveOutputs {
            // The outputs never replace, or land inside, what is being verified.
            let inputs = [ca, cb].compactMap { $0 }.flatMap { c in [c.path] + c.files.map(\.path) + (c.configPath.map { [$0] } ?? []) }
            if let why = OutputPlacement.conflict(output: saveOutputs, inputs: inputs) {
                throw ForwardError(.outputUnwritable, "--save-outputs \(escapeForDisplay(saveOutputs)) \(why); choose a file outside the checkpoints")
            }
        }
        let weightBytes = ca.files.reduce(UInt64(0)) { $0 + $1.header.dataBytes }
        let wholeModel = layers == nil && (tokenIds != nil || weightBytes <= Verification.wholeModelLimitBytes)
        if layers == nil && !wholeModel {
            FileHandleOutput.stderr("note: \(a) holds \(weightBytes >> 30) GiB of weights: running every MoE layer (layer mode); give --token-ids for the whole model\n")
        }
        if !wholeModel, let flag = [(minTop1Agreement, "--min-top1-agreement"), (maxKl, "--max-kl")].first(where: { $0.0 != nil })?.1 {
            throw ValidationError("\(flag) judges the logits of whole-model mode, and this checkpoint runs in layer mode; give --token-ids for the whole model")
        }
        if wholeModel && experts != "all" {
            throw ValidationError("--experts applies to layer mode, and this runs the whole model: give --layers too")
        }
        // Progress in steps (a layer, a forward pass), drawn only on a terminal and without -q.
        let bar = StepProgress(label: "verify", quiet: common.quiet)
        var request = request()
        request.progress = { done, total in bar.update(done, of: total) }
        defer { bar.finish() }
        let report = wholeModel
            ? try Verification.model(ca, cb, request: request)
            : try Verification.layers(ca, cb, layers: layers.flatMap { $0 == "all" ? nil : $0.split(separator: ",").map { Int($0)! } },
                                      request: request)
        bar.finish()
        if common.json {
            FileHandleOutput.document(JSONSerializer.pretty(report.json))
        } else {
            FileHandleOutput.stdout(report.text)
        }
        if !report.passed { throw ExitStatus.invalidInput }
    }
}
