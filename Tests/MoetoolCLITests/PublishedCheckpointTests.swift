import FixtureSupport
import Foundation
import StrictJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Published quantized MoE checkpoints at their real size, header only (Fixtures/published, made by
/// Fixtures/published_skeletons.py): inspect counts the parameters the script derives on its own, and the figures
/// their makers publish.
@Suite struct PublishedCheckpoints {
    /// What a maker's active count leaves out: gpt-oss counts without the input embedding (5.13B: "5.1B"), Qwen
    /// with it (3.353B: "3.3B"), GLM without the embedding and the output head (12.18B: "12B"; 12.80B with the
    /// head).
    enum ActiveConvention: Sendable { case withEmbedding, withoutEmbedding, withoutEmbeddingOrHead }

    /// name, how close the published total is given (the main model's: MTP layers apart, as GLM's 106B leaves its
    /// MTP layer out), the conventions the published active count may follow and how close it is given.
    /// Kimi publishes "1T" and "32B" (1.026T; 31.7B without the embedding, 32.9B with it); MiniMax "230B" and "10B"
    /// (228.7B; 10.42B without the embedding, 9.80B without the head too); Meta "109B" and "17B" for Llama 4 Scout
    /// (108.64B with the vision tower; 17.17B with the embedding); DeepSeek "671B" and "37B" for V3.2 (671.88B without
    /// its MTP layer, 685.36B with it; 37.48B without the embedding).
    static let models: [(String, Double, [ActiveConvention], Double)] = [
        ("gpt-oss-120b", 0.0005, [.withoutEmbedding], 0.02), ("gpt-oss-20b", 0.001, [.withoutEmbedding], 0.02),
        ("Kimi-K2-Thinking", 0.05, [.withEmbedding, .withoutEmbedding], 0.02), ("Qwen3-30B-A3B-NVFP4", 0.002, [.withEmbedding], 0.02),
        ("GLM-4.5-Air", 0.01, [.withoutEmbeddingOrHead], 0.02),
        ("MiniMax-M2", 0.01, [.withoutEmbedding, .withoutEmbeddingOrHead], 0.05), ("Llama-4-Scout", 0.005, [.withEmbedding], 0.02),
        ("DeepSeek-V3.2", 0.005, [.withoutEmbedding], 0.02),
    ]

    struct Manifest {
        let config: JSONValue
        let tensors: [(name: String, dtype: String, shape: [UInt64])]
        let derivedTotal: UInt64, derivedActive: UInt64, embedding: UInt64, mtp: UInt64
        let publishedTotal: Double, publishedActive: Double
    }

    static func manifest(_ name: String) throws -> Manifest {
        let doc = Fixtures.json("published/\(name).json")
        let rows = try #require(doc["tensors"]?.arrayValue)
        var tensors: [(name: String, dtype: String, shape: [UInt64])] = []
        for row in rows {
            let r = try #require(row.arrayValue)
            let pattern = try #require(r[0].stringValue), dtype = try #require(r[1].stringValue)
            let shape = (r[2].arrayValue ?? []).compactMap { $0.uint64Value }
            func range(_ key: String) -> [Int?] {
                guard let v = r[3][key]?.arrayValue, let a = v[0].uint64Value, let b = v[1].uint64Value else { return [nil] }
                return (Int(a)..<Int(b)).map { $0 }
            }
            for layer in range("L") {
                for expert in range("E") {
                    var n = pattern
                    if let layer { n = n.replacingOccurrences(of: "{L}", with: String(layer)) }
                    if let expert { n = n.replacingOccurrences(of: "{E}", with: String(expert)) }
                    tensors.append((n, dtype, shape))
                }
            }
        }
        return Manifest(config: try #require(doc["config"]), tensors: tensors,
                        derivedTotal: try #require(doc["derived"]?["total"]?.uint64Value),
                        derivedActive: try #require(doc["derived"]?["active"]?.uint64Value),
                        embedding: try #require(doc["derived"]?["embedding"]?.uint64Value),
                        mtp: try #require(doc["derived"]?["mtp"]?.uint64Value),
                        publishedTotal: try #require(doc["published"]?["total"]?.doubleValue),
                        publishedActive: try #require(doc["published"]?["active"]?.doubleValue))
    }

    /// The manifest as sharded safetensors whose data is never written (sparse files), an index and config.json.
    static func writeSkeleton(_ m: Manifest, to dir: String, tensorsPerShard: Int = 8000) throws {
        let bytesPerElement = ["BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8, "U8": 1, "F8_E4M3": 1]
        let shards = stride(from: 0, to: m.tensors.count, by: tensorsPerShard).map { Array(m.tensors[$0..<min(m.tensors.count, $0 + tensorsPerShard)]) }
        // Headers written as text (names are plain ASCII): building 200,000 JSON members is slow in a debug build.
        var weightMap: [String] = []
        var total: UInt64 = 0
        for (i, shard) in shards.enumerated() {
            let file = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
            var header = #"{"__metadata__":{"format":"pt"}"#
            var offset: UInt64 = 0
            for t in shard {
                let size = t.shape.reduce(UInt64(try #require(bytesPerElement[t.dtype])), *)
                header += #","\#(t.name)":{"dtype":"\#(t.dtype)","shape":[\#(t.shape.map(String.init).joined(separator: ","))],"data_offsets":[\#(offset),\#(offset + size)]}"#
                offset += size
                weightMap.append(#""\#(t.name)":"\#(file)""#)
            }
            var json = Array((header + "}").utf8)
            json += [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8)
            let bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json
            let path = dir + "/" + file
            #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
            #expect(truncate(path, off_t(UInt64(bytes.count) + offset)) == 0)  // the data: a hole
            total += offset
        }
        let index = #"{"metadata":{"total_size":\#(total)},"weight_map":{\#(weightMap.joined(separator: ","))}}"#
        try Data(index.utf8).write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        try Data(JSONSerializer.compact(m.config)).write(to: URL(fileURLWithPath: dir + "/config.json"))
    }

    @Test(arguments: models)
    func inspectCountsWhatIsPublished(_ model: (String, Double, [ActiveConvention], Double)) throws {
        let (name, tolerance, conventions, activeTolerance) = model
        let m = try Self.manifest(name)
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        try Self.writeSkeleton(m, to: dir)
        let r = try CLI.run(["inspect", dir, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONParser.parse(Array(r.stdout.utf8))
        #expect(report["valid"] == true)
        let total = try #require(report["parameters"]?.uint64Value)
        let active = try #require(report["moe"]?["active_parameters"]?.uint64Value)
        let mtp = report["moe"]?["mtp_parameters"]?.uint64Value ?? 0
        #expect(total == m.derivedTotal, "\(name): \(total) counted, \(m.derivedTotal) derived")
        #expect(active == m.derivedActive, "\(name): \(active) active, \(m.derivedActive) derived")
        #expect(mtp == m.mtp, "\(name): \(mtp) MTP parameters counted, \(m.mtp) derived")
        let main = Double(total - mtp)
        #expect(abs(main - m.publishedTotal) <= tolerance * m.publishedTotal, "\(name): \(total - mtp) vs published \(m.publishedTotal)")
        // The published active count, in the maker's convention.
        func leftOut(_ c: ActiveConvention) -> UInt64 {
            switch c {
            case .withEmbedding: 0
            case .withoutEmbedding: m.embedding
            case .withoutEmbeddingOrHead: 2 * m.embedding
            }
        }
        #expect(conventions.contains { abs(Double(active - leftOut($0)) - m.publishedActive) <= activeTolerance * m.publishedActive },
                "\(name): \(active) active (\(active - m.embedding) without the embedding) vs published \(m.publishedActive)")
        // Completeness against config.json finds nothing missing.
        let completeness = try #require(report["completeness"], "\(name): config.json's architecture not checked")
        #expect(completeness["missing"] == .array([]) && completeness["wrong_shape"] == .array([]), "\(completeness)")
        #expect(completeness["expected_tensors"]?.uint64Value ?? 0 > 0)
    }
}

private extension JSONValue {
    subscript(key: String) -> JSONValue? { objectValue?[key] }
}
