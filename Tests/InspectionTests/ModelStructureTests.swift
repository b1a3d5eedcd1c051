import Checkpoint
import FixtureSupport
import Inspection
import SafetensorsFormat
import StrictJSON
import Testing
import Support

/// Layers, experts and parameter counts on every transformers-written fixture equal
/// what Fixtures/generate.py derived independently from the config and the torch model.
@Suite struct MoEViewOfFixtures {
    static let names = Fixtures.expectedCheckpoints

    @Test(arguments: names)
    func matchesPythonDerivedCounts(_ name: String) throws {
        let expected = try #require(Fixtures.json("expected/\(name).json").objectValue)
        let checkpoint = try Checkpoint(path: Fixtures.path(expected["path"]!.stringValue!))
        let report = InspectReport(checkpoint: checkpoint)
        let s = report.structure
        let moe = try #require(expected["moe"]?.objectValue)
        func int(_ k: String) -> Int? { moe[k]?.uint64Value.map(Int.init) }
        #expect(s.totalParameters == expected["parameters"]!.uint64Value!)
        #expect(s.decoderLayers == int("layers"), "\(name) layers")
        #expect(s.moeLayers == int("moe_layers"), "\(name) moe_layers")
        #expect(s.denseLayers == int("dense_layers"), "\(name) dense_layers")
        #expect(s.mtpLayers == int("mtp_layers"), "\(name) mtp_layers")
        #expect(s.routedExperts == int("routed_experts"), "\(name) routed_experts")
        #expect(s.expertsPerToken == int("experts_per_token"), "\(name) experts_per_token")
        #expect(s.sharedExperts == int("shared_experts"), "\(name) shared_experts")
        #expect(s.expertLayout.rawValue == moe["expert_layout"]?.stringValue, "\(name) layout")
        #expect(s.activeParameters == moe["active_parameters"]?.uint64Value, "\(name) active")
        #expect(s.mtpParameters == moe["mtp_parameters"]?.uint64Value, "\(name) mtp params")
        #expect(s.warnings.isEmpty, "\(name): \(s.warnings)")
        let byDtype = try #require(expected["parameters_by_dtype"]?.objectValue)
        #expect(report.parametersByDtype.map(\.0.rawValue).sorted() == byDtype.keys.sorted())
        for (d, n) in report.parametersByDtype { #expect(byDtype[d.rawValue]?.uint64Value == n) }
    }

    @Test func classifiesRealNames() {
        let cases: [(String, TensorRole.Kind, Int?, Int?)] = [
            ("model.layers.3.mlp.experts.17.down_proj.weight", .routedExpert, 3, 17),
            ("model.layers.3.mlp.experts.17.down_proj.weight_scale_inv", .routedExpert, 3, 17),
            ("model.layers.0.block_sparse_moe.experts.7.w1.weight", .routedExpert, 0, 7),
            ("model.layers.2.mlp.experts.gate_up_proj", .routedExpert, 2, nil),
            ("model.layers.3.mlp.shared_experts.up_proj.weight", .sharedExpert, 3, nil),
            ("model.layers.1.mlp.shared_expert.gate_proj.weight", .sharedExpert, 1, nil),
            ("model.layers.1.mlp.shared_expert_gate.weight", .router, 1, nil),
            ("model.layers.3.mlp.gate.e_score_correction_bias", .router, 3, nil),
            ("model.layers.0.block_sparse_moe.gate.weight", .router, 0, nil),
            ("model.layers.0.mlp.gate_proj.weight", .denseMLP, 0, nil),
            ("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", .attention, 0, nil),
            // DeepSeek-V3.2's DSA indexer runs for every token: attention, active.
            ("model.layers.4.self_attn.indexer.wq_b.weight_scale_inv", .attention, 4, nil),
            ("model.layers.4.self_attn.indexer.k_norm.bias", .attention, 4, nil),
            ("model.layers.4.self_attn.indexer.weights_proj.weight", .attention, 4, nil),
            ("model.layers.61.eh_proj.weight", .mtp, 61, nil),
            ("model.layers.61.shared_head.head.weight", .mtp, 61, nil),
            ("model.layers.5.input_layernorm.weight", .norm, 5, nil),
            ("model.embed_tokens.weight", .embedding, nil, nil),
            ("lm_head.weight", .lmHead, nil, nil),
            ("model.norm.weight", .norm, nil, nil),
        ]
        for (name, kind, layer, expert) in cases {
            let r = TensorRole.classify(name)
            #expect(r.kind == kind, "\(name)")
            #expect(r.layer == layer, "\(name)")
            #expect(r.expert == expert, "\(name)")
        }
    }

    @Test func reportJSONHasTheDocumentedKeys() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("models/qwen2_moe-f32-sharded"))
        let json = InspectReport(checkpoint: checkpoint).json()
        let text = JSONSerializer.pretty(json)
        let o = try #require(try JSONParser.parse(text).objectValue)
        for key in ["schema", "tensors", "parameters", "parameters_by_dtype", "bytes", "files", "moe", "warnings"] {
            #expect(o[key] != nil, "\(key)")
        }
        let moe = try #require(o["moe"]?.objectValue)
        for key in ["layers", "moe_layers", "routed_experts", "experts_per_token", "shared_experts", "active_parameters"] {
            #expect(moe[key] != nil, "moe.\(key)")
        }
        #expect(o["files"]?.uint64Value == UInt64(checkpoint.files.count))
    }
}

@Suite struct NamePatternTests {
    func tensor(_ name: String, _ dtype: Dtype = .BF16, _ shape: [UInt64] = [2]) -> TensorInfo {
        TensorInfo(name: name, dtype: dtype, shape: shape, begin: 0, end: 0)
    }

    @Test func collapsesAProduct() {
        var ts: [TensorInfo] = []
        for l in 3...60 { for e in 0...255 { ts.append(tensor("model.layers.\(l).mlp.experts.\(e).down_proj.weight", .F8_E4M3, [7168, 2048])) } }
        let p = NamePatterns.collapse(ts)
        #expect(p.count == 1)
        #expect(p[0].pattern == "model.layers.{3..60}.mlp.experts.{0..255}.down_proj.weight")
        #expect(p[0].count == 14848)
    }

    @Test func neverClaimsNamesThatAreNotThere() {
        // Layer 1 lacks expert 2: the result must not be {0..1}x{0..2}.
        let names = ["l.0.e.0", "l.0.e.1", "l.0.e.2", "l.1.e.0", "l.1.e.1"]
        let p = NamePatterns.collapse(names.map { tensor($0) })
        #expect(Set(p.flatMap(expand)) == Set(names))
        #expect(p.reduce(0) { $0 + $1.count } == names.count)
    }

    @Test func keepsDtypesAndShapesApart() {
        let p = NamePatterns.collapse([tensor("a.0.w", .BF16), tensor("a.1.w", .F32), tensor("a.2.w", .BF16, [3])])
        #expect(p.count == 3)
    }

    @Test func formatsGaps() {
        let p = NamePatterns.collapse([0, 1, 2, 3, 7, 9, 10].map { tensor("x.\($0).y") })
        #expect(p.map(\.pattern) == ["x.{0..3,7,9,10}.y"])
        // Leading zeros are literal text, not numbers.
        #expect(NamePatterns.collapse([tensor("x.01.y"), tensor("x.1.y")]).count == 2)
    }

    /// A large header: 40,960 names of four numbers each (one missing on odd parts, so two patterns),
    /// and 1,000 names of 1,000 numbers each that differ in the first (so nothing merges before the last
    /// step). Grouping compared whole number lists at every position,
    /// quadratic in the numbers per name (a 2.8 MB header took 180 s; this test, minutes); now linear,
    /// a few seconds in a debug build. The patterns, exactly, from names in any order.
    @Test(.timeLimit(.minutes(1))) func largeHeaderCollapsesExactly() {
        var ts: [TensorInfo] = []
        for a in 0..<10 { for b in 0..<8 { for c in 0..<16 { for d in 0..<32 where !(c % 2 == 1 && d == 31) {
            ts.append(tensor("blk.\(a).sub.\(b).part.\(c).\(d).weight"))
        } } } }
        let fixed = (0..<999).map { String($0 * 7 % 13) }.joined(separator: ".")
        for i in 0..<1000 { ts.append(tensor("deep.\(i).\(fixed)", .F32)) }
        #expect(ts.count == 40960 - 10 * 8 * 8 + 1000)
        var rng = SplitMix64(seed: 42)
        for i in stride(from: ts.count - 1, to: 0, by: -1) { ts.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        let p = NamePatterns.collapse(ts)
        #expect(p.map(\.pattern) == ["blk.{0..9}.sub.{0..7}.part.{0,2,4,6,8,10,12,14}.{0..31}.weight",
                                      "blk.{0..9}.sub.{0..7}.part.{1,3,5,7,9,11,13,15}.{0..30}.weight",
                                      "deep.{0..999}.\(fixed)"])
        #expect(p.map(\.count) == [20480, 19840, 1000])
        #expect(p.map(\.firstName) == ["blk.0.sub.0.part.0.0.weight", "blk.0.sub.0.part.1.0.weight", "deep.0.\(fixed)"])
        #expect(p.map(\.dtype) == [.BF16, .BF16, .F32])
    }

    /// On every fixture, expanding the patterns gives back exactly the tensor names.
    @Test(arguments: Fixtures.expectedCheckpoints)
    func exactOnFixtures(_ name: String) throws {
        let expected = try #require(Fixtures.json("expected/\(name).json").objectValue)
        let checkpoint = try Checkpoint(path: Fixtures.path(expected["path"]!.stringValue!))
        let tensors = checkpoint.allTensors.map(\.tensor)
        let patterns = NamePatterns.collapse(tensors)
        #expect(patterns.count < tensors.count)
        let expanded = patterns.flatMap(expand)
        #expect(expanded.count == tensors.count)
        #expect(Set(expanded) == Set(tensors.map(\.name)))
    }

    @Test func naturalOrder() {
        #expect(naturalLess("layers.2.x", "layers.10.x"))
        #expect(!naturalLess("layers.10.x", "layers.2.x"))
        #expect(naturalLess("a", "b"))
        #expect(naturalLess("a", "a.1"))
    }

    /// Expands `{a..b,c}` sets back into names (test oracle).
    func expand(_ p: NamePattern) -> [String] {
        var results = [""]
        var parts: [Substring] = []
        var depth = 0
        var start = p.pattern.startIndex
        for i in p.pattern.indices {
            let c = p.pattern[i]
            if c == "{" { depth += 1 } else if c == "}" { depth -= 1 } else if c == ".", depth == 0 {
                parts.append(p.pattern[start..<i])
                start = p.pattern.index(after: i)
            }
        }
        parts.append(p.pattern[start...])
        for (i, part) in parts.enumerated() {
            var options: [String] = [String(part)]
            if part.hasPrefix("{") && part.hasSuffix("}") {
                options = part.dropFirst().dropLast().split(separator: ",").flatMap { item -> [String] in
                    let bounds = item.split(separator: ".", omittingEmptySubsequences: true)
                    if item.contains(".."), bounds.count == 2, let a = Int(bounds[0]), let b = Int(bounds[1]) {
                        return (a...b).map(String.init)
                    }
                    return [String(item)]
                }
            }
            results = results.flatMap { prefix in options.map { i == 0 ? $0 : prefix + "." + $0 } }
        }
        return results
    }
}

@Suite struct NameFilterTests {
    @Test func matchesAnywhereWithExtendedSyntax() throws {
        let f = try NameFilter(#"layers\.(3|61)\.mlp\.experts\.[0-9]+\.down"#)
        #expect(f.matches("model.layers.3.mlp.experts.12.down_proj.weight"))
        #expect(f.matches("model.layers.61.mlp.experts.0.down_proj.weight_scale_inv"))
        #expect(!f.matches("model.layers.30.mlp.experts.12.down_proj.weight"))
        #expect(!f.matches("model.layers.3.mlp.experts.x.down_proj.weight"))
    }

    @Test func refusesABrokenPattern() {
        #expect(throws: NameFilter.InvalidPattern.self) { try NameFilter("(") }
    }
}

@Suite struct WithoutConfig {
    /// A bare weights file: experts are still counted from the names, but the
    /// active parameters cannot be known without experts-per-token.
    @Test func countsExpertsFromNamesAlone() throws {
        let f = try SafetensorsFile(path: Fixtures.path("models/mixtral-bf16/model.safetensors"))
        let s = ModelStructure(tensors: f.tensors, config: nil, source: "x")
        #expect(s.moeLayers == 3)
        #expect(s.routedExperts == 8)
        #expect(s.expertsPerToken == nil)
        #expect(s.activeParameters == nil)
        #expect(s.warnings.map(\.kind) == [.configMissing])
    }
}

@Suite struct MultimodalParameters {
    func tensor(_ name: String, _ shape: [UInt64]) -> TensorInfo {
        TensorInfo(name: name, dtype: .BF16, shape: shape, begin: 0, end: 0)
    }

    /// A vision tower's own `layers.N` are not decoder layers, and its parameters are no text token's:
    /// counted in the total and apart, never as active.
    @Test func visionTowersAreApartAndNotActive() {
        let text = [tensor("language_model.model.embed_tokens.weight", [100, 8]),
                    tensor("language_model.model.layers.0.self_attn.q_proj.weight", [8, 8]),
                    tensor("language_model.model.layers.0.mlp.up_proj.weight", [16, 8]),
                    tensor("language_model.lm_head.weight", [100, 8])]
        let vision = [tensor("vision_model.model.layers.0.self_attn.q_proj.weight", [32, 32]),
                      tensor("vision_model.model.layers.1.mlp.fc1.weight", [64, 32]),
                      tensor("multi_modal_projector.linear_1.weight", [8, 32]),
                      tensor("model.visual.blocks.0.attn.qkv.weight", [3, 5])]
        let s = ModelStructure(tensors: text + vision, config: nil, source: "x")
        #expect(s.decoderLayers == 1)
        #expect(s.multimodalParameters == 32 * 32 + 64 * 32 + 8 * 32 + 15)
        #expect(s.totalParameters == 800 + 64 + 128 + 800 + s.multimodalParameters)
        #expect(s.activeParameters == 800 + 64 + 128 + 800)
        #expect(TensorRole.classify("model.vision_tower.blocks.3.mlp.experts.2.w1").kind == .multimodal)
        let expert = TensorRole.classify("model.language_model.layers.4.mlp.experts.2.down_proj.weight")
        #expect(expert.kind == .routedExpert && expert.layer == 4 && expert.expert == 2)
    }
}

/// Llama 4's published sizes from its config.json alone: the text model's tensors as ExpectedTensors lists them
/// (fused expert stacks) for Scout (48 layers, all MoE with interleave_moe_layer_step 1, 16 experts) and Maverick
/// (step 2: the odd layers MoE, 128 experts), both top-1 with a shared expert. Meta publishes 109B total (its
/// vision tower included) / 17B active and 400B / 17B.
@Suite struct Llama4PublishedSizes {
    func config(experts: Int, step: Int) throws -> ModelConfig {
        let text = """
            {"model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"], "tie_word_embeddings": false,
             "text_config": {"model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
              "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
              "head_dim": 128, "vocab_size": 202048, "num_local_experts": \(experts), "num_experts_per_tok": 1,
              "interleave_moe_layer_step": \(step)}}
            """
        return ModelConfig(try #require(try JSONParser.parse(text).objectValue))
    }

    func structure(_ c: ModelConfig) throws -> ModelStructure {
        let expected = try #require(ExpectedTensors.expected(c, has: { _ in false }))
        let tensors = expected.map { TensorInfo(name: $0.name, dtype: .BF16, shape: $0.shape, begin: 0, end: 0) }
        return ModelStructure(tensors: tensors, config: c, source: "x")
    }

    @Test func scout() throws {
        let s = try structure(try config(experts: 16, step: 1))
        #expect(s.moeLayers == 48 && s.denseLayers == 0 && s.routedExperts == 16 && s.sharedExperts == 1)
        #expect(s.expertLayout == .fused)
        // Per layer: attention 62.9M, norms, router, shared expert 125.8M and 16 routed experts of 125.8M; embeddings and head 2.07B.
        #expect(s.totalParameters == 107_769_861_120)
        #expect(s.activeParameters == 17_172_894_720)
        #expect(s.problems.isEmpty)
    }

    @Test func maverick() throws {
        let c = try config(experts: 128, step: 2)
        #expect((0..<4).map { c.isMoELayer($0) } == [false, true, false, true])
        let s = try structure(c)
        #expect(s.moeLayers == 24 && s.denseLayers == 24 && s.routedExperts == 128)
        #expect(s.totalParameters == 400_711_848_960)
        #expect(s.activeParameters == 17_184_691_200)
        #expect(s.problems.isEmpty)
        // moe_layers, when config.json lists them, decides instead of the step.
        var raw = c.raw
        var text = try #require(raw["text_config"]?.objectValue)
        text.append("moe_layers", .array([.int(0), .int(47)]))
        raw.members.removeAll { $0.key == "text_config" }
        raw.append("text_config", .object(text))
        let listed = ModelConfig(raw)
        #expect((0..<48).filter { listed.isMoELayer($0) == true } == [0, 47])
    }
}
