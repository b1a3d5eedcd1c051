import StrictJSON
import Support

/// Placement documents: moetool's own (schema moetool.placement/1: EPLB's three maps, the
/// deployment and the metrics) and SGLang's `--init-expert-location` file
/// (`physical_to_logical_map` [layer][slot]).
public enum PlacementFile {
    public static let schema = "moetool.placement/1"

    public static func ints(_ v: [Int]) -> JSONValue { .array(v.map { .number(JSONNumber($0)) }) }
    public static func num(_ v: Double) -> JSONValue { .number(JSONNumber(text: format(v))) }

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
            throw PlacementError(.planTooLarge, "log2phy would hold \(entries) entries (\(counted(plan.layers.count, "layer")) x \(counted(t.experts, "expert")) x \(width), the most replicas of one expert), more than moetool writes (\(maxLog2phyEntries)): write SGLang's format, which has no log2phy")
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
        o.append("metrics", metricsJSON(plan, bytesPerExpert: bytesPerExpert))
        return .object(o)
    }

    /// SGLang's `--init-expert-location` file, `{"physical_to_logical_map": [decoder layer][slot]}`,
    /// as its loader takes it (sglang 0.5.23, `compute_initial_expert_location_metadata` and
    /// `ExpertLocationMetadata.init_by_mapping` in srt/eplb/expert_location.py):
    /// - one row per decoder layer: the map is indexed by layer id, and its row count is
    ///   `num_hidden_layers` (`get_model_config_for_expert_location` of DeepSeek-V2/V3 and Qwen3-MoE);
    ///   a dense layer's row is never used, and gets what SGLang's own trivial placement gives it,
    ///   slot s -> expert s mod experts;
    /// - `experts + redundantExperts` slots per row (`--ep-num-redundant-experts`), asserted by the loader;
    /// - no other member: the loader passes every member to `init_by_mapping` as a keyword argument.
    public static func sglang(_ plan: Plan, decoderLayers: DecoderLayers, redundantExperts: Int) throws(PlacementError) -> JSONValue {
        let t = plan.request.topology
        let moe = decoderLayers.moeLayers
        guard moe.count == plan.layers.count else {
            throw PlacementError(.sglangIncompatible, "the plan has \(counted(plan.layers.count, "MoE layer")), but the config's \(counted(decoderLayers.count, "decoder layer")) have \(moe.count)\(decoderLayers.denseLayers.isEmpty ? "" : " (dense: \(DecoderLayers.describe(decoderLayers.denseLayers)))"): plan from a profile of this model")
        }
        guard t.slots == t.experts + redundantExperts else {
            throw PlacementError(.sglangIncompatible, "\(counted(t.slots, "slot")) per layer, but SGLang makes \(t.experts + redundantExperts) (\(counted(t.experts, "expert")) + --ep-num-redundant-experts \(redundantExperts)) and refuses the file: run SGLang with --ep-num-redundant-experts \(t.slots - t.experts), and give moetool the same flag")
        }
        var rows: [JSONValue] = []
        var next = 0
        for isMoE in decoderLayers.isMoE {
            if isMoE {
                rows.append(ints(plan.layers[next].placement.phy2log))
                next += 1
            } else {
                rows.append(ints((0..<t.slots).map { $0 % t.experts }))
            }
        }
        return .object(JSONObject([("physical_to_logical_map", .array(rows))]))
    }

    /// The plan's figures over all layers (the report's `baseline` has only these).
    public static func summary(_ plan: Plan, bytesPerExpert: UInt64?) -> JSONObject {
        let t = plan.request.topology
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
            let total = t.redundantBytes(bytesPerExpert: bytesPerExpert, layers: plan.layers.count) ?? .max
            o.append("redundant_bytes", .number(JSONNumber(total)))
            o.append("redundant_bytes_per_gpu", .number(JSONNumber(total / UInt64(t.gpus))))
        }
        o.append("nodes_per_token", plan.meanNodesPerToken.map(num) ?? .null)
        o.append("moved_slots", plan.moved.map { .number(JSONNumber($0)) } ?? .null)
        o.append("hierarchical_layers", .number(JSONNumber(plan.layers.filter { $0.policy == .hierarchical }.count)))
        return o
    }

    /// The summary and every layer's figures: the placement's `metrics` member, and the report's.
    public static func metricsJSON(_ plan: Plan, bytesPerExpert: UInt64?) -> JSONValue {
        var o = summary(plan, bytesPerExpert: bytesPerExpert)
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


    /// The deployment a moetool placement records, each checked as soon as it is read: a
    /// placement for another deployment (4 GPUs x 4 slots read for 16 GPUs x 1) has slots that
    /// mean other GPUs, and moves counted against it mean nothing. SGLang's file records only
    /// the slots per layer, checked with the maps.
    static func deploymentKeys(topology t: Topology, layers: Int) -> [String: (value: Int, what: String)] {
        ["num_layers": (layers, "layers"), "num_logical_experts": (t.experts, "experts per layer"),
         "num_physical_experts": (t.slots, "slots per layer"), "num_gpus": (t.gpus, "GPUs"),
         "slots_per_gpu": (t.slotsPerGPU, "slots per GPU")]
    }

    /// Parses a deployed placement (either format; `PlacementFile.read` in PlacementFiles opens
    /// files) and checks it against the plan's shape. The document is walked, not parsed into a
    /// tree: memory follows the slots, and a map longer than the plan's is refused where it
    /// passes the plan's size. `path` is the file named in errors.
    /// SGLang's file has a row per decoder layer (`sglang`): with `decoderLayers`, such a file is
    /// accepted and its MoE layers' rows kept.
    public static func parse(_ bytes: [UInt8], path: String, topology t: Topology, layers: Int, decoderLayers: DecoderLayers? = nil) throws(PlacementError) -> [LayerPlacement] {
        let expected = deploymentKeys(topology: t, layers: layers)
        let rowCounts = [layers] + (decoderLayers.map { $0.moeLayers.count == layers ? [$0.count] : [] } ?? [])
        let shape = "\(counted(t.gpus, "GPU")) x \(counted(t.slotsPerGPU, "slot")), \(counted(t.experts, "expert")), \(counted(layers, "layer"))"
        let maps: [[Int]]
        do {
            maps = try bytes.withUnsafeBytes { raw in
                try JSONParser.checkEncoding(raw)
                var s = JSONScanner(raw, maxDepth: 16)
                var maps: [[Int]]? = nil
                var seen = Set<String>()
                try s.scanObject(depth: 1) { s, key, offset in
                    guard seen.insert(key).inserted else {
                        throw PlacementError(.duplicateMember, file: path, "member \"\(key)\" appears twice (at byte \(offset))")
                    }
                    if key == "phy2log" || key == "physical_to_logical_map" {
                        guard maps == nil else { throw PlacementError(.notAPlacement, file: path, "both \"phy2log\" and \"physical_to_logical_map\"") }
                        maps = try readMaps(&s, path: path, topology: t, layers: rowCounts)
                    } else if let (value, what) = expected[key] {
                        s.skipWhitespace()
                        let recorded = try? s.parseUInt64(key)
                        guard recorded == UInt64(value) else {
                            throw PlacementError(.otherDeployment, file: path, "the previous placement is for \(recorded.map(String.init) ?? "a non-integer number of") \(what) (\(key)), this plan for \(value) (\(shape))")
                        }
                    } else {
                        try s.skipValue(depth: 2)
                    }
                }
                s.skipWhitespace()
                guard s.atEnd else { throw s.syntaxError("trailing data after the JSON document") }
                guard let maps else {
                    throw PlacementError(.notAPlacement, file: path, "no \"phy2log\" or \"physical_to_logical_map\"")
                }
                return maps
            }
        } catch let e as PlacementError {
            throw e
        } catch {
            throw PlacementError(.invalidJSON, file: path, "invalid JSON: \(error)")
        }
        var kept = maps
        if maps.count != layers, let decoderLayers { kept = decoderLayers.moeLayers.map { maps[$0] } }
        var out: [LayerPlacement] = []
        for (i, phy2log) in kept.enumerated() {
            let p = LayerPlacement(phy2log: phy2log, experts: t.experts)
            if let missing = p.logcnt.firstIndex(of: 0) {
                throw PlacementError(.expertWithoutSlot, file: path, "layer \(i) has no slot for expert \(missing)")
            }
            out.append(p)
        }
        return out
    }

    /// [layer][slot] expert indices: `t.slots` per layer, and one of the row counts `layers` allows.
    static func readMaps(_ s: inout JSONScanner, path: String, topology t: Topology, layers rowCounts: [Int]) throws -> [[Int]] {
        let layers = rowCounts[0]
        let most = rowCounts.max()!
        var maps: [[Int]] = []
        try s.scanArray(depth: 2) { s, i in
            guard i < most else { throw PlacementError(.otherDeployment, file: path, "more than \(counted(most, "layer")), but the profile has \(layers)\(most > layers ? " MoE layers of \(most)" : "")") }
            var slots: [Int] = []
            slots.reserveCapacity(t.slots)
            try s.scanArray(depth: 3) { s, j in
                guard j < t.slots else { throw PlacementError(.otherDeployment, file: path, "layer \(i) must list \(t.slots) slots, it lists more") }
                s.skipWhitespace()
                let start = s.position
                guard let e = try? s.parseUInt64("slot"), e < UInt64(t.experts) else {
                        var end = start
                    while end < min(start + 24, s.bytes.count), !",]} \n\r\t".utf8.contains(s.bytes[end]) { end += 1 }
                    let found = String(decoding: s.bytes[start..<end], as: UTF8.self)
                    throw PlacementError(.invalidSlot, file: path, "layer \(i) slot \(j): \(found) is not an expert index below \(t.experts)")
                }
                slots.append(Int(e))
            }
            guard slots.count == t.slots else {
                throw PlacementError(.otherDeployment, file: path, "layer \(i) must list \(t.slots) slots, it lists \(slots.count)")
            }
            maps.append(slots)
        }
        guard rowCounts.contains(maps.count) else {
            throw PlacementError(.otherDeployment, file: path, "\(counted(maps.count, "layer")), but the profile has \(layers)\(most > layers ? " MoE layers of \(most)" : "")")
        }
        return maps
    }
}
