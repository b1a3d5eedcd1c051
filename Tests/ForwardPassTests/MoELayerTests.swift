import Checkpoint
import FixtureSupport
import Foundation
import SafetensorsFormat
import StrictJSON
import Testing

@testable import ForwardPass

/// transformers' own MoE blocks on the tiny float32 fixtures (Fixtures/moe_reference.py).
@Suite struct MoELayerAgainstTransformers {
    static let models = ["deepseek_v3-f32-sharded", "mixtral-f32-sharded", "qwen2_moe-f32-sharded", "qwen3_moe-f32-sharded"]

    func floats(_ f: SafetensorsFile, _ name: String) -> [Float] {
        let t = f.tensor(named: name)!
        let d = f.data(t)
        return (0..<Int(t.elementCount)).map { Float(bitPattern: d.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) }
    }

    func ints(_ f: SafetensorsFile, _ name: String) -> [Int] {
        let t = f.tensor(named: name)!
        let d = f.data(t)
        return (0..<Int(t.elementCount)).map { Int(Int64(bitPattern: d.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))) }
    }

    /// Every MoE layer: the same experts for every token, weights and outputs within 1e-5 / 1e-4.
    /// The four tiny models, DeepSeek-V3 with 32 experts in 8 groups keeping 4, top-8, YaRN, gpt-oss, and GLM-4.5
    /// (12 experts in 4 groups keeping 2, top-3, a shared expert, a random e_score_correction_bias), and MiniMax-M2 (8
    /// experts, top-3, sigmoid router with a random e_score_correction_bias on the block).
    static let checkpoints = models.map { ($0, "models/" + $0) } + [("deepseek_v3-32e", "verify/deepseek_v3-32e"), ("gpt_oss", "verify/gpt_oss"),
                                                                     ("glm4_moe", "verify/glm4_moe"), ("minimax_m2", "verify/minimax_m2")]

    /// The fused expert layout ([E, 2I, H] gate_up_proj, written by Fixtures/generate.py from the same
    /// in-memory model as the per-expert one) gives the same bits, its halves read in place.
    @Test func fusedExpertsEqualPerExpert() throws {
        let perExpert = try Checkpoint(path: Fixtures.path("models/deepseek_v3-bf16"))
        let fused = try Checkpoint(path: Fixtures.path("models/deepseek_v3-fused-bf16"))
        #expect(fused.locate("model.layers.1.mlp.experts.gate_up_proj") != nil)
        let reference = try SafetensorsFile(path: Fixtures.path("verify/deepseek_v3-f32-sharded.safetensors"))
        for layer in [1, 2] {
            let a = try MoELayer(WeightReader(perExpert), config: perExpert.config!, layer: layer)
            let b = try MoELayer(WeightReader(fused), config: fused.config!, layer: layer)
            let x = floats(reference, "layer.\(layer).input")
            let (ya, ra) = try a.forward(x, tokens: x.count / a.hidden)
            let (yb, rb) = try b.forward(x, tokens: x.count / b.hidden)
            #expect(ya.count == yb.count && ya.map(\.bitPattern) == yb.map(\.bitPattern), "layer \(layer)")
            #expect(ra.map(\.experts) == rb.map(\.experts))
        }
    }

    @Test(arguments: checkpoints)
    func matchesTransformers(_ model: String, _ path: String) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path(path))
        let reference = try SafetensorsFile(path: Fixtures.path("verify/\(model).safetensors"))
        let layers = Set(reference.tensors.compactMap { t -> Int? in
            let parts = t.name.split(separator: ".")
            return parts.count == 3 && parts[2] == "output" ? Int(parts[1]) : nil
        })
        #expect(layers.count >= 2)
        for layer in layers.sorted() {
            let block = try MoELayer(WeightReader(checkpoint), config: checkpoint.config!, layer: layer)
            let x = floats(reference, "layer.\(layer).input")
            let tokens = x.count / block.hidden
            let (y, routing) = try block.forward(x, tokens: tokens)
            let expected = floats(reference, "layer.\(layer).output")
            let worst = maxAbsDifference(y, expected)
            #expect(worst < 1e-4, "\(model) layer \(layer): max abs error \(worst)")
            let experts = ints(reference, "layer.\(layer).experts")
            let weights = floats(reference, "layer.\(layer).weights")
            let k = block.topK
            for t in 0..<tokens {
                #expect(routing[t].experts == Array(experts[(t * k)..<((t + 1) * k)]), "\(model) layer \(layer) token \(t)")
                let dw = maxAbsDifference(routing[t].weights, weights[(t * k)..<((t + 1) * k)])
                #expect(dw < 1e-5, "\(model) layer \(layer) token \(t): weights differ by \(dw)")
            }
        }
    }

    /// The fused expert layout (experts.gate_up_proj / down_proj) reads the same experts as the
    /// per-expert one: the BF16 fused and per-expert DeepSeek fixtures give identical outputs.
    @Test func fusedLayoutMatchesPerExpert() throws {
        let fused = try Checkpoint(path: Fixtures.path("models/deepseek_v3-fused-bf16"))
        let split = try Checkpoint(path: Fixtures.path("models/deepseek_v3-bf16"))
        let a = try MoELayer(WeightReader(fused), config: fused.config!, layer: 1)
        let b = try MoELayer(WeightReader(split), config: split.config!, layer: 1)
        let x = (0..<(4 * a.hidden)).map { Float(($0 * 37) % 101) / 50 - 1 }
        let ya = try a.forward(x, tokens: 4), yb = try b.forward(x, tokens: 4)
        #expect(ya.output == yb.output)
        #expect(ya.routing == yb.routing)
    }
}

/// Whole models against transformers (Fixtures/moe_reference.py): logits and every hidden state.
@Suite struct TransformerAgainstTransformers {
    func floats(_ f: SafetensorsFile, _ name: String) -> [Float] {
        let t = f.tensor(named: name)!
        let d = f.data(t)
        return (0..<Int(t.elementCount)).map { Float(bitPattern: d.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) }
    }

    /// Every model of the MoE-block tests on its 16 tokens; gpt-oss, GLM-4.5 and MiniMax-M2 on a second sequence of 24 too;
    /// Kimi-K2 (its config.json's own model_type on DeepSeek-V3's architecture, 384 experts in one group) on both; DeepSeek-V4
    /// (hyper-connections: its hidden states are the 4 streams of each layer) on both, every layer routed (hash, then top-k),
    /// and stored as the release stores it (FP8 with UE8M0 `.scale` blocks, FP4 I8 experts with E8M0 `.scale` groups,
    /// an MTP layer), as transformers dequantizes it.
    static let wholeModels = MoELayerAgainstTransformers.checkpoints + [("gpt_oss-seq2", "verify/gpt_oss"), ("glm4_moe-seq2", "verify/glm4_moe"),
                                                                        ("minimax_m2-seq2", "verify/minimax_m2"),
                                                                        ("kimi_k2", "verify/kimi_k2"), ("kimi_k2-seq2", "verify/kimi_k2"),
                                                                        ("deepseek_v4", "verify/deepseek_v4"), ("deepseek_v4-seq2", "verify/deepseek_v4"),
                                                                        ("deepseek_v4-release", "verify/deepseek_v4-release")]

    func ints(_ f: SafetensorsFile, _ name: String) -> [Int] {
        let t = f.tensor(named: name)!
        return (0..<Int(t.elementCount)).map { Int(f.data(t).loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
    }

    @Test(arguments: wholeModels)
    func logitsAndHiddenStates(_ model: String, _ path: String) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path(path))
        let reference = try SafetensorsFile(path: Fixtures.path("verify/\(model).model.safetensors"))
        let idsTensor = reference.tensor(named: "token_ids")!
        let ids = (0..<Int(idsTensor.elementCount)).map { Int(reference.data(idsTensor).loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        let out = try Transformer(checkpoint).forward(ids)
        #expect(out.hidden.count == reference.tensors.filter { $0.name.hasPrefix("hidden.") }.count)
        for (i, h) in out.hidden.enumerated() {
            let expected = floats(reference, "hidden.\(i)")
            let worst = maxAbsDifference(h, expected)
            #expect(worst < 1e-4, "\(model) hidden state \(i): max abs error \(worst)")
        }
        let logits = floats(reference, "logits")
        let worst = maxAbsDifference(out.logits, logits)
        #expect(worst < 1e-4, "\(model) logits: max abs error \(worst)")
        // Where the reference holds the routers' choices (gpt-oss's, GLM-4.5's): the same experts for every token.
        let routed = reference.tensors.filter { $0.name.hasPrefix("router.") && $0.name.hasSuffix(".experts") }
        for t in routed {
            let layer = Int(t.name.split(separator: ".")[1])!
            let routing = try #require(out.routing[layer], "\(model): layer \(layer) was not routed")
            #expect(routing.flatMap(\.experts) == ints(reference, t.name), "\(model) layer \(layer)")
            let dw = maxAbsDifference(routing.flatMap(\.weights), floats(reference, "router.\(layer).weights"))
            #expect(dw < 1e-5, "\(model) layer \(layer): routing weights differ by \(dw)")
        }
        #expect(!["gpt_oss", "glm4_moe", "minimax_m2", "kimi_k2"].contains { model.hasPrefix($0) } || routed.count == 2)
        #expect(!model.hasPrefix("deepseek_v4") || routed.count == 3)
    }

    /// DeepSeek-V3 with YaRN rope scaling (and its mscale on the softmax scale).
    @Test func yarn() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("models/deepseek_v3-f32-sharded"))
        let config = ModelConfig(Fixtures.json("verify/deepseek_v3-yarn.config.json").objectValue!)
        let reference = try SafetensorsFile(path: Fixtures.path("verify/deepseek_v3-yarn.model.safetensors"))
        let idsTensor = reference.tensor(named: "token_ids")!
        let ids = (0..<Int(idsTensor.elementCount)).map { Int(reference.data(idsTensor).loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
        let out = try Transformer(checkpoint, config: config).forward(ids)
        let logits = floats(reference, "logits")
        let worst = maxAbsDifference(out.logits, logits)
        #expect(worst < 1e-4, "yarn logits: max abs error \(worst)")
        let plain = try Transformer(checkpoint).forward(ids)
        #expect(plain.logits.count == logits.count && maxAbsDifference(plain.logits, logits) > 1e-3)  // YaRN does change the result
    }
}

extension TransformerAgainstTransformers {
    /// GLM-4.5's config.json as released (rope_theta and partial_rotary_factor at the top level, no rope_parameters),
    /// or without partial_rotary_factor (transformers' default for glm4_moe, 0.5), runs the model the fixture's
    /// transformers 5.23 config does, bit for bit; rotating whole heads does not.
    @Test func glmPartialRotaryFromEitherConfigForm() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("verify/glm4_moe"))
        let raw = try #require(checkpoint.config?.raw)
        #expect(raw["rope_parameters"]?.objectValue?["partial_rotary_factor"]?.doubleValue == 0.5)
        func config(_ topLevel: [(String, JSONValue)]) -> ModelConfig {
            var c = raw
            c.members.removeAll { $0.key == "rope_parameters" }
            for (k, v) in topLevel { c.append(k, v) }
            return ModelConfig(c)
        }
        let ids = Array(0..<12).map { ($0 * 37 + 5) % 128 }
        let reference = try Transformer(checkpoint).forward(ids).logits
        let legacy = try Transformer(checkpoint, config: config([("rope_theta", .double(10000)), ("partial_rotary_factor", .double(0.5))])).forward(ids)
        let defaulted = try Transformer(checkpoint, config: config([])).forward(ids)
        #expect(legacy.logits.map(\.bitPattern) == reference.map(\.bitPattern))
        #expect(defaulted.logits.map(\.bitPattern) == reference.map(\.bitPattern))
        let whole = try Transformer(checkpoint, config: config([("partial_rotary_factor", .double(1))])).forward(ids)
        #expect(maxAbsDifference(whole.logits, reference) > 1e-2)
    }
}

extension TransformerAgainstTransformers {
    /// MiniMax-M2's released config.json gives its partial rotary only as rotary_dim (64 of head_dim 128): that alone
    /// runs the model the fixture's rope_parameters (partial_rotary_factor 0.5) do, bit for bit; with neither, the
    /// whole head is rotated (transformers' default, 1.0), which moves the logits.
    @Test func minimaxPartialRotaryFromRotaryDim() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("verify/minimax_m2"))
        let raw = try #require(checkpoint.config?.raw)
        #expect(raw["rope_parameters"]?.objectValue?["partial_rotary_factor"]?.doubleValue == 0.5)
        func config(rotaryDim: Int?) -> ModelConfig {
            var c = raw
            c.members.removeAll { $0.key == "rope_parameters" || $0.key == "rotary_dim" }
            c.append("rope_theta", .double(5_000_000))
            if let rotaryDim { c.append("rotary_dim", .double(Double(rotaryDim))) }
            return ModelConfig(c)
        }
        let ids = Array(0..<12).map { ($0 * 37 + 5) % 128 }
        let reference = try Transformer(checkpoint).forward(ids).logits
        let legacy = try Transformer(checkpoint, config: config(rotaryDim: 8)).forward(ids)
        #expect(legacy.logits.map(\.bitPattern) == reference.map(\.bitPattern))
        let whole = try Transformer(checkpoint, config: config(rotaryDim: nil)).forward(ids)
        #expect(maxAbsDifference(whole.logits, reference) > 1e-2)
    }
}

/// The largest elementwise difference, or infinity when the lengths differ (a short output must fail).
func maxAbsDifference<A: Collection<Float>, B: Collection<Float>>(_ a: A, _ b: B) -> Float {
    guard a.count == b.count, !a.isEmpty else { return .infinity }
    return zip(a, b).map { abs($0 - $1) }.max()!
}

@Suite struct VerificationValues {
    /// The sample of experts is the most used ones, ties to the lower index.
    @Test func mostUsedExpertsBreakTiesByIndex() {
        let routing = [Routing(experts: [3, 1], weights: [0.5, 0.5]), Routing(experts: [1, 2], weights: [0.5, 0.5]),
                       Routing(experts: [2, 0], weights: [0.5, 0.5])]
        #expect(Verification.mostUsed(routing, experts: 4, n: 2) == [1, 2])
        #expect(Verification.mostUsed(routing, experts: 4, n: 3) == [0, 1, 2])
    }

    /// Reports show six significant digits.
    @Test func numbersShowSixSignificantDigits() {
        #expect(Verification.fmt(0.0032760912) == "0.00327609")
        #expect(Verification.fmt(1) == "1")
        #expect(Verification.fmt(123456789) == "123457000")
        #expect(Verification.fmt(.nan) == "inf")
        #expect(Verification.fmt(0) == "0")
    }
}

@Suite struct ForwardErrors {
    /// An architecture verify does not run is refused by id, with what it does run.
    @Test func anUnsupportedModelTypeIsNamed() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("models/qwen3_moe-bf16")
        for name in try FileManager.default.contentsOfDirectory(atPath: source) {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: dir + "/" + name)
        }
        let config = String(decoding: Fixtures.readBytes(dir + "/config.json"), as: UTF8.self)
        #expect(config.contains(#""model_type": "qwen3_moe""#))
        try FileManager.default.removeItem(atPath: dir + "/config.json")
        try Data(config.replacingOccurrences(of: #""model_type": "qwen3_moe""#, with: #""model_type": "grok""#).utf8)
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
        let checkpoint = try Checkpoint(path: dir)
        do throws(ForwardError) {
            _ = try Transformer(checkpoint)
            Issue.record("a grok config was accepted")
        } catch {
            #expect(error.kind == .unsupportedModel && error.id == "model_unsupported")
            #expect(error.description.contains("\"grok\"") && error.description.contains("qwen3_moe"), "\(error)")
        }
        #expect(Set(ForwardError.Kind.allCases.map(\.rawValue)).count == ForwardError.Kind.allCases.count)
    }
}

@Suite struct GptOssActivation {
    /// gate clamped above only, up on both sides; (up + 1) * gate * sigmoid(alpha * gate), pairs interleaved.
    @Test func clampsThenGates() {
        let y = Math.clampedSwiGLU([3, -5, -1, 0.5], alpha: 1.5, limit: 2)
        let expected: [Float] = [(-2 + 1) * 2 / (1 + expf(-3)), (0.5 + 1) * -1 / (1 + expf(1.5))]
        #expect(y.count == 2)
        #expect(maxAbsDifference(y, expected) < 1e-6, "\(y)")
    }
}

extension TransformerAgainstTransformers {
    /// DeepSeek-V4's config.json as the release writes it (compress_ratios 0/4/128 with compress_rate_csa / _hca,
    /// num_hash_layers, qk_rope_head_dim, a flat rope_scaling with compress_rope_theta) runs the model the fixture's
    /// transformers 5.23 config does, bit for bit (YaRN's attention factor left at 1, as the release has it); without
    /// rope_scaling the compressed layers' rotary differs; an HCA rate or hash layer count the weights do not fit is
    /// refused, naming the tensor.
    @Test func deepSeekV4ReleaseConfigForm() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("verify/deepseek_v4"))
        let raw = try #require(checkpoint.config?.raw)
        #expect(raw["layer_types"] != nil && raw["rope_parameters"]?.objectValue?["compress"] != nil)
        func config(hashLayers: Int = 1, hcaRate: Int = 8, yarn scaled: Bool = true) -> ModelConfig {
            var c = raw
            let modern = ["layer_types", "mlp_layer_types", "compress_rates", "rope_parameters", "partial_rotary_factor", "qk_rope_head_dim"]
            c.members.removeAll { modern.contains($0.key) }
            let yarn = JSONObject([("type", .string("yarn")), ("factor", .int(16)), ("original_max_position_embeddings", .int(8)),
                                   ("beta_fast", .int(32)), ("beta_slow", .int(1))])
            for (k, v): (String, JSONValue) in [("compress_ratios", .array([.int(0), .int(4), .int(128)])),
                                                ("compress_rate_csa", .int(4)), ("compress_rate_hca", .int(hcaRate)),
                                                ("num_hash_layers", .int(hashLayers)), ("qk_rope_head_dim", .int(8)),
                                                ("compress_rope_theta", .int(160000))] {
                c.append(k, v)
            }
            if scaled { c.append("rope_scaling", .object(yarn)) }
            return ModelConfig(c)
        }
        let ids = Array(0..<20).map { ($0 * 37 + 5) % 64 }
        let reference = try Transformer(checkpoint).forward(ids).logits
        let release = try Transformer(checkpoint, config: config()).forward(ids).logits
        #expect(release.map(\.bitPattern) == reference.map(\.bitPattern))
        #expect(maxAbsDifference(try Transformer(checkpoint, config: config(yarn: false)).forward(ids).logits, reference) > 1e-3)
        func refusal(_ c: ModelConfig) -> String {
            do { _ = try Transformer(checkpoint, config: c).forward(ids); return "" } catch { return error.message }
        }
        #expect(refusal(config(hcaRate: 4)).contains("layers.2.attn.compressor.ape is [8, 16]"))
        // A hash layer 1 needs a tid2eid the checkpoint does not have.
        #expect(refusal(config(hashLayers: 2)).contains("layers.1.ffn.gate.tid2eid"))
    }
}
