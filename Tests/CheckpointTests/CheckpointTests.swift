import Checkpoint
import FixtureSupport
import SafetensorsFormat
import StrictJSON
import Testing
import Foundation

/// Checkpoints written by transformers' save_pretrained: what we read equals what
/// the Python safetensors package reported (Fixtures/expected/*.json).
@Suite struct TransformersCheckpoints {
    static let names = Fixtures.expectedCheckpoints

    @Test func fixturesExist() {
        #expect(Self.names.count >= 8)
        #expect(Self.names.contains("deepseek_v3-f32-sharded"))
    }

    @Test(arguments: names)
    func tensorsMatchPythonSafetensors(_ name: String) throws {
        let expected = try #require(Fixtures.json("expected/\(name).json").objectValue)
        let relative = try #require(expected["path"]?.stringValue)
        let checkpoint = try Checkpoint(path: Fixtures.path(relative))
        #expect(checkpoint.files.count == Int(expected["files"]!.uint64Value!))
        #expect(UInt64(checkpoint.tensorCount) == expected["tensor_count"]!.uint64Value!)
        #expect(checkpoint.dataBytes == expected["bytes"]!.uint64Value!)
        #expect(checkpoint.layout == (checkpoint.files.count > 1 ? .sharded : .singleFile))
        let tensors = try #require(expected["tensors"]?.objectValue)
        #expect(tensors.members.count == checkpoint.tensorCount)
        for (tensorName, value) in tensors.members {
            let info = try #require(value.objectValue)
            let located = try #require(checkpoint.locate(tensorName), "\(name): \(tensorName) not found")
            #expect(located.tensor.dtype.rawValue == info["dtype"]?.stringValue, "\(tensorName)")
            #expect(located.tensor.shape == info["shape"]?.arrayValue?.compactMap(\.uint64Value), "\(tensorName)")
            #expect(checkpoint.fileNames[located.file] == info["file"]?.stringValue, "\(tensorName)")
            #expect([located.tensor.begin, located.tensor.end] == info["data_offsets"]?.arrayValue?.compactMap(\.uint64Value))
        }
        // The config's counts agree with what Python read from the modules.
        let moe = try #require(expected["moe"]?.objectValue)
        let config = try #require(checkpoint.config, "\(name): config.json not read")
        #expect(config.routedExperts.map(UInt64.init) == moe["routed_experts"]?.uint64Value, "\(name)")
        #expect(config.expertsPerToken.map(UInt64.init) == moe["experts_per_token"]?.uint64Value, "\(name)")
    }

    @Test func readsDeepSeekConfig() throws {
        let c = try #require(try Checkpoint(path: Fixtures.path("models/deepseek_v3-bf16")).config)
        #expect(c.modelType == "deepseek_v3")
        #expect(c.routedExperts == 16)
        #expect(c.expertsPerToken == 4)
        #expect(c.nGroup == 8)
        #expect(c.topkGroup == 4)
        #expect(c.firstKDenseReplace == 1)
        #expect(c.nSharedExperts == 1)
        #expect(c.isMoELayer(0) == false)
        #expect(c.isMoELayer(1) == true)
    }

    /// DeepSeek-V3.2's config as transformers 5.23 writes it lists mlp_layer_types; transformers builds the layers
    /// from that list when given (not from first_k_dense_replace), and so does isMoELayer.
    @Test func readsDeepSeekV32Config() throws {
        let c = try #require(try Checkpoint(path: Fixtures.path("verify/deepseek_v32")).config)
        #expect(c.modelType == "deepseek_v32")
        #expect(c.mlpLayerTypes == ["dense", "sparse", "sparse"])
        #expect((0..<3).map { c.isMoELayer($0) } == [false, true, true])
        var raw = c.raw
        raw.members.removeAll { $0.key == "mlp_layer_types" }
        raw.append("mlp_layer_types", .array([.string("sparse"), .string("dense"), .string("sparse")]))
        let listed = ModelConfig(raw)
        #expect(listed.firstKDenseReplace == 1)
        #expect((0..<3).map { listed.isMoELayer($0) } == [true, false, true])
    }

    /// GLM-5's indexer schedule when config.json gives only its parameters, as GlmMoeDsaConfig (transformers 5.23)
    /// derives it: index_topk_freq 2 -> full, full, shared, full, shared, full; freq 3 with offset 1 -> full, shared,
    /// shared, full, shared, shared; the pattern "FSSF". indexer_types itself wins; other architectures have none.
    @Test func derivesGlmIndexerTypes() throws {
        func config(_ members: [(String, JSONValue)]) -> ModelConfig {
            var raw = JSONObject([("model_type", .string("glm_moe_dsa")), ("num_hidden_layers", .int(6))])
            for (k, v) in members { raw.append(k, v) }
            return ModelConfig(raw)
        }
        let (f, s) = ("full", "shared")
        #expect(config([("index_topk_freq", .int(2))]).indexerTypes == [f, f, s, f, s, f])
        #expect(config([("index_topk_freq", .int(3)), ("index_skip_topk_offset", .int(1))]).indexerTypes == [f, s, s, f, s, s])
        #expect(config([("index_topk_pattern", .string("FSSF"))]).indexerTypes == [f, s, s, f])
        #expect(config([]).indexerTypes == Array(repeating: f, count: 6))
        #expect(config([("indexer_types", .array([.string(f), .string(s)])), ("index_topk_freq", .int(3))]).indexerTypes == [f, s])
        let dsv32 = try #require(try Checkpoint(path: Fixtures.path("verify/deepseek_v32")).config)
        #expect(dsv32.indexerTypes == nil)
    }

    @Test func readsQwenAndMixtralConfigs() throws {
        let qwen3 = try #require(try Checkpoint(path: Fixtures.path("models/qwen3_moe-bf16")).config)
        #expect(qwen3.modelType == "qwen3_moe")
        #expect(qwen3.routedExperts == 8)  // num_local_experts, as transformers 5.23 writes it
        #expect(qwen3.expertsPerToken == 2)
        #expect(qwen3.normTopkProb == false)
        #expect(qwen3.isMoELayer(0) == false)  // mlp_only_layers [0]
        #expect(qwen3.isMoELayer(1) == true)
        let mixtral = try #require(try Checkpoint(path: Fixtures.path("models/mixtral-bf16")).config)
        #expect(mixtral.routedExperts == 8)  // num_local_experts
        #expect(mixtral.expertsPerToken == 2)
        #expect(mixtral.isMoELayer(0) == true)
    }

    /// Llama 4 (verify/llama4, Llama4ForConditionalGeneration): the text model's fields from text_config, its MoE
    /// layers from moe_layers ([1, 3], as transformers writes them for interleave_moe_layer_step 2), and its weights
    /// under language_model.
    @Test func readsLlama4Config() throws {
        let c = try #require(try Checkpoint(path: Fixtures.path("verify/llama4")).config)
        #expect(c.modelType == "llama4")
        #expect(c.hiddenSize == 16 && c.numHiddenLayers == 4)
        #expect(c.routedExperts == 4)  // num_local_experts
        #expect(c.expertsPerToken == 1)
        #expect(c.moeLayerList == [1, 3] && c.interleaveMoELayerStep == 2)
        #expect((0..<4).map { c.isMoELayer($0) } == [false, true, false, true])
        #expect(c.textWeightPrefix == "language_model.")
        let mixtral = try #require(try Checkpoint(path: Fixtures.path("models/mixtral-bf16")).config)
        #expect(mixtral.textWeightPrefix == "")
    }

    @Test func singleFilePathFindsConfigBesideIt() throws {
        let c = try Checkpoint(path: Fixtures.path("models/mixtral-bf16/model.safetensors"))
        #expect(c.layout == .singleFile)
        #expect(c.config?.modelType == "mixtral")
    }
}

/// Broken checkpoint directories (Fixtures/malformed/checkpoints) are refused with their rule.
@Suite struct MalformedCheckpoints {
    static let cases = Fixtures.manifest("malformed/checkpoints/manifest.json")

    @Test func everyCheckpointRuleHasAFixture() {
        let rules = Set(Self.cases.compactMap { $0["rule"]?.stringValue })
        for r in ["shard_missing", "tensor_not_in_weight_map", "tensor_missing_from_shard", "tensor_in_two_shards",
                  "total_size_mismatch", "shard_path_escapes", "shard_not_downloaded", "bin_shard", "index_invalid_json", "shard_invalid", "index_empty", "invalid_shard_name"] {
            #expect(rules.contains(r), "\(r)")
        }
    }

    @Test(arguments: cases)
    func refused(_ entry: JSONObject) throws {
        let dir = try #require(entry["dir"]?.stringValue)
        var rule = try #require(entry["rule"]?.stringValue)
        // A malformed shard is reported with the shard's own rule.
        if rule == "shard_invalid" { rule = try #require(entry["inner_rule"]?.stringValue) }
        if entry["severity"]?.stringValue == "warning" {
            // Loaders load these correctly: opened, with the warning.
            let c = try Checkpoint(path: Fixtures.path("malformed/checkpoints/" + dir))
            let matching = c.warnings.filter { $0.kind.rawValue == rule }
            #expect(!matching.isEmpty, "\(dir): expected warning \(rule), got \(c.warnings)")
            if let tensor = entry["tensor"]?.stringValue { #expect(matching.contains { $0.tensor == tensor }, "\(dir)") }
            return
        }
        do {
            _ = try Checkpoint(path: Fixtures.path("malformed/checkpoints/" + dir))
            Issue.record("\(dir) was accepted")
        } catch {
            let matching = error.problems.filter { $0.rule.rawValue == rule }
            #expect(!matching.isEmpty, "\(dir): expected \(rule), got \(error.problems)")
            if let tensor = entry["tensor"]?.stringValue {
                #expect(matching.contains { $0.tensor == tensor }, "\(dir): \(matching)")
            }
        }
    }

    @Test func missingPathAndEmptyDirectory() throws {
        #expect(throws: InvalidInput.self) { try Checkpoint(path: "/nonexistent/moetool") }
        let empty = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(empty) }
        do {
            _ = try Checkpoint(path: empty)
            Issue.record("empty directory accepted")
        } catch {
            #expect(error.problems.first?.rule == .noWeights)
        }
    }
}

/// Hostile inputs are refused quickly, without large allocations or hangs.
@Suite struct HostileCheckpoints {
    func sparseFile(_ path: String, size: Int64) {
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let h = FileHandle(forWritingAtPath: path)!
        try! h.truncate(atOffset: UInt64(size))
        try! h.close()
    }

    @Test func hugeIndexIsRefusedBeforeParsing() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        sparseFile(dir + "/model.safetensors.index.json", size: Int64(Checkpoint.maxIndexBytes) + 1)
        do {
            _ = try Checkpoint(path: dir)
            Issue.record("accepted")
        } catch {
            #expect(error.problems.first?.rule == .indexInvalid)
            #expect(error.problems.first?.message.contains("above the limit") == true)
        }
    }

    @Test func hugeConfigIsRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        try FileManager.default.copyItem(atPath: Fixtures.path("models/mixtral-bf16/model.safetensors"),
                                         toPath: dir + "/model.safetensors")
        sparseFile(dir + "/config.json", size: Int64(Checkpoint.maxConfigBytes) + 1)
        do {
            _ = try Checkpoint(path: dir)
            Issue.record("accepted")
        } catch {
            #expect(error.problems.first?.rule == .configInvalid)
        }
    }

    @Test func fifoShardDoesNotHang() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        #expect(mkfifo(dir + "/model.safetensors", 0o644) == 0)
        do {
            _ = try Checkpoint(path: dir)
            Issue.record("accepted")
        } catch {
            #expect(error.problems.first?.rule == .unreadable)
        }
    }
}

/// An index that would make a loader load nothing, or something other than what the directory holds.
@Suite struct IndexCompleteness {
    /// A copy of the sharded Qwen3 fixture with another index.
    func withIndex(_ text: String, extra: [String] = []) throws -> String {
        let dir = Fixtures.temporaryDirectory()
        let source = Fixtures.path("models/qwen3_moe-f32-sharded")
        for name in try FileManager.default.contentsOfDirectory(atPath: source) where name != Checkpoint.indexFileName {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: dir + "/" + name)
        }
        for name in extra {
            try FileManager.default.copyItem(atPath: Fixtures.path("models/mixtral-bf16/model.safetensors"), toPath: dir + "/" + name)
        }
        try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/" + Checkpoint.indexFileName))
        return dir
    }

    @Test func anEmptyWeightMapIsAnError() throws {
        let dir = try withIndex(#"{"metadata": {"total_size": 0}, "weight_map": {}}"#)
        defer { Fixtures.removeTemporary(dir) }
        do {
            _ = try Checkpoint(path: dir)
            Issue.record("an empty weight_map was accepted")
        } catch {
            #expect(error.problems.map(\.rule) == [.indexEmpty])
            #expect(error.description.contains("5 .safetensors file(s)"), "\(error)")
        }
    }

    @Test func aShardTheIndexDoesNotNameIsAWarning() throws {
        let source = Fixtures.path("models/qwen3_moe-f32-sharded/" + Checkpoint.indexFileName)
        let dir = try withIndex(String(decoding: Fixtures.readBytes(source), as: UTF8.self), extra: ["stray.safetensors"])
        defer { Fixtures.removeTemporary(dir) }
        let c = try Checkpoint(path: dir)
        #expect(c.files.count == 5)
        let unlisted = c.warnings.filter { $0.kind == .unlistedShard }
        #expect(unlisted.map(\.file) == [dir + "/stray.safetensors"])
    }

    /// Python loaders refuse a NUL byte in a path; so does moetool, instead of opening the name cut at the NUL.
    @Test func aNULByteInAShardNameIsAnError() throws {
        let original = String(decoding: Fixtures.readBytes(Fixtures.path("models/qwen3_moe-f32-sharded/" + Checkpoint.indexFileName)), as: UTF8.self)
        let text = original.replacingOccurrences(of: "\"model-00001-of-00005.safetensors\"", with: "\"model-00001-of-00005.safetensors\\u0000.txt\"")
        #expect(text != original)
        let dir = try withIndex(text)
        defer { Fixtures.removeTemporary(dir) }
        do {
            _ = try Checkpoint(path: dir)
            Issue.record("a NUL in a shard name was accepted")
        } catch {
            #expect(error.problems.contains { $0.rule == .invalidShardName })
            #expect(error.description.contains("\\u{0}"), "\(error)")
        }
    }
}

/// The fixtures ship with every clone: their budget is 24 MB for the whole tree (Fixtures/README.md says why).
@Suite struct FixtureBudget {
    @Test func fixturesStayUnderTwentyFourMegabytes() throws {
        let files = try #require(FileManager.default.enumerator(atPath: Fixtures.root)).compactMap { $0 as? String }
        var total: UInt64 = 0
        for name in files {
            let attributes = try FileManager.default.attributesOfItem(atPath: Fixtures.root + "/" + name)
            if attributes[.type] as? FileAttributeType == .typeRegular { total += (attributes[.size] as? UInt64) ?? 0 }
        }
        #expect(total > 10_000_000, "the fixtures were not found whole (\(total) bytes)")
        #expect(total < 24_000_000, "Fixtures/ holds \(total) bytes")
    }
}
