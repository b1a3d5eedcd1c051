import Checkpoint
import NumberFormats
import SafetensorsFormat
import StrictJSON
import WeightReading
import Support

/// FP8 weights and their block scales.
public struct QuantizationSummary: Sendable {
    public let method: String?
    public let format: String?
    public let blockSize: [Int]?
    public let fp8Weights: Int
    public let withScale: Int
    public let withoutScale: [String]
    /// Scales stored in another shard than their weight (DeepSeek does this).
    public let scalesInOtherShard: Int
    /// Scales whose shape is not the block grid of their weight.
    public let scaleShapeMismatches: [String]
    /// Encoded weights by encoding (WeightEncoding.name), sorted by name.
    public let encodings: [(name: String, weights: Int)]
    /// Encoded weights by encoding and layout (how they are grouped and scaled), sorted.
    public let layouts: [(encoding: String, layout: String, weights: Int)]
    /// 2-D `.weight` tensors stored as plain floats in a checkpoint that has encoded weights: what was left
    /// unquantized (routers, heads, embeddings, ...), sorted.
    public let unquantized: [String]

    init(checkpoint: Checkpoint) {
        let q = checkpoint.config?.quantizationConfig
        method = q?["quant_method"]?.stringValue
        format = q?["fmt"]?.stringValue ?? q?["format"]?.stringValue
        let block = checkpoint.declaredBlock
        blockSize = block.map { [$0.rows, $0.cols] }
        struct Part: Sendable {
            var fp8 = 0
            var paired = 0
            var missing: [String] = []
            var elsewhere = 0
            var mismatched: [String] = []
            /// Encoded weights by WeightEncoding.name.
            var encodings: [String: Int] = [:]
            var layouts: [String: Int] = [:]
            var plain2D: [String] = []
        }
        // Files are independent and `locate` only reads: count them in parallel.
        let parts = parallelMap(checkpoint.files.count) { fileIndex -> Part in
            var p = Part()
            for t in checkpoint.files[fileIndex].tensors {
                // Packed weights (compressed-tensors `_packed`, gpt-oss `_blocks`), named by their logical weight.
                // (Both end in a letter no `.weight`, `.bias` or `_scale_inv` ends in: most names are passed at once.)
                let last = t.name.utf8.last
                if last == UInt8(ascii: "d") || last == UInt8(ascii: "s"),
                   let base = ["_packed", "_blocks"].first(where: { t.name.hasSuffix($0) }).map({ String(t.name.dropLast($0.count)) }),
                   let logical = try? checkpoint.logicalWeight(base), logical.codes.tensor.name == t.name {
                    p.encodings[logical.encoding.name, default: 0] += 1
                    p.layouts[logical.encoding.name + "\u{0}" + logical.encoding.layout(codes: t), default: 0] += 1
                }
                // ModelOpt NVFP4: U8 codes under the weight's own name.
                if t.dtype == .U8, let encoding = checkpoint.modelOptNVFP4(t) {
                    p.encodings[encoding.name, default: 0] += 1
                    p.layouts[encoding.name + "\u{0}" + encoding.layout(codes: t), default: 0] += 1
                }
                // DeepSeek-V4's FP4 experts: I8 codes under the weight's own name, their E8M0 exponents in `.scale`.
                if t.dtype == .I8, t.name.hasSuffix(".weight"), checkpoint.blockScale(of: t) != nil,
                   let encoding = try? checkpoint.encoding(of: t, inFile: fileIndex) {
                    p.encodings[encoding.name, default: 0] += 1
                    p.layouts[encoding.name + "\u{0}" + encoding.layout(codes: t), default: 0] += 1
                }
                if t.shape.count == 2, t.dtype == .BF16 || t.dtype == .F16 || t.dtype == .F32, t.name.hasSuffix(".weight") {
                    p.plain2D.append(t.name)
                }
                guard t.dtype.isFP8 && t.name.hasSuffix(".weight") else { continue }
                p.fp8 += 1
                guard let scale = checkpoint.blockScale(of: t) else {
                    p.missing.append(t.name)
                    continue
                }
                p.paired += 1
                if scale.file != fileIndex { p.elsewhere += 1 }
                // The one recognition every command uses says whether the scale fits its weight.
                do throws(WeightReadError) {
                    let encoding = try checkpoint.encoding(of: t, inFile: fileIndex)
                    p.encodings[encoding.name, default: 0] += 1
                    p.layouts[encoding.name + "\u{0}" + encoding.layout(codes: t), default: 0] += 1
                } catch {
                    p.mismatched.append(t.name)
                }
            }
            return p
        }
        encodings = parts.reduce(into: [String: Int]()) { all, part in all.merge(part.encodings, uniquingKeysWith: +) }
            .sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        layouts = parts.reduce(into: [String: Int]()) { all, part in all.merge(part.layouts, uniquingKeysWith: +) }
            .sorted { $0.key < $1.key }.map { key, count in
                let parts = key.split(separator: "\u{0}", maxSplits: 1).map(String.init)
                return (parts[0], parts.count > 1 ? parts[1] : "", count)
            }
        unquantized = encodings.isEmpty ? [] : parts.flatMap(\.plain2D).sorted()
        let fp8 = parts.reduce(0) { $0 + $1.fp8 }
        let paired = parts.reduce(0) { $0 + $1.paired }
        let missing = parts.flatMap(\.missing)
        let elsewhere = parts.reduce(0) { $0 + $1.elsewhere }
        let mismatched = parts.flatMap(\.mismatched)
        fp8Weights = fp8
        withScale = paired
        withoutScale = missing
        scalesInOtherShard = elsewhere
        scaleShapeMismatches = mismatched
    }

    var isEmpty: Bool { fp8Weights == 0 && method == nil && encodings.isEmpty }
}

/// Everything `moetool inspect` reports about a valid checkpoint. Built from
/// headers alone; the data passes (`scan`, `checksums`) are filled in on request.
public struct InspectReport: Sendable {
    public let checkpoint: Checkpoint
    public let structure: ModelStructure
    public let quantization: QuantizationSummary
    public let parametersByDtype: [(Dtype, UInt64)]
    public let bytesByDtype: [(Dtype, UInt64)]
    /// `kind`: the stored dtype, or for an encoded weight (scanned decoded) its encoding's name.
    public var scan: [(name: String, kind: String, stats: TensorStats)]? = nil
    /// With `scan`: encoded weights with scales that cannot be right (zero, negative, not finite, ue8m0 not a power of two).
    public var scaleFindings: [(name: String, findings: TensorScan.ScaleFindings)] = []
    public var checksums: [(file: String, sha256: String)]? = nil

    public init(checkpoint: Checkpoint) {
        self.checkpoint = checkpoint
        structure = ModelStructure(files: checkpoint.files, config: checkpoint.config, source: checkpoint.path)
        quantization = QuantizationSummary(checkpoint: checkpoint)
        let completeness = ExpectedTensors.check(checkpoint)
        self.completeness = completeness
        missingPatterns = completeness.map { InspectReport.collapsed($0.missing) } ?? []
        unexpectedPatterns = completeness.map { InspectReport.collapsed($0.unexpected) } ?? []
        (warnings, problems) = InspectReport.findings(checkpoint: checkpoint, structure: structure, quantization: quantization,
                                                      completeness: completeness, missing: missingPatterns,
                                                      unexpected: unexpectedPatterns)
        // Totals per dtype, indexed by rank (no hashing per tensor).
        var params = [UInt64](repeating: 0, count: Dtype.allCases.count)
        var bytes = [UInt64](repeating: 0, count: Dtype.allCases.count)
        var seen = [Bool](repeating: false, count: Dtype.allCases.count)
        // Parameters as the model has them (packed codes unpacked); quantization bookkeeping is counted apart.
        let counting = ParameterCounting(config: checkpoint.config)
        for f in checkpoint.files {
            for t in f.tensors {
                guard case .parameters(let n) = counting.kind(t) else { continue }
                let r = t.dtype.rank
                params[r] += n
                bytes[r] += t.byteCount
                seen[r] = true
            }
        }
        let present = Dtype.allCases.reversed().filter { seen[$0.rank] }
        parametersByDtype = present.map { ($0, params[$0.rank]) }
        bytesByDtype = present.map { ($0, bytes[$0.rank]) }
    }

    /// config.json against the tensors (nil: an architecture or config this check does not cover).
    public let completeness: ExpectedTensors.Report?

    /// The completeness check's missing and unexpected names, collapsed into patterns once.
    let missingPatterns: [NamePattern]
    let unexpectedPatterns: [NamePattern]
    /// What is worth telling: inconsistencies that load correctly.
    public let warnings: [Warning]
    /// What makes the checkpoint load wrongly though every file is valid: experts, layers or tensors missing
    /// against config.json, wrong shapes, FP8 weights without their block scales or with a scale grid of another shape.
    public let problems: [Problem]

    /// Names collapsed into patterns (`model.layers.{3..60}.mlp.experts.{0..255}.up_proj.weight`).
    static func collapsed(_ names: [String]) -> [NamePattern] {
        NamePatterns.collapse(names.map { TensorInfo(name: $0, dtype: .F32, shape: [], begin: 0, end: 0) })
    }

    static func counted(_ p: NamePattern) -> String { p.pattern + (p.count > 1 ? " (\(p.count) tensors)" : "") }

    static func findings(checkpoint: Checkpoint, structure: ModelStructure, quantization: QuantizationSummary,
                         completeness: ExpectedTensors.Report?, missing: [NamePattern],
                         unexpected: [NamePattern]) -> (warnings: [Warning], problems: [Problem]) {
        let path = checkpoint.path
        let warnings = checkpoint.warnings + structure.warnings + unexpected.map {
            Warning(file: path, kind: .unexpectedTensor, "\(counted($0)): not described by config.json; a loader ignores it")
        }
        let oversized = checkpoint.config?.oversizedField.map { field in
            [Problem(file: path, rule: .configInvalid,
                     "config.json: \(field.key) is \(field.value), larger than any model's (at most \(field.limit)): no tensor is checked against it")]
        } ?? []
        let problems = structure.problems + oversized
            + missing.map { Problem(file: path, rule: .tensorMissing, "\(counted($0)): config.json implies it, the checkpoint lacks it") }
            + (completeness?.wrongShape ?? []).map {
                Problem(file: path, tensor: $0.name, rule: .tensorWrongShape,
                        "is \(formatShape($0.found)), config.json makes it \(formatShape($0.expected))")
            }
            + quantization.withoutScale.map {
                Problem(file: path, tensor: $0, rule: .scaleMissing, "FP8 weight without a weight_scale_inv (or weight_scale) tensor")
            }
            + quantization.scaleShapeMismatches.map {
                Problem(file: path, tensor: $0, rule: .scaleGridMismatch,
                        "its scale is not shaped as the block grid of the weight (quantization_config.weight_block_size, 128x128 when absent)")
            }
        return (warnings, problems)
    }

    static func problemJSON(_ p: Problem) -> JSONValue {
        .object(JSONObject([
            ("file", .string(p.file)), ("tensor", p.tensor.map { .string($0) } ?? .null),
            ("rule", .string(p.rule.rawValue)), ("message", .string(p.message)), ("hint", .string(p.rule.hint)),
        ]))
    }

    // MARK: JSON

    public static let schema = "moetool.inspect/1"

    /// The `--json` document (schema in Docs/inspect.md). `tensorList` is added when listing tensors.
    /// `strict`: warnings make the checkpoint invalid too (`--strict`).
    public func json(tensorList: JSONValue? = nil, strict: Bool = false) -> JSONValue {
        var o = JSONObject()
        o.append("schema", .string(InspectReport.schema))
        o.append("path", .string(checkpoint.path))
        let problems = problems
        o.append("valid", .bool(problems.isEmpty && !(strict && !warnings.isEmpty)))
        o.append("problems", .array(problems.map(InspectReport.problemJSON)))
        o.append("layout", .string(checkpoint.layout.rawValue))
        o.append("files", .int(checkpoint.files.count))
        o.append("file_names", .array(checkpoint.fileNames.map { .string($0) }))
        o.append("file_bytes", .uint(checkpoint.fileBytes))
        o.append("compressed_files", .uint(UInt64(checkpoint.files.filter(\.isCompressed).count)))
        o.append("tensors", .int(checkpoint.tensorCount))
        o.append("bytes", .uint(checkpoint.dataBytes))
        o.append("parameters", .uint(structure.totalParameters))
        o.append("parameters_by_dtype", .object(JSONObject(parametersByDtype.map { ($0.0.rawValue, .uint($0.1)) })))
        o.append("quantization_overhead", .object(JSONObject([("elements", .uint(structure.overheadElements)), ("bytes", .uint(structure.overheadBytes))])))
        o.append("bytes_by_dtype", .object(JSONObject(bytesByDtype.map { ($0.0.rawValue, .uint($0.1)) })))
        if let c = checkpoint.config {
            var cfg = JSONObject()
            cfg.append("path", .string(checkpoint.configPath ?? ""))
            cfg.append("model_type", c.modelType.map { .string($0) } ?? .null)
            cfg.append("architectures", .array(c.architectures.map { .string($0) }))
            o.append("config", .object(cfg))
        } else {
            o.append("config", .null)
        }
        o.append("moe", moeJSON())
        o.append("quantization", quantizationJSON())
        o.append("completeness", completeness.map { r in
            .object(JSONObject([
                ("expected_tensors", .int(r.expected)),
                ("missing", .array(missingPatterns.map { .string($0.pattern) })),
                ("wrong_shape", .array(r.wrongShape.map { w in
                    .object(JSONObject([("name", .string(w.name)), ("shape", .array(w.found.map { .uint($0) })),
                                        ("expected", .array(w.expected.map { .uint($0) }))]))
                })),
                ("unexpected", .array(unexpectedPatterns.map { .string($0.pattern) })),
            ]))
        } ?? .null)
        o.append("warnings", .array(warnings.map(warningJSON)))
        if let tensorList { o.append("tensor_list", tensorList) }
        if let scan {
            o.append("scan", .array(scan.map { item in
                let s = item.stats
                return .object(JSONObject([
                    ("name", .string(item.name)), ("dtype", .string(item.kind)),
                    ("count", .uint(s.count)), ("nan", .uint(s.nan)), ("pos_inf", .uint(s.posInf)),
                    ("neg_inf", .uint(s.negInf)),
                    ("min", s.finite > 0 ? .double(s.min) : .null), ("max", s.finite > 0 ? .double(s.max) : .null),
                    ("mean", s.finite > 0 ? .double(s.mean) : .null), ("std", s.finite > 0 ? .double(s.std) : .null),
                ]))
            }))
        }
        if scan != nil {
            o.append("scale_findings", .array(scaleFindings.map { item in
                .object(JSONObject([("name", .string(item.name)), ("zero", .uint(item.findings.zero)),
                                    ("negative", .uint(item.findings.negative)), ("non_finite", .uint(item.findings.nonFinite)),
                                    ("not_power_of_two", .uint(item.findings.notPowerOfTwo))]))
            }))
        }
        if let checksums {
            o.append("checksums", .object(JSONObject(checksums.map { ($0.file, .string($0.sha256)) })))
        }
        return .object(o)
    }

    func moeJSON() -> JSONValue {
        let s = structure
        let config = checkpoint.config
        var o = JSONObject()
        o.append("layers", .int(s.decoderLayers))
        o.append("moe_layers", .int(s.moeLayers))
        o.append("dense_layers", .int(s.denseLayers))
        o.append("mtp_layers", .int(s.mtpLayers))
        o.append("routed_experts", .int(s.routedExperts))
        o.append("experts_per_token", s.expertsPerToken.map { .int($0) } ?? .null)
        o.append("shared_experts", .int(s.sharedExperts))
        o.append("routers", .int(s.routers))
        o.append("expert_groups", config?.nGroup.map { .int($0) } ?? .null)
        o.append("topk_groups", config?.topkGroup.map { .int($0) } ?? .null)
        o.append("expert_layout", .string(s.expertLayout.rawValue))
        o.append("total_parameters", .uint(s.totalParameters))
        o.append("active_parameters", s.activeParameters.map { .uint($0) } ?? .null)
        o.append("routed_parameters", .uint(s.routedParameters))
        o.append("mtp_parameters", .uint(s.mtpParameters))
        o.append("multimodal_parameters", .uint(s.multimodalParameters))
        o.append("layer_details", .array(s.layers.map { l in
            .object(JSONObject([
                ("layer", .int(l.index)), ("kind", .string(l.isMTP ? "mtp" : (l.isMoE ? "moe" : "dense"))),
                ("routed_experts", .int(l.routedExperts)), ("shared_experts", .bool(l.hasSharedExperts)),
                ("router", .bool(l.hasRouter)), ("parameters", .uint(l.parameters)),
            ]))
        }))
        return .object(o)
    }

    func quantizationJSON() -> JSONValue {
        let q = quantization
        guard !q.isEmpty else { return .null }
        return .object(JSONObject([
            ("method", q.method.map { .string($0) } ?? .null),
            ("fmt", q.format.map { .string($0) } ?? .null),
            ("weight_block_size", q.blockSize.map { .array($0.map { .int($0) }) } ?? .null),
            ("fp8_weights", .int(q.fp8Weights)),
            ("with_scale", .int(q.withScale)),
            ("without_scale", .array(q.withoutScale.map { .string($0) })),
            ("scales_in_other_shard", .int(q.scalesInOtherShard)),
            ("scale_shape_mismatches", .array(q.scaleShapeMismatches.map { .string($0) })),
            ("encodings", .object(JSONObject(q.encodings.map { ($0.name, .int($0.weights)) }))),
            ("layouts", .array(q.layouts.map { l in
                .object(JSONObject([("encoding", .string(l.encoding)), ("layout", .string(l.layout)), ("weights", .int(l.weights))]))
            })),
            ("unquantized_weights", .array(q.unquantized.map { .string($0) })),
        ]))
    }

    func warningJSON(_ w: Warning) -> JSONValue {
        .object(JSONObject([
            ("file", .string(w.file)), ("tensor", w.tensor.map { .string($0) } ?? .null),
            ("kind", .string(w.kind.rawValue)), ("message", .string(w.message)),
        ]))
    }

    /// The `--json` document for a refused input.
    public static func invalidJSON(path: String, problems: [Problem]) -> JSONValue {
        .object(JSONObject([
            ("schema", .string(schema)), ("path", .string(path)), ("valid", false),
            ("problems", .array(problems.map(problemJSON))),
        ]))
    }

    // MARK: Text

    /// The human summary.
    public func text() -> String {
        let s = structure
        var lines: [String] = []
        func row(_ label: String, _ value: String) {
            lines.append(label.leftAligned(max(18, label.count + 2)) + value)
        }
        let layout = checkpoint.layout == .sharded ? "sharded, \(checkpoint.files.count) files" : "single file"
        let packed = checkpoint.files.filter(\.isCompressed).count
        let compressed = packed == 0 ? "" : packed == checkpoint.files.count ? ", compressed" : ", \(packed) compressed"
        row("checkpoint", "\(escapeForDisplay(checkpoint.path)) (\(layout)\(compressed), \(formatBytes(checkpoint.fileBytes)))")
        if let c = checkpoint.config {
            let arch = c.architectures.isEmpty ? "" : " (\(c.architectures.joined(separator: ", ")))"
            row("config", "\(c.modelType ?? "unknown model_type")\(arch)")
        } else {
            row("config", "none found")
        }
        row("tensors", formatCount(UInt64(checkpoint.tensorCount)))
        row("data", formatBytes(checkpoint.dataBytes))
        let exact = formatCount(s.totalParameters)
        row("parameters", formatParameters(s.totalParameters) == exact ? exact : "\(formatParameters(s.totalParameters)) (\(exact))")
        for ((dtype, n), (_, b)) in zip(parametersByDtype, bytesByDtype) {
            row("  " + dtype.rawValue, "\(formatParameters(n)) params, \(formatBytes(b))")
        }
        if s.overheadElements > 0 {
            row("  scales etc.", "\(formatCount(s.overheadElements)) values, \(formatBytes(s.overheadBytes)) (quantization scales, zero points, shapes: not parameters)")
        }
        lines.append("")
        if s.moeLayers > 0 || s.routedExperts > 0 {
            lines.append("mixture of experts")
            var layers = "\(s.decoderLayers) (\(s.denseLayers) dense, \(s.moeLayers) MoE)"
            if s.mtpLayers > 0 { layers += " + \(s.mtpLayers) MTP" }
            row("  layers", layers)
            var experts = "\(s.routedExperts) per MoE layer"
            if let k = s.expertsPerToken { experts += ", \(k) per token" }
            if let g = checkpoint.config?.nGroup, g > 1 {
                experts += "; \(g) groups, top \(checkpoint.config?.topkGroup.map(String.init) ?? "?") groups"
            }
            row("  routed experts", experts)
            row("  shared experts", "\(s.sharedExperts)")
            let fused = switch checkpoint.config?.modelType {
            case "gpt_oss": "fused (experts.gate_up_proj [E,H,2I], gate/up interleaved)"
            case "llama4": "fused (experts.gate_up_proj [E,H,2I], gate then up)"
            default: "fused (experts.gate_up_proj [E,2I,H])"
            }
            row("  expert layout", s.expertLayout == .perExpert ? "per expert (experts.E.*)" : fused)
            row("  routers", "\(s.routers)")
            if let active = s.activeParameters {
                let share = s.totalParameters > 0 ? Double(active) / Double(s.totalParameters) * 100 : 0
                row("  active/token", "\(formatParameters(active)) of \(formatParameters(s.totalParameters)) (\(decimalText(share, places: 1))%)")
            } else {
                row("  active/token", "unknown (no experts-per-token in config.json)")
            }
            if s.mtpLayers > 0 { row("  MTP params", formatParameters(s.mtpParameters)) }
            if s.multimodalParameters > 0 { row("  multimodal", "\(formatParameters(s.multimodalParameters)) (vision/audio towers: not active per text token)") }
        } else if s.decoderLayers > 0 {
            lines.append("dense model: \(s.decoderLayers) layers, no routed experts")
        } else {
            lines.append("no decoder layers recognised in the tensor names")
        }
        let q = quantization
        if !q.isEmpty {
            lines.append("")
            lines.append("quantization")
            if let m = q.method {
                row("  method", "\(m)\(q.format.map { " \($0)" } ?? "")\(q.blockSize.map { ", blocks \($0.map(String.init).joined(separator: "x"))" } ?? "")")
            }
            for l in q.layouts {
                row("  weights", "\(l.weights) \(l.encoding): \(l.layout)")
            }
            if !q.unquantized.isEmpty {
                let shown = q.unquantized.prefix(3).map { escapeForDisplay($0) }.joined(separator: ", ")
                row("  unquantized", "\(Support.counted(q.unquantized.count, "2-D weight")) (\(shown)\(q.unquantized.count > 3 ? ", ..." : ""))")
            }
            if q.fp8Weights > 0 { row("  FP8 weights", "\(q.fp8Weights), \(q.withScale) with a block scale") }
            if q.scalesInOtherShard > 0 { row("  scales elsewhere", "\(q.scalesInOtherShard) stored in another shard than their weight") }
            if !q.withoutScale.isEmpty { row("  missing scales", "\(q.withoutScale.count), e.g. \(escapeForDisplay(q.withoutScale[0]))") }
            if !q.scaleShapeMismatches.isEmpty {
                row("  bad scale grid", "\(q.scaleShapeMismatches.count), e.g. \(escapeForDisplay(q.scaleShapeMismatches[0]))")
            }
        }
        let ws = warnings
        if !ws.isEmpty {
            lines.append("")
            lines.append("warnings")
            for w in ws.prefix(20) { lines.append("  " + w.description) }
            if ws.count > 20 { lines.append("  ... and \(ws.count - 20) more (see --json)") }
        }
        if let checksums {
            lines.append("")
            lines.append("sha256")
            for c in checksums { lines.append("  \(c.sha256)  \(escapeForDisplay(c.file))") }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

public func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var u = 0
    while v >= 1024 && u < units.count - 1 {
        v /= 1024
        u += 1
    }
    return u == 0 ? "\(n) B" : "\(decimalText(v, places: 2, trimZero: true)) \(units[u])"
}

/// 671.03B, 37.55M, 1.2K.
public func formatParameters(_ n: UInt64) -> String {
    let v = Double(n)
    for (unit, suffix) in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")] where v >= unit {
        return decimalText(v / unit, places: 2, trimZero: true) + suffix
    }
    return String(n)
}

/// 91,991.
public func formatCount(_ n: UInt64) -> String {
    let s = String(n)
    var out = ""
    for (i, c) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return out
}
