import Foundation
import SafetensorsFormat
import StrictJSON

/// Placement documents: moetool's own (schema moetool.placement/1: EPLB's three maps, the
/// deployment and the metrics) and SGLang's `--init-expert-location` file
/// (`physical_to_logical_map` [layer][slot]).
public enum PlacementFile {
    public static let schema = "moetool.placement/1"

    static func ints(_ v: [Int]) -> JSONValue { .array(v.map { .number(JSONNumber($0)) }) }
    static func num(_ v: Double) -> JSONValue { .number(JSONNumber(text: format(v))) }

    /// Shortest round-trip text for metrics, rounded to 6 significant decimals.
    static func format(_ v: Double) -> String {
        guard v.isFinite else { return "0" }
        guard abs(v) < 1e15 else { return JSONNumber(v).text }  // no fraction left to round (and v * 1e6 could overflow)
        let rounded = (v * 1e6).rounded() / 1e6
        return JSONNumber(rounded).text
    }

    /// The most entries log2phy may have (layers x experts x the most replicas of one expert):
    /// EPLB can give one expert nearly every slot, and the padded map then dwarfs phy2log.
    public static let maxLog2phyEntries = 1 << 24

    public static func moetool(_ plan: Plan, bytesPerExpert: UInt64?) throws(PlacementError) -> JSONValue {
        let t = plan.request.topology
        let width = plan.log2phyWidth
        let entries = plan.layers.count * t.experts * width
        guard entries <= maxLog2phyEntries else {
            throw .impossible("log2phy would hold \(entries) entries (\(plan.layers.count) layers x \(t.experts) experts x \(width), the most replicas of one expert), more than moetool writes (\(maxLog2phyEntries)): write --format sglang, or use fewer slots")
        }
        var o = JSONObject()
        o.append("schema", .string(schema))
        o.append("algorithm", .string(plan.request.algorithm.rawValue))
        o.append("num_layers", .number(JSONNumber(plan.layers.count)))
        o.append("num_logical_experts", .number(JSONNumber(t.experts)))
        o.append("num_physical_experts", .number(JSONNumber(t.slots)))
        o.append("num_groups", .number(JSONNumber(t.groups)))
        o.append("num_nodes", .number(JSONNumber(t.nodes)))
        o.append("num_gpus", .number(JSONNumber(t.gpus)))
        o.append("gpus_per_node", .number(JSONNumber(t.gpusPerNode)))
        o.append("slots_per_gpu", .number(JSONNumber(t.slotsPerGPU)))
        o.append("policy", .array(plan.layers.map { .string($0.policy.rawValue) }))
        o.append("phy2log", .array(plan.layers.map { ints($0.placement.phy2log) }))
        o.append("log2phy", .array(plan.layers.map { .array($0.placement.log2phy(width: width).map(ints)) }))
        o.append("logcnt", .array(plan.layers.map { ints($0.placement.logcnt) }))
        o.append("metrics", PlanReport.metricsJSON(plan, bytesPerExpert: bytesPerExpert))
        return .object(o)
    }

    public static func sglang(_ plan: Plan) -> JSONValue {
        .object(JSONObject([("physical_to_logical_map", .array(plan.layers.map { ints($0.placement.phy2log) }))]))
    }

    /// The deployment a moetool placement records, each checked as soon as it is read: a
    /// placement for another deployment (4 GPUs x 4 slots read for 16 GPUs x 1) has slots that
    /// mean other GPUs, and moves counted against it mean nothing. SGLang's file records only
    /// the slots per layer, checked with the maps.
    static func deploymentKeys(topology t: Topology, layers: Int) -> [String: (value: Int, what: String)] {
        ["num_layers": (layers, "layers"), "num_logical_experts": (t.experts, "experts per layer"),
         "num_physical_experts": (t.slots, "slots per layer"), "num_gpus": (t.gpus, "GPUs"),
         "slots_per_gpu": (t.slotsPerGPU, "slots per GPU")]
    }

    /// Reads a deployed placement (either format) and checks it against the plan's shape. The
    /// file is walked, not parsed into a tree: memory follows the slots, and a map longer than
    /// the plan's is refused where it passes the plan's size.
    public static func read(path: String, topology t: Topology, layers: Int) throws(PlacementError) -> [LayerPlacement] {
        let bytes = try LoadProfile.readFile(path)
        let expected = deploymentKeys(topology: t, layers: layers)
        let shape = "\(t.gpus) GPUs x \(t.slotsPerGPU) slots, \(t.experts) experts, \(layers) layers"
        let maps: [[Int]]
        do {
            maps = try bytes.withUnsafeBytes { raw in
                try JSONParser.checkEncoding(raw)
                var s = JSONScanner(raw, maxDepth: 16)
                var maps: [[Int]]? = nil
                var seen = Set<String>()
                try s.scanObject(depth: 1) { s, key, offset in
                    guard seen.insert(key).inserted else {
                        throw PlacementError.badInput("\(path): member \"\(key)\" appears twice (at byte \(offset))")
                    }
                    if key == "phy2log" || key == "physical_to_logical_map" {
                        guard maps == nil else { throw PlacementError.badInput("\(path): both \"phy2log\" and \"physical_to_logical_map\"") }
                        maps = try readMaps(&s, path: path, topology: t, layers: layers)
                    } else if let (value, what) = expected[key] {
                        s.skipWhitespace()
                        let recorded = try? s.parseUInt64(key)
                        guard recorded == UInt64(value) else {
                            throw PlacementError.badInput("\(path): the previous placement is for \(recorded.map(String.init) ?? "a non-integer number of") \(what) (\(key)), this plan for \(value): re-plan from a placement of the same deployment (\(shape)), or plan without --previous")
                        }
                    } else {
                        try s.skipValue(depth: 2)
                    }
                }
                s.skipWhitespace()
                guard s.atEnd else { throw s.syntaxError("trailing data after the JSON document") }
                guard let maps else {
                    throw PlacementError.badInput("\(path): no \"phy2log\" or \"physical_to_logical_map\": not a placement")
                }
                return maps
            }
        } catch let e as PlacementError {
            throw e
        } catch {
            throw .badInput("\(path): invalid JSON: \(error)")
        }
        var out: [LayerPlacement] = []
        for (i, phy2log) in maps.enumerated() {
            let p = LayerPlacement(phy2log: phy2log, experts: t.experts)
            if let missing = p.logcnt.firstIndex(of: 0) {
                throw .badInput("\(path): layer \(i) has no slot for expert \(missing)")
            }
            out.append(p)
        }
        return out
    }

    /// [layer][slot] expert indices, exactly `layers` x `t.slots` of them.
    static func readMaps(_ s: inout JSONScanner, path: String, topology t: Topology, layers: Int) throws -> [[Int]] {
        var maps: [[Int]] = []
        try s.scanArray(depth: 2) { s, i in
            guard i < layers else { throw PlacementError.badInput("\(path): more than \(layers) layers, but the profile has \(layers)") }
            var slots: [Int] = []
            slots.reserveCapacity(t.slots)
            try s.scanArray(depth: 3) { s, j in
                guard j < t.slots else { throw PlacementError.badInput("\(path): layer \(i) must list \(t.slots) slots, it lists more") }
                s.skipWhitespace()
                let start = s.position
                guard let e = try? s.parseUInt64("slot"), e < UInt64(t.experts) else {
                        var end = start
                    while end < min(start + 24, s.bytes.count), !",]} \n\r\t".utf8.contains(s.bytes[end]) { end += 1 }
                    let found = String(decoding: s.bytes[start..<end], as: UTF8.self)
                    throw PlacementError.badInput("\(path): layer \(i) slot \(j): \(found) is not an expert index below \(t.experts)")
                }
                slots.append(Int(e))
            }
            guard slots.count == t.slots else {
                throw PlacementError.badInput("\(path): layer \(i) must list \(t.slots) slots, it lists \(slots.count)")
            }
            maps.append(slots)
        }
        guard maps.count == layers else { throw PlacementError.badInput("\(path): \(maps.count) layers, but the profile has \(layers)") }
        return maps
    }
}

/// What plan-experts tells its user: balance, its lower bound, traffic, replicas and moves,
/// next to the EPLB baseline's figures under the same policies.
public struct PlanReport {
    public let plan: Plan
    public let baseline: Plan?
    public let bytesPerExpert: UInt64?
    public let seconds: Double
    public let profile: String
    public let output: String?
    /// The deployed placement planned from (`--previous`), and the format the output was written in.
    public var previous: String?
    public var outputFormat: String?

    public init(plan: Plan, baseline: Plan?, bytesPerExpert: UInt64?, seconds: Double, profile: String, output: String?) {
        self.plan = plan
        self.baseline = baseline
        self.bytesPerExpert = bytesPerExpert
        self.seconds = seconds
        self.profile = profile
        self.output = output
    }

    /// Bytes the redundant replicas of all layers take, or nil above 2^64 - 1.
    public static func redundantBytes(bytesPerExpert: UInt64, topology t: Topology, layers: Int) -> UInt64? {
        let (total, overflow) = bytesPerExpert.multipliedReportingOverflow(by: UInt64(t.redundantSlots) * UInt64(layers))
        return overflow ? nil : total
    }

    static func summary(_ plan: Plan, bytesPerExpert: UInt64?) -> JSONObject {
        let t = plan.request.topology
        let num = PlacementFile.num
        var o = JSONObject()
        o.append("mean_imbalance", num(plan.meanImbalance))
        o.append("worst_imbalance", num(plan.worstImbalance))
        o.append("mean_balancedness", num(plan.layers.map { 1 / $0.metrics.imbalance }.reduce(0, +) / Double(max(plan.layers.count, 1))))
        o.append("mean_node_imbalance", num(plan.meanNodeImbalance))
        o.append("mean_gap_to_lower_bound", num(plan.meanGap))
        o.append("worst_gap_to_lower_bound", num(plan.worstGap))
        o.append("colocated_duplicates", .number(JSONNumber(plan.duplicates)))
        o.append("redundant_replicas", .number(JSONNumber(t.redundantSlots * plan.layers.count)))
        if let bytesPerExpert {
            o.append("bytes_per_expert", .number(JSONNumber(bytesPerExpert)))
            let total = redundantBytes(bytesPerExpert: bytesPerExpert, topology: t, layers: plan.layers.count) ?? .max
            o.append("redundant_bytes", .number(JSONNumber(total)))
            o.append("redundant_bytes_per_gpu", .number(JSONNumber(total / UInt64(t.gpus))))
        }
        o.append("nodes_per_token", plan.meanNodesPerToken.map(num) ?? .null)
        o.append("moved_slots", plan.moved.map { .number(JSONNumber($0)) } ?? .null)
        o.append("hierarchical_layers", .number(JSONNumber(plan.layers.filter { $0.policy == .hierarchical }.count)))
        return o
    }

    static func metricsJSON(_ plan: Plan, bytesPerExpert: UInt64?) -> JSONValue {
        var o = summary(plan, bytesPerExpert: bytesPerExpert)
        let num = PlacementFile.num
        o.append("layers", .array(plan.layers.enumerated().map { i, l in
            var m = JSONObject()
            m.append("layer", .number(JSONNumber(i)))
            m.append("policy", .string(l.policy.rawValue))
            m.append("imbalance", num(l.metrics.imbalance))
            m.append("node_imbalance", num(l.metrics.nodeImbalance))
            m.append("max_gpu_load", num(l.metrics.maxGPULoad))
            m.append("mean_gpu_load", num(l.metrics.meanGPULoad))
            m.append("lower_bound", num(l.metrics.lowerBound))
            m.append("gap_to_lower_bound", num(l.metrics.gap))
            m.append("colocated_duplicates", .number(JSONNumber(l.metrics.colocatedDuplicates)))
            m.append("nodes_per_token", l.metrics.nodesPerToken.map(num) ?? .null)
            m.append("moved_slots", l.moved.map { .number(JSONNumber($0)) } ?? .null)
            return .object(m)
        }))
        return .object(o)
    }

    public func json() -> JSONValue {
        let t = plan.request.topology
        var o = JSONObject()
        o.append("schema", "moetool.plan-experts/1")
        o.append("profile", .string(profile))
        o.append("output", output.map { .string($0) } ?? .null)
        o.append("output_format", outputFormat.map { .string($0) } ?? .null)
        o.append("previous", previous.map { .string($0) } ?? .null)
        o.append("algorithm", .string(plan.request.algorithm.rawValue))
        o.append("policy", .string(plan.request.policy?.rawValue ?? "auto"))
        o.append("target_imbalance", plan.request.targetImbalance.map { .double($0) } ?? .null)
        o.append("max_nodes_per_token", plan.request.maxNodesPerToken.map { .double($0) } ?? .null)
        o.append("topk", plan.request.routing.map { .int($0.topk) } ?? .null)
        o.append("topk_group", plan.request.routing?.topkGroup.map { .int($0) } ?? .null)
        o.append("layers", .number(JSONNumber(plan.layers.count)))
        o.append("experts", .number(JSONNumber(t.experts)))
        o.append("slots", .number(JSONNumber(t.slots)))
        o.append("gpus", .number(JSONNumber(t.gpus)))
        o.append("nodes", .number(JSONNumber(t.nodes)))
        o.append("groups", .number(JSONNumber(t.groups)))
        o.append("seconds", PlacementFile.num(seconds))
        o.append("metrics", PlanReport.metricsJSON(plan, bytesPerExpert: bytesPerExpert))
        o.append("baseline", baseline.map { .object(PlanReport.summary($0, bytesPerExpert: nil)) } ?? .null)
        return .object(o)
    }

    public func text(perLayer: Bool = false) -> String {
        let t = plan.request.topology
        func f(_ v: Double, _ digits: Int = 4) -> String {
            let scale = pow10(digits)
            let r = (v * scale).rounded() / scale
            var s = "\(r)"
            if let dot = s.firstIndex(of: ".") {
                let decimals = s.distance(from: dot, to: s.endIndex) - 1
                if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
            }
            return s
        }
        func pct(_ v: Double) -> String { f(v * 100, 2) + "%" }
        var out = "\(escapeForDisplay(profile)): \(plan.layers.count) layers x \(t.experts) experts -> \(t.slots) slots on \(t.gpus) GPUs"
        out += " (\(t.nodes) node\(t.nodes == 1 ? "" : "s") x \(t.gpusPerNode)), \(t.groups) group\(t.groups == 1 ? "" : "s")\n"
        let policies = Set(plan.layers.map(\.policy))
        let policyText = policies.count == 1 ? policies.first!.rawValue : "auto (\(plan.layers.filter { $0.policy == .hierarchical }.count) hierarchical, \(plan.layers.filter { $0.policy == .global }.count) global layers)"
        out += "algorithm \(plan.request.algorithm.rawValue), policy \(policyText), \(f(seconds * 1000, 1)) ms\n\n"
        var rows: [(String, String, String?)] = []
        let b = baseline
        rows.append(("imbalance (max/mean GPU), mean", f(plan.meanImbalance), b.map { f($0.meanImbalance) }))
        rows.append(("imbalance, worst layer", f(plan.worstImbalance), b.map { f($0.worstImbalance) }))
        rows.append(("node imbalance, mean", f(plan.meanNodeImbalance), b.map { f($0.meanNodeImbalance) }))
        rows.append(("gap to lower bound, mean", pct(plan.meanGap), b.map { pct($0.meanGap) }))
        rows.append(("gap to lower bound, worst", pct(plan.worstGap), b.map { pct($0.worstGap) }))
        rows.append(("co-located duplicate replicas", "\(plan.duplicates)", b.map { "\($0.duplicates)" }))
        if let n = plan.meanNodesPerToken {
            rows.append(("nodes per token (estimate)", f(n, 3), b.flatMap { $0.meanNodesPerToken.map { f($0, 3) } }))
        }
        if let moved = plan.moved { rows.append(("slots changed from --previous", "\(moved)", nil)) }
        out += "                                    " + "moetool".leftPadded(10) + (b != nil ? "eplb".leftPadded(10) : "") + "\n"
        if plan.request.algorithm == .eplb { out = out.replacingFirst("moetool", with: "   eplb") }
        for (name, ours, theirs) in rows {
            out += name.padding(36) + ours.leftPadded(10) + (theirs?.leftPadded(10) ?? "") + "\n"
        }
        if perLayer {
            out += "\nlayer  policy        imbalance  node imb.        gap  nodes/token  moved\n"
            for (i, l) in plan.layers.enumerated() {
                let m = l.metrics
                out += String(i).leftPadded(5) + "  " + l.policy.rawValue.padding(12) + f(m.imbalance).leftPadded(11)
                out += f(m.nodeImbalance).leftPadded(11) + pct(m.gap).leftPadded(11)
                out += (m.nodesPerToken.map { f($0, 3) } ?? "-").leftPadded(13) + (l.moved.map(String.init) ?? "-").leftPadded(7) + "\n"
            }
        }
        out += "\nreplicas: \(t.redundantSlots) redundant per layer, \(t.redundantSlots * plan.layers.count) in all"
        if let bytesPerExpert {
            let total = PlanReport.redundantBytes(bytesPerExpert: bytesPerExpert, topology: t, layers: plan.layers.count) ?? .max
            out += "; \(gib(total)) GiB (\(gib(total / UInt64(t.gpus))) GiB per GPU at \(f(Double(bytesPerExpert) / 1_048_576, 1)) MiB per expert)"
        }
        out += "\n"
        if let output { out += "wrote \(escapeForDisplay(output))\n" }
        return out
    }

    private func gib(_ b: UInt64) -> String {
        let v = (Double(b) / 1_073_741_824 * 100).rounded() / 100
        return "\(v)"
    }

    private func pow10(_ d: Int) -> Double {
        var r = 1.0
        for _ in 0..<d { r *= 10 }
        return r
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
    func padding(_ n: Int) -> String { count >= n ? self + " " : self + String(repeating: " ", count: n - count) }
    func replacingFirst(_ a: String, with b: String) -> String {
        guard let r = range(of: a) else { return self }
        return replacingCharacters(in: r, with: b)
    }
}
