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
    /// name: (how close the published total is given, whether the published active count includes the input
    /// embedding). gpt-oss counts active parameters without the embedding (5.13B: "5.1B"), Qwen with it (3.353B:
    /// "3.3B"); Kimi publishes "1T" and "32B" (1.026T; 31.7B without the embedding, 32.9B with it).
    static let models: [(String, Double, Bool?)] = [
        ("gpt-oss-120b", 0.0005, false), ("gpt-oss-20b", 0.001, false),
        ("Kimi-K2-Thinking", 0.05, nil), ("Qwen3-30B-A3B-NVFP4", 0.002, true),
    ]

    struct Manifest {
        let config: JSONValue
        let tensors: [(name: String, dtype: String, shape: [UInt64])]
        let derivedTotal: UInt64, derivedActive: UInt64, embedding: UInt64
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
    func inspectCountsWhatIsPublished(_ model: (String, Double, Bool?)) throws {
        let (name, tolerance, activeWithEmbedding) = model
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
        #expect(total == m.derivedTotal, "\(name): \(total) counted, \(m.derivedTotal) derived")
        #expect(active == m.derivedActive, "\(name): \(active) active, \(m.derivedActive) derived")
        #expect(abs(Double(total) - m.publishedTotal) <= tolerance * m.publishedTotal, "\(name): \(total) vs published \(m.publishedTotal)")
        // The published active count, in the maker's convention, within 2% (Qwen's "3.3B" is 3.353B).
        let candidates = activeWithEmbedding.map { [$0] } ?? [true, false]
        #expect(candidates.contains { abs(Double(active - ($0 ? 0 : m.embedding)) - m.publishedActive) <= 0.02 * m.publishedActive },
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
