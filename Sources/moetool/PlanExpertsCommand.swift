import ArgumentParser
import Checkpoint
import ExpertPlacement
import Inspection
import PlacementFiles
import SafetensorsFormat
import StrictJSON
#if canImport(Glibc)
import Glibc
#endif

struct PlanExperts: ReportsErrorsAsJSON {
    static let configuration = CommandConfiguration(
        commandName: "plan-experts",
        abstract: "Decide expert replicas and their GPUs from expert load profiles (EPLB-compatible output).",
        discussion: """
            PROFILE holds observed loads (tokens per expert) for each MoE layer: JSON {"layers": [[...], ...]}, \
            SGLang's {"logical_count": [pass][layer][expert]} (passes summed), CSV layer,expert,load, or the \
            expert_distribution_recorder_<time>.pt SGLang's recorder dumps (read without running any code); \
            any of them zstd-compressed, recognised by content. Several profiles are windows of time in order \
            (one placement is planned for all of them: --robust; SGLang dumps of several ranks are summed per \
            window), or, with --sum-files, parts of one profile added up. Slots are numbered GPU-major (GPU 0's \
            slots first), as EPLB, vLLM and SGLang number them. See Docs/plan-experts.md.
            """)

    @Argument(help: ArgumentHelp("Load profiles (.json, .csv, SGLang's .pt dumps, optionally .zst); several are windows of time, in order.", valueName: "profile"))
    var profiles: [String]

    @Flag(help: "Add the profiles up into one (parts of one period, such as one per rank) instead of taking them as windows.")
    var sumFiles = false

    @Option(help: ArgumentHelp("With several windows: what the one placement keeps low per layer, the worst window's imbalance (max) or a percentile of the windows' (p50 ... p99).", valueName: "max|pNN"))
    var robust: String?

    @Option(help: ArgumentHelp("Write a self-contained HTML report here: GPU loads per layer, a load heat map, replica locations, moves, drift.", valueName: "path"))
    var report: String?

    @Option(help: ArgumentHelp("config.json, a checkpoint directory, or a model id in the Hugging Face cache: experts, groups (n_group), top-k, topk_group.", valueName: "path"))
    var config: String?

    /// `--config` as a path: a model id resolved through the Hugging Face cache.
    var configPath: String? {
        get throws { try config.map { try CheckpointSource.locate($0) } }
    }

    @Option(help: "GPUs in all.")
    var gpus: Int

    @Option(help: "Nodes (default 1, or --gpus / --gpus-per-node).")
    var nodes: Int?

    @Option(help: "GPUs per node (instead of --nodes).")
    var gpusPerNode: Int?

    @Option(help: "Physical expert slots per layer (default: experts rounded up to a multiple of --gpus).")
    var slots: Int?

    @Option(help: "Redundant slots per GPU (instead of --slots): slots = experts + GPUs x this, rounded up to a multiple of --gpus.")
    var redundantPerGpu: Int?

    @Option(help: "SGLang's --ep-num-redundant-experts: slots = experts + this (instead of --slots); with --format sglang, checked against the slots.")
    var epNumRedundantExperts: Int?

    @Option(help: "Expert groups (default: n_group from --config, else 1).")
    var groups: Int?

    @Option(help: "Experts per token, for the traffic estimate (default: num_experts_per_tok from --config).")
    var topk: Int?

    @Option(help: "Groups a token may use (default: topk_group from --config).")
    var topkGroup: Int?

    @Option(help: "hierarchical (groups stay on nodes), global, or auto (per layer the better balance within --max-nodes-per-token).")
    var policy: PolicyChoice = .auto

    @Option(help: "moetool (default) or eplb (DeepSeek's EPLB reproduced, the baseline).")
    var algorithm: AlgorithmChoice = .moetool

    @Option(help: "With --policy auto: the most expected nodes per token a layer may reach.")
    var maxNodesPerToken: Double?

    @Option(help: ArgumentHelp("A deployed placement (moetool or SGLang JSON) to change as little as possible.", valueName: "path"))
    var previous: String?

    @Option(help: "With --previous: the imbalance (max/mean GPU load) each layer must reach (default: within 1% of a fresh plan).")
    var targetImbalance: Double?

    @Option(help: ArgumentHelp("A checkpoint (or a model id in the Hugging Face cache), for the memory the replicas take (bytes per routed expert).", valueName: "path"))
    var checkpoint: String?

    /// `--checkpoint` as a path: a model id resolved through the Hugging Face cache.
    var checkpointPath: String? {
        get throws { try checkpoint.map { try CheckpointSource.locate($0) } }
    }

    @Option(name: .shortAndLong, help: ArgumentHelp("Write the placement here (written whole, then renamed into place).", valueName: "path"))
    var output: String?

    @Option(help: "With -o: the placement's format, moetool (the default: phy2log, log2phy, logcnt, metrics) or sglang (physical_to_logical_map).")
    var format: FormatChoice?

    @Flag(help: "With the text report: a line per layer (policy, imbalance, node imbalance, gap, nodes per token, moves); the JSON report always has them.")
    var perLayer = false

    @OptionGroup var common: CommonOptions

    enum PolicyChoice: String, ExpressibleByArgument, CaseIterable { case hierarchical, global, auto }
    enum AlgorithmChoice: String, ExpressibleByArgument, CaseIterable { case moetool, eplb }
    enum FormatChoice: String, ExpressibleByArgument, CaseIterable { case moetool, sglang }

    func validate() throws {
        if gpus < 1 || gpus > Topology.maxGPUs { throw ValidationError("--gpus must be 1 to \(Topology.maxGPUs)") }
        if let n = nodes, n < 1 || n > gpus { throw ValidationError("--nodes must be 1 to --gpus") }
        if let g = gpusPerNode, g < 1 || g > gpus { throw ValidationError("--gpus-per-node must be 1 to --gpus") }
        if let s = slots, s < 1 || s > Topology.maxSlots { throw ValidationError("--slots must be 1 to \(Topology.maxSlots)") }
        if let r = epNumRedundantExperts, r < 0 || r > Topology.maxSlots { throw ValidationError("--ep-num-redundant-experts must be 0 to \(Topology.maxSlots)") }
        if format == .sglang, let output, !output.hasSuffix(".json") {
            // SGLang reads --init-expert-location as a file only when the name ends in .json (or .pt);
            // any other argument is parsed as JSON text itself.
            throw ValidationError("--format sglang: name the output *.json (\(output) is not): SGLang reads --init-expert-location as a file only by that suffix and parses any other argument as JSON text")
        }
        if let r = redundantPerGpu, r > 1 << 10 { throw ValidationError("--redundant-per-gpu must be 0 to \(1 << 10)") }
        let maxExperts = LoadProfile.maxExperts
        if let g = groups, g < 1 || g > maxExperts { throw ValidationError("--groups must be 1 to \(maxExperts)") }
        if let k = topk, k < 1 || k > maxExperts { throw ValidationError("--topk must be 1 to \(maxExperts) (at most the experts per layer)") }
        if let k = topkGroup, k < 1 || k > maxExperts { throw ValidationError("--topk-group must be 1 to \(maxExperts) (at most the expert groups)") }
        if nodes != nil && gpusPerNode != nil { throw ValidationError("give --nodes or --gpus-per-node, not both") }
        if slots != nil && redundantPerGpu != nil { throw ValidationError("give --slots or --redundant-per-gpu, not both") }
        if let r = redundantPerGpu, r < 0 { throw ValidationError("--redundant-per-gpu must be 0 or more") }
        if let m = maxNodesPerToken, !(m > 0) { throw ValidationError("--max-nodes-per-token must be positive") }
        if maxNodesPerToken != nil && policy != .auto { throw ValidationError("--max-nodes-per-token needs --policy auto") }
        if let t = targetImbalance, !(t >= 1) { throw ValidationError("--target-imbalance is max/mean GPU load: 1 or more") }
        if targetImbalance != nil && previous == nil { throw ValidationError("--target-imbalance needs --previous") }
        if format != nil && output == nil { throw ValidationError("--format needs -o: it is the format of the placement file, which is written only with -o") }
        if profiles.isEmpty { throw ValidationError("give at least one load profile") }
        if let r = robust, RobustObjective(r) == nil { throw ValidationError("--robust must be max or p1 ... p99 (a percentile of the windows)") }
        if robust != nil && sumFiles { throw ValidationError("--robust is for several windows; --sum-files makes one") }
        if let report, let output, report == output { throw ValidationError("--report and -o must be different files") }
        if perLayer && common.json { throw ValidationError("--per-layer is for the text report; the JSON report has every layer already") }
    }

    /// The one-line error (exit status 1), reported by Main. The whole line is escaped: it quotes
    /// file names, JSON keys and CSV fields, and none may move the cursor or rewrite the screen.
    func fail(_ message: String) -> CommandError {
        CommandError("plan_refused", escapeForDisplay(message))
    }

    /// Every file or directory the command reads: the output may be none of them, nor inside one.
    var inputs: [String] { get throws { profiles + [try configPath, previous, try checkpointPath].compactMap { $0 } } }

    func run() throws {
        do {
            try plan()
        } catch let e as PlacementError {
            throw CommandError(e)
        }
    }

    func plan() throws {
        if let output, let conflict = OutputPlacement.conflict(output: output, inputs: try inputs) {
            throw fail("-o \(output) \(conflict)")
        }
        if let report, let conflict = OutputPlacement.conflict(output: report, inputs: try inputs) {
            throw fail("--report \(report) \(conflict)")
        }
        let modelConfig = try configPath.map(readConfig)
        let decoderLayers = modelConfig.flatMap(Self.decoderLayers)
        let (series, windows) = try LoadSeries.read(paths: profiles, sum: sumFiles, layers: decoderLayers,
                                                    expectedExperts: modelConfig?.routedExperts)
        if !windows.droppedLayers.isEmpty {
            let layers = windows.droppedLayers.count == 1 ? "layer" : "layers"
            FileHandleOutput.stderr("note: decoder \(layers) \(DecoderLayers.describe(windows.droppedLayers)) of the dumps had no routed token: taken as dense and left out (give --config to check)\n")
        }
        if series.windows.count == 1, robust != nil { throw fail("--robust needs several windows (profiles); \(series.names[0]) is one") }
        let loads = series.windows.count == 1 ? series.windows[0] : series.mean
        let request = placementRequest(modelConfig)
        let topology = try request.topology(experts: loads.experts)
        if request.routing == nil {
            if maxNodesPerToken != nil { throw fail("--max-nodes-per-token needs the experts per token: give --topk or --config") }
            if topkGroup != nil { throw fail("--topk-group needs the experts per token: give --topk or --config") }
        }
        let previousPlacement = try previous.map { try PlacementFile.read(path: $0, topology: topology, layers: loads.layers, decoderLayers: decoderLayers) }
        let planRequest = request.planRequest(topology: topology, previous: previousPlacement)
        let start = monotonicSeconds()
        let drift = series.windows.count == 1 ? nil
            : try DriftPlanner.plan(series, planRequest, objective: robust.flatMap(RobustObjective.init) ?? .max)
        let plan = try drift?.robust ?? PlacementPlanner.plan(loads.loads, planRequest)
        let seconds = monotonicSeconds() - start
        let baseline = try drift.map { planRequest.algorithm == .eplb ? nil : $0.eplbMean } ?? PlacementPlanner.baseline(loads.loads, planRequest)
        let bytesPerExpert = try checkpointPath.map(expertBytes)
        if let checkpoint, let bytesPerExpert, topology.redundantBytes(bytesPerExpert: bytesPerExpert, layers: loads.layers) == nil {
            throw fail("\(checkpoint): \(bytesPerExpert) bytes per routed expert x \(topology.redundantSlots * loads.layers) redundant replicas is more than 2^64 bytes")
        }
        let format = format ?? .moetool
        if let output {
            let document: JSONValue
            if format == .sglang {
                guard let decoderLayers else {
                    throw fail("--format sglang needs --config with num_hidden_layers: SGLang's file has a row for every decoder layer, dense ones included")
                }
                document = try PlacementFile.sglang(plan, decoderLayers: decoderLayers, redundantExperts: epNumRedundantExperts ?? 0)
            } else {
                document = try PlacementFile.moetool(plan, bytesPerExpert: bytesPerExpert)
            }
            try PlacementFile.write(document, to: output)
        }
        var summary = PlanReport(plan: plan, baseline: baseline, bytesPerExpert: bytesPerExpert, seconds: seconds,
                                 profile: series.names[0], output: output)
        summary.previous = previous
        summary.outputFormat = output == nil ? nil : format.rawValue
        summary.drift = drift.map { DriftReport(plan: $0, names: series.names) }
        summary.htmlReport = report
        if let report {
            try PlanHTML.write(PlanHTML(report: summary, loads: loads.loads, previous: previousPlacement), to: report)
        }
        if common.json {
            FileHandleOutput.document(JSONSerializer.pretty(summary.json()) + "\n")
        } else {
            FileHandleOutput.stdout(summary.text(perLayer: perLayer))
        }
    }

    /// The flags, with the config's numbers where a flag is not given, as the planner's request.
    func placementRequest(_ modelConfig: ModelConfig?) -> PlacementRequest {
        let k = topk ?? modelConfig?.expertsPerToken
        let chosenPolicy: Policy? = switch policy {
        case .auto: nil
        case .hierarchical: .hierarchical
        case .global: .global
        }
        return PlacementRequest(
            gpus: gpus,
            nodes: gpusPerNode.map { .gpusPerNode($0) } ?? .count(nodes ?? 1),
            slots: slots.map { .count($0) } ?? redundantPerGpu.map { .redundantPerGPU($0) } ?? epNumRedundantExperts.map { .redundant($0) } ?? .redundantPerGPU(0),
            groups: groups ?? modelConfig?.nGroup ?? 1,
            policy: chosenPolicy, algorithm: algorithm == .eplb ? .eplb : .moetool,
            routing: k.map { Routing(topk: $0, topkGroup: topkGroup ?? modelConfig?.topkGroup) },
            maxNodesPerToken: maxNodesPerToken, targetImbalance: targetImbalance, threads: common.threads)
    }

    /// The config's decoder layers, MoE or dense (first_k_dense_replace, moe_layer_freq,
    /// mlp_only_layers, decoder_sparse_step), when it gives num_hidden_layers.
    static func decoderLayers(_ c: ModelConfig) -> DecoderLayers? {
        guard let n = c.numHiddenLayers, n >= 1, n <= LoadProfile.maxLayers else { return nil }
        return DecoderLayers(isMoE: (0..<n).map { c.isMoELayer($0) ?? true })
    }

    /// `--config`: a config.json, or the one in a checkpoint directory, checked for what the plan uses.
    func readConfig(_ config: String) throws -> ModelConfig {
        var path = config
        var isDir = stat()
        if stat(path, &isDir) == 0, (isDir.st_mode & S_IFMT) == S_IFDIR { path += "/config.json" }
        let modelConfig: ModelConfig
        do {
            modelConfig = ModelConfig(try ConfigReader.read(path: path, displayName: path))
        } catch {
            throw fail("\(error)")
        }
        if modelConfig.routedExperts == nil {
            throw fail("\(path): no n_routed_experts, num_experts or num_local_experts: not an MoE config")
        }
        try checkConfig(modelConfig, path: path)
        return modelConfig
    }

    /// The config's numbers are used in arithmetic and allocations: each must be in range
    /// before any is used (a top-k of 2^63 would overflow, not just mislead).
    func checkConfig(_ c: ModelConfig, path: String) throws {
        let experts = c.routedExperts ?? 0
        let key = c.int("n_routed_experts") != nil ? "n_routed_experts" : c.int("num_experts") != nil ? "num_experts" : "num_local_experts"
        if experts < 1 || experts > LoadProfile.maxExperts {
            throw fail("\(path): \(key) is \(experts); moetool plans 1 to \(LoadProfile.maxExperts) experts per layer")
        }
        let groups = c.nGroup ?? 1
        if groups < 1 || groups > experts {
            throw fail("\(path): n_group is \(groups); it must be 1 to the experts per layer (\(experts)): fix the config or give --groups")
        }
        if let k = c.expertsPerToken, k < 1 || k > experts {
            throw fail("\(path): num_experts_per_tok is \(k); a token picks 1 to \(experts) experts: fix the config or give --topk")
        }
        if let k = c.topkGroup, k < 1 || k > groups {
            throw fail("\(path): topk_group is \(k); a token uses 1 to \(groups) groups (n_group): fix the config or give --topk-group")
        }
    }

    /// Bytes of one routed expert (all its projections), from a checkpoint's headers.
    func expertBytes(_ path: String) throws -> UInt64 {
        let ckpt: Checkpoint
        do {
            ckpt = try Checkpoint(path: path)
        } catch {
            throw fail("\(path): \(error.problems.first.map { "\($0)" } ?? "invalid checkpoint")")
        }
        do {
            return try RoutedExpertBytes.perExpert(in: ckpt)
        } catch {
            throw fail("\(path): \(error)")
        }
    }
}
