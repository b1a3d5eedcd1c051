import ExpertPlacement
import SafetensorsFormat
import StrictJSON
import Support

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
    /// With several windows: how the one placement fares in each (the plan's figures are then
    /// those of the mean load).
    public var drift: DriftReport?
    /// The HTML report written (`--report`).
    public var htmlReport: String?

    public init(plan: Plan, baseline: Plan?, bytesPerExpert: UInt64?, seconds: Double, profile: String, output: String?) {
        self.plan = plan
        self.baseline = baseline
        self.bytesPerExpert = bytesPerExpert
        self.seconds = seconds
        self.profile = profile
        self.output = output
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
        o.append("metrics", PlacementFile.metricsJSON(plan, bytesPerExpert: bytesPerExpert))
        o.append("baseline", baseline.map { .object(PlacementFile.summary($0, bytesPerExpert: nil)) } ?? .null)
        // Members only some runs have, absent otherwise: a single profile's report is unchanged.
        if let htmlReport { o.append("report", .string(htmlReport)) }
        if let drift { o.append("drift", drift.json()) }
        return .object(o)
    }

    public func text(perLayer: Bool = false) -> String {
        let t = plan.request.topology
        func f(_ v: Double, _ digits: Int = 4) -> String { Self.fixed(v, digits) }
        func pct(_ v: Double) -> String { f(v * 100, 2) + "%" }
        let source = drift.map { "\(escapeForDisplay($0.names[0])) ... \(escapeForDisplay($0.names[$0.names.count - 1])) (mean of \($0.names.count) windows)" }
        var out = "\(source ?? escapeForDisplay(profile)): \(counted(plan.layers.count, "layer")) x \(counted(t.experts, "expert")) -> \(counted(t.slots, "slot")) on \(counted(t.gpus, "GPU"))"
        out += " (\(counted(t.nodes, "node")) x \(t.gpusPerNode)), \(counted(t.groups, "group"))\n"
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
        // No memory line for replicas that take none (no redundant slot, or experts of 0 bytes).
        if let bytesPerExpert, bytesPerExpert > 0, t.redundantSlots > 0 {
            let total = t.redundantBytes(bytesPerExpert: bytesPerExpert, layers: plan.layers.count) ?? .max
            out += "; \(size(total, from: 0)) (\(size(total / UInt64(t.gpus), from: 0)) per GPU at \(size(bytesPerExpert, from: 1)) per expert)"
        }
        out += "\n"
        if let drift { out += "\n" + drift.text() }
        if let output { out += "wrote \(escapeForDisplay(output))\n" }
        if let htmlReport { out += "wrote \(escapeForDisplay(htmlReport))\n" }
        return out
    }

    /// A size in the first of GiB (2 decimals), MiB, KiB (1 decimal) from `units[start]` in
    /// which it does not round to 0, else in bytes: a tiny model's experts are not "0.0 MiB".
    private func size(_ b: UInt64, from start: Int) -> String {
        let units: [(name: String, bytes: Double, digits: Int)] = [("GiB", 1_073_741_824, 2), ("MiB", 1_048_576, 1), ("KiB", 1024, 1)]
        for unit in units[start...] {
            let scale = Self.pow10(unit.digits)
            let v = (Double(b) / unit.bytes * scale).rounded() / scale
            guard v > 0 else { continue }
            // GiB as the report always printed them ("1.0", "42.19"); the others padded to one decimal.
            return (unit.name == "GiB" ? "\(v)" : Self.fixed(v, unit.digits)) + " " + unit.name
        }
        return counted(Int(b), "byte")
    }

    /// `v` rounded to `digits` decimals, padded with zeros to that many.
    static func fixed(_ v: Double, _ digits: Int) -> String {
        let scale = pow10(digits)
        let r = (v * scale).rounded() / scale
        var s = "\(r)"
        if let dot = s.firstIndex(of: ".") {
            let decimals = s.distance(from: dot, to: s.endIndex) - 1
            if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
        }
        return s
    }

    private static func pow10(_ d: Int) -> Double {
        var r = 1.0
        for _ in 0..<d { r *= 10 }
        return r
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
    func padding(_ n: Int) -> String { count >= n ? self + " " : self + String(repeating: " ", count: n - count) }
    func replacingFirst(_ a: String, with b: String) -> String {
        guard let r = firstRange(of: a) else { return self }
        return String(self[..<r.lowerBound]) + b + String(self[r.upperBound...])
    }
}
