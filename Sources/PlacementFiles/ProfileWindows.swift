import ExpertPlacement
import Support
import TorchArchive

/// Loads over time: one profile per window, every one of the same MoE layers and experts.
public struct ProfileWindows: Sendable {
    /// [window]: loads [MoE layer][expert], ranks summed.
    public let windows: [LoadProfile]
    /// For SGLang dumps, the decoder layer of each profile row; nil for JSON and CSV profiles,
    /// whose rows are MoE layers already.
    public let decoderLayers: [Int]?
    /// Decoder layers of the dumps with no routed token in any window, taken as dense and dropped
    /// because no config said which layers are dense (empty with a config, or for JSON/CSV).
    public let droppedLayers: [Int]

    /// Every window's loads added up: what a single plan is made from.
    public func total() throws(PlacementError) -> LoadProfile {
        var sum = windows[0].loads
        for w in windows.dropFirst() {
            for i in sum.indices { for j in sum[i].indices { sum[i][j] += w.loads[i][j] } }
        }
        try LoadProfile.check(sum, file: nil)
        return LoadProfile(loads: sum)
    }
}

extension LoadProfile {
    /// Reads load profiles as windows of one time series:
    /// - JSON and CSV files (zstd-compressed or not) are a window each, in the order given;
    /// - SGLang's recorder dumps (`expert_distribution_recorder_<time>.pt`, torch.save files) are
    ///   grouped by their `rank`: each rank's files, in the order given, are its windows, and
    ///   window i is the sum over ranks of their i-th file. A dump's passes (its `logical_count`
    ///   buffer) are summed into its window: SGLang keeps them in a circular buffer whose order
    ///   the file does not record.
    /// A dump has a row per decoder layer; `layers` (from the model's config) says which are MoE
    /// and the others must have no routed token. So does a JSON or CSV profile with as many rows as
    /// the config has decoder layers, when some of them are dense. Without it, rows with no routed token in any
    /// window are taken as dense (every token passes every MoE layer, so a MoE layer always has
    /// some) and listed in `droppedLayers`.
    public static func readWindows(paths: [String], layers: DecoderLayers? = nil, expectedExperts: Int? = nil) throws(PlacementError) -> ProfileWindows {
        var profiles: [(path: String, profile: LoadProfile)] = []
        var dumps: [(path: String, dump: SGLangDump)] = []
        for path in paths {
            switch try readAny(path: path, expectedExperts: expectedExperts) {
            case .profile(let p): profiles.append((path, p))
            case .dump(let d): dumps.append((path, d))
            }
            if !profiles.isEmpty && !dumps.isEmpty {
                throw PlacementError(.unsupportedFormat, file: path, "SGLang dumps (a row per decoder layer) and JSON or CSV profiles (a row per MoE layer) cannot be combined: give one kind")
            }
        }
        guard dumps.isEmpty else { return try windows(of: dumps, layers: layers, expectedExperts: expectedExperts) }
        for (path, p) in profiles.dropFirst() where p.layers != profiles[0].profile.layers || p.experts != profiles[0].profile.experts {
            throw PlacementError(.windowsDiffer, file: path, "\(counted(p.layers, "layer")) x \(counted(p.experts, "expert")), but \(profiles[0].path) has \(profiles[0].profile.layers) x \(profiles[0].profile.experts): the profiles given together must have the same shape")
        }
        // A JSON or CSV profile with a row per decoder layer (SGLang's logical_count as its recorder
        // counts, converted to JSON) is read as a dump when the config tells the rows apart.
        if let layers, profiles[0].profile.layers == layers.count, layers.moeLayers.count != layers.count {
            let rows = profiles.map { (path: $0.path, dump: SGLangDump(rank: 0, rows: $0.profile.loads)) }
            return try windows(of: rows, layers: layers, expectedExperts: expectedExperts)
        }
        return ProfileWindows(windows: profiles.map(\.profile), decoderLayers: nil, droppedLayers: [])
    }

    enum Read {
        case profile(LoadProfile)
        case dump(SGLangDump)
    }

    /// A file of any form moetool reads, told by its content: zstd is decompressed, then JSON,
    /// CSV or a torch.save file; anything else is refused naming what it is.
    static func readAny(path: String, expectedExperts: Int?) throws(PlacementError) -> Read {
        var bytes = try FileBytes.read(path)
        var format = FileFormat.recognise(bytes)
        if format == .zstd {
            bytes = try decompress(bytes, path: path)
            format = FileFormat.recognise(bytes)
            if format == .zstd { format = .other("zstd-compressed twice") }
        }
        switch format {
        case .json, .csv: return .profile(try parse(bytes, name: path, expectedExperts: expectedExperts))
        case .torchZip: return .dump(try SGLangDump(bytes, path: path))
        case .zstd: fatalError("handled above")
        case .other(let what): throw PlacementError(.unsupportedFormat, file: path, "this is \(what), not a load profile")
        }
    }

    static func windows(of dumps: [(path: String, dump: SGLangDump)], layers: DecoderLayers?, expectedExperts: Int?) throws(PlacementError) -> ProfileWindows {
        let (first, shape) = (dumps[0], (dumps[0].dump.rows.count, dumps[0].dump.rows[0].count))
        var ranks: [Int] = []
        var byRank: [Int: [(path: String, dump: SGLangDump)]] = [:]
        for d in dumps {
            guard (d.dump.rows.count, d.dump.rows[0].count) == shape else {
                throw PlacementError(.ranksDiffer, file: d.path, "logical_count has \(d.dump.rows.count) layers x \(d.dump.rows[0].count) experts, but \(first.path) has \(shape.0) x \(shape.1)")
            }
            if byRank[d.dump.rank] == nil { ranks.append(d.dump.rank) }
            byRank[d.dump.rank, default: []].append(d)
        }
        let count = byRank[ranks[0]]!.count
        for r in ranks where byRank[r]!.count != count {
            throw PlacementError(.ranksDiffer, file: byRank[r]![0].path, "rank \(r) has \(counted(byRank[r]!.count, "dump")), rank \(ranks[0]) has \(count)")
        }
        var rows: [[[Double]]] = []
        for i in 0..<count {
            var sum = byRank[ranks[0]]![i].dump.rows
            for r in ranks.dropFirst() {
                let other = byRank[r]![i].dump.rows
                for l in sum.indices { for e in sum[l].indices { sum[l][e] += other[l][e] } }
            }
            rows.append(sum)
        }
        if let expectedExperts, shape.1 != expectedExperts {
            throw PlacementError(.expertCountMismatch, file: first.path, "logical_count has \(shape.1) experts per layer but the config has \(expectedExperts)")
        }
        let routed = (0..<shape.0).map { l in rows.contains { w in w[l].contains { $0 != 0 } } }
        let keep: [Int]
        var dropped: [Int] = []
        if let layers {
            guard layers.count == shape.0 else {
                throw PlacementError(.expertCountMismatch, file: first.path, "logical_count has a row for each of \(counted(shape.0, "decoder layer")), but the config's num_hidden_layers is \(layers.count)")
            }
            if let l = layers.denseLayers.first(where: { routed[$0] }) {
                throw PlacementError(.expertCountMismatch, file: first.path, "decoder layer \(l) is dense by the config, but tokens were routed to experts in it")
            }
            keep = layers.moeLayers
        } else {
            guard routed.contains(true) else { throw PlacementError(.noLoads, file: first.path, "logical_count is all zero: no token was recorded") }
            keep = routed.indices.filter { routed[$0] }
            dropped = routed.indices.filter { !routed[$0] }
        }
        var windows: [LoadProfile] = []
        for (i, w) in rows.enumerated() {
            let loads = keep.map { w[$0] }
            try check(loads, file: byRank[ranks[0]]![i].path)
            windows.append(LoadProfile(loads: loads))
        }
        return ProfileWindows(windows: windows, decoderLayers: keep, droppedLayers: dropped)
    }
}

/// What SGLang's expert distribution recorder writes in `stat` (and `stat_approx`) mode
/// (sglang 0.5.23, srt/eplb/expert_distribution.py, `_StatAccumulator.dump` then `_dump_to_file`):
/// `torch.save(dict(rank=int, logical_count=int32 tensor [buffer passes, num_hidden_layers, experts],
/// average_utilization_rate_over_window=float or None))`, the counts already summed over ranks
/// (all_reduce) and written by rank 0. Read: the rank, and each layer's counts summed over passes.
struct SGLangDump {
    let rank: Int
    /// [decoder layer][expert]
    let rows: [[Double]]

    init(rank: Int, rows: [[Double]]) {
        self.rank = rank
        self.rows = rows
    }

    init(_ bytes: [UInt8], path: String) throws(PlacementError) {
        let value: PickleValue
        do {
            value = try TorchArchive.read(bytes, file: path)
        } catch {
            throw PlacementError(.invalidTorchFile, file: path, "\(error.message) (\(error.rule.rawValue))")
        }
        func refuse(_ m: String) -> PlacementError { PlacementError(.notAnSGLangDump, file: path, m) }
        guard case .dict(let entries) = value else { throw refuse("a torch.save file holding \(value.kind), not SGLang's dict") }
        if value["records"] != nil {
            throw refuse("SGLang's per_pass or per_token dump (records of physical counts per forward pass, a file per rank), not the stat mode's logical_count")
        }
        guard let counts = value["logical_count"] else {
            let keys = entries.prefix(8).map { e -> String in if case .string(let s) = e.key { return s } else { return e.key.kind } }
            throw refuse("a dict without logical_count (it has: \(keys.joined(separator: ", ")))")
        }
        switch value["rank"] {
        case nil: rank = 0
        case .int(let r)?: rank = Int(r)
        case let other?: throw refuse("rank is \(other.kind), not an integer")
        }
        guard case .tensor(let t) = counts, t.shape.count == 3 || t.shape.count == 2 else {
            throw refuse("logical_count is \(counts.kind), not a tensor [passes, layers, experts]")
        }
        let passes = t.shape.count == 3 ? t.shape[0] : 1
        let (layers, experts) = (t.shape[t.shape.count - 2], t.shape[t.shape.count - 1])
        guard layers > 0, experts > 0 else { throw PlacementError(.noLoads, file: path, "logical_count has \(layers) layers x \(experts) experts") }
        guard layers <= LoadProfile.maxLayers, experts <= LoadProfile.maxExperts, layers * experts <= LoadProfile.maxLoads else {
            throw PlacementError(.profileTooLarge, file: path, "logical_count has \(layers) layers x \(experts) experts, more than moetool plans")
        }
        var rows = [[Double]](repeating: [Double](repeating: 0, count: experts), count: layers)
        var index = 0
        for _ in 0..<passes {
            for l in 0..<layers {
                for e in 0..<experts {
                    rows[l][e] += t.element(index)
                    index += 1
                }
            }
        }
        self.rows = rows
    }
}
