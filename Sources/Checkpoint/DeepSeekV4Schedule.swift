/// DeepSeek-V4's per-layer schedule as config.json states it, in transformers' form (layer_types,
/// mlp_layer_types, compress_rates) or in the release's (compress_ratios, num_hash_layers,
/// compress_rate_csa / compress_rate_hca), with transformers' defaults for what is left out.
public enum DeepSeekV4Attention: String, Sendable, CaseIterable {
    /// Sliding-window attention only.
    case sliding = "sliding_attention"
    /// Compressed sparse attention (CSA): overlapping windows of the CSA rate pooled into entries, a lightning
    /// indexer choosing index_topk of them per query.
    case compressedSparse = "compressed_sparse_attention"
    /// Heavily compressed attention (HCA): disjoint windows of the HCA rate pooled into entries, all of them seen.
    case heavilyCompressed = "heavily_compressed_attention"

    /// The release's compress_ratios values: 0 none, 4 CSA, 128 HCA (only the kind; the rates come from
    /// compress_rates).
    static let byRatio: [Int: DeepSeekV4Attention] = [0: .sliding, 4: .compressedSparse, 128: .heavilyCompressed]
}

extension ModelConfig {
    /// Each decoder layer's attention kind: layer_types; else the release's compress_ratios (its first
    /// num_hidden_layers entries: the rest are the MTP layers'); else transformers' default (two HCA layers,
    /// then CSA and HCA alternating). nil when a listed kind is unknown or the list is too short.
    public var deepSeekV4Attention: [DeepSeekV4Attention]? {
        guard let n = numHiddenLayers else { return nil }
        if let types = field("layer_types")?.arrayValue {
            let kinds = types.compactMap { $0.stringValue.flatMap(DeepSeekV4Attention.init(rawValue:)) }
            return kinds.count == types.count && kinds.count >= n ? Array(kinds.prefix(n)) : nil
        }
        if let ratios = field("compress_ratios")?.arrayValue {
            let kinds = ratios.compactMap { $0.uint64Value.flatMap { DeepSeekV4Attention.byRatio[Int(clamping: $0)] } }
            return kinds.count == ratios.count && kinds.count >= n ? Array(kinds.prefix(n)) : nil
        }
        return (0..<n).map { i in i < 2 ? .heavilyCompressed : (i - 2) % 2 == 1 ? .compressedSparse : .heavilyCompressed }
    }

    /// How many tokens one compressed entry pools for CSA and HCA layers: compress_rates, the release's
    /// compress_rate_csa / compress_rate_hca, or 4 and 128.
    public var deepSeekV4CompressRates: (csa: Int, hca: Int) {
        let rates = field("compress_rates")?.objectValue
        let csa = rates?["compressed_sparse_attention"]?.uint64Value.map { Int(clamping: $0) } ?? int("compress_rate_csa") ?? 4
        let hca = rates?["heavily_compressed_attention"]?.uint64Value.map { Int(clamping: $0) } ?? int("compress_rate_hca") ?? 128
        return (csa, hca)
    }

    /// Whether DeepSeek-V4's layer `layer` routes by token id (a hash_moe layer): mlp_layer_types, else the
    /// first num_hash_layers layers (3 when config.json says neither).
    public func isDeepSeekV4HashLayer(_ layer: Int) -> Bool {
        if let types = field("mlp_layer_types")?.arrayValue {
            return layer < types.count && types[layer].stringValue == "hash_moe"
        }
        return layer < (int("num_hash_layers") ?? 3)
    }
}
