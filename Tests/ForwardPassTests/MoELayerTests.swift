import Checkpoint
import FixtureSupport
import Foundation
import SafetensorsFormat
import StrictJSON
import Support
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
    /// experts, top-3, sigmoid router with a random e_score_correction_bias on the block), Llama 4 (4 fused experts
    /// stored [E, in, out], top-1 sigmoid router whose weight scales the expert's input, a shared expert), and
    /// DeepSeek-V3.2 (8 experts in 4 groups keeping 2, top-3, a shared expert) and GLM-5 (8 experts in one group,
    /// top-3, a shared expert), Qwen3-Next (8 experts, top-3, a shared expert behind its sigmoid gate, a dense layer
    /// between) and Qwen3.5-MoE (6 experts, top-2, its decoder under model.language_model.).
    static let checkpoints = models.map { ($0, "models/" + $0) } + [("deepseek_v3-32e", "verify/deepseek_v3-32e"), ("gpt_oss", "verify/gpt_oss"),
                                                                     ("glm4_moe", "verify/glm4_moe"), ("minimax_m2", "verify/minimax_m2"),
                                                                     ("llama4", "verify/llama4"),
                                                                     ("deepseek_v32", "verify/deepseek_v32"), ("glm_moe_dsa", "verify/glm_moe_dsa"),
                                                                     ("qwen3_next", "verify/qwen3_next"), ("qwen3_5_moe", "verify/qwen3_5_moe")]

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

    /// Llama 4's experts one Linear each (verify/llama4-per-expert, as its FP8 releases store them, split from the
    /// fused [E, in, out] stacks by moe_reference.py) run the model bit for bit as the fused stacks do.
    @Test func llama4PerExpertEqualsFused() throws {
        let fused = try Checkpoint(path: Fixtures.path("verify/llama4"))
        let split = try Checkpoint(path: Fixtures.path("verify/llama4-per-expert"))
        let ids = Array(0..<16).map { ($0 * 7919 + 13) % 128 }
        let a = try Transformer(fused).forward(ids), b = try Transformer(split).forward(ids)
        #expect(a.logits.map(\.bitPattern) == b.logits.map(\.bitPattern))
        #expect(a.routing == b.routing && a.routing.count == 2)
        let x: [Float] = (0..<(8 * 16)).map { i in Float((i * 37) % 101) / 50 - 1 }
        let la = try MoELayer(WeightReader(fused), config: fused.config!, layer: 3)
        let lb = try MoELayer(WeightReader(split), config: split.config!, layer: 3)
        for e in 0..<4 {
            let ya: [Float] = try la.runExpert(e, x, tokens: 8), yb: [Float] = try lb.runExpert(e, x, tokens: 8)
            #expect(ya.map { $0.bitPattern } == yb.map { $0.bitPattern }, "expert \(e)")
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

    /// Every model of the MoE-block tests on its 16 tokens; gpt-oss, GLM-4.5, MiniMax-M2, Llama 4, DeepSeek-V3.2 and
    /// GLM-5 on a second sequence of 24 too (Llama 4's text model inside Llama4ForConditionalGeneration: 16 and 24
    /// tokens both span several attention chunks of 6, and its NoPE layer's query temperature changes from position 3
    /// on); Qwen3-Next and Qwen3.5-MoE on one of 72 (two chunks of their DeltaNet's chunked recurrence); Kimi-K2 (its
    /// config.json's own model_type on DeepSeek-V3's architecture, 384 experts in one group) on both; DeepSeek-V4
    /// (hyper-connections: its hidden states are the 4 streams of each layer) on both, every layer routed (hash, then
    /// top-k), and stored as the release stores it (FP8 with UE8M0 `.scale` blocks, FP4 I8 experts with E8M0 `.scale`
    /// groups, an MTP layer), as transformers dequantizes it.
    static let wholeModels = MoELayerAgainstTransformers.checkpoints + [("gpt_oss-seq2", "verify/gpt_oss"), ("glm4_moe-seq2", "verify/glm4_moe"),
                                                                        ("minimax_m2-seq2", "verify/minimax_m2"), ("llama4-seq2", "verify/llama4"),
                                                                        ("deepseek_v32-seq2", "verify/deepseek_v32"),
                                                                        ("glm_moe_dsa-seq2", "verify/glm_moe_dsa"),
                                                                        ("qwen3_next-seq2", "verify/qwen3_next"), ("qwen3_5_moe-seq2", "verify/qwen3_5_moe"),
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
        #expect(!["gpt_oss", "glm4_moe", "minimax_m2", "llama4", "kimi_k2", "qwen3_next"].contains(where: model.hasPrefix) || routed.count == 2)
        #expect(!model.hasPrefix("qwen3_5_moe") || routed.count == 3)
        #expect(!model.hasPrefix("deepseek_v4") || routed.count == 3)
        // DSA (DeepSeek-V3.2, GLM-5): each layer's indexer let each query attend to the same keys, and some queries
        // did drop keys (more earlier tokens than index_topk), so the selection is what is being tested. GLM-5's
        // layer 1 ("shared") attends to the keys layer 0 chose.
        let indexed = reference.tensors.filter { $0.name.hasPrefix("indexer.") }
        #expect(!(model.hasPrefix("deepseek_v32") || model.hasPrefix("glm_moe_dsa")) || indexed.count == 3)
        #expect(!model.hasPrefix("glm_moe_dsa") || (out.keys[1] != nil && out.keys[1] == out.keys[0]))
        for t in indexed {
            let layer = Int(t.name.split(separator: ".")[1])!
            let keys = try #require(out.keys[layer], "\(model): layer \(layer) selected no keys")
            let n = ids.count
            let expected = ints(reference, t.name)
            let chosen = (0..<n).map { i in (0..<n).filter { expected[i * n + $0] == 1 } }
            #expect(keys == chosen, "\(model) layer \(layer): the indexer chose other keys")
            #expect(chosen.enumerated().contains { $0.element.count < $0.offset + 1 }, "\(model) layer \(layer) dropped no key")
        }
    }

    /// DeepSeek-V3.2 with the sparse selection left out (index_topk at least the sequence: every query attends to
    /// all its keys) is another model: the logits move far beyond the tolerance, so the test above could not pass
    /// with the indexer skipped.
    @Test func sparseSelectionMatters() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("verify/deepseek_v32"))
        let reference = try SafetensorsFile(path: Fixtures.path("verify/deepseek_v32.model.safetensors"))
        var raw = try #require(checkpoint.config?.raw)
        #expect(raw["index_topk"]?.doubleValue == 5)
        raw.members.removeAll { $0.key == "index_topk" }
        raw.append("index_topk", .double(2048))
        let ids = ints(reference, "token_ids")
        let dense = try Transformer(checkpoint, config: ModelConfig(raw)).forward(ids)
        #expect(dense.keys[1] == (0..<ids.count).map { Array(0...$0) })
        #expect(maxAbsDifference(dense.logits, floats(reference, "logits")) > 0.1)
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

extension TransformerAgainstTransformers {
    /// Llama 4's released config.json spells things its own way: `"attn_temperature_tuning": 4`, the llama3 scaling
    /// under `rope_scaling` with `rope_theta` beside it, and (in older exports) no `no_rope_layers` or `layer_types`
    /// lists. Each runs the fixture bit for bit as transformers' own form does; turning the temperature tuning off, or
    /// leaving out the rope scaling, moves the logits.
    @Test func llama4ReleasedConfigForms() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("verify/llama4"))
        let raw = try #require(checkpoint.config?.raw)
        let text = try #require(raw["text_config"]?.objectValue)
        let rope = try #require(text["rope_parameters"]?.objectValue)
        func config(_ edit: (inout JSONObject) -> Void) -> ModelConfig {
            var t = text
            edit(&t)
            var c = raw
            c.members.removeAll { $0.key == "text_config" }
            c.append("text_config", .object(t))
            return ModelConfig(c)
        }
        func set(_ t: inout JSONObject, _ key: String, _ value: JSONValue?) {
            t.members.removeAll { $0.key == key }
            if let value { t.append(key, value) }
        }
        let ids = Array(0..<20).map { ($0 * 37 + 5) % 128 }
        let reference = try Transformer(checkpoint).forward(ids).logits
        let released = config { t in
            set(&t, "attn_temperature_tuning", .int(4))
            var scaling = rope
            scaling.members.removeAll { $0.key == "rope_theta" }
            set(&t, "rope_parameters", nil)
            set(&t, "rope_scaling", .object(scaling))
            set(&t, "rope_theta", .double(10000))
            set(&t, "no_rope_layers", nil)  // every 4th layer NoPE (no_rope_layer_interval 4): layer 3
            set(&t, "layer_types", nil)  // the rotary layers chunked
        }
        #expect(try Transformer(checkpoint, config: released).forward(ids).logits.map(\.bitPattern) == reference.map(\.bitPattern))
        let untuned = config { set(&$0, "attn_temperature_tuning", .bool(false)) }
        #expect(maxAbsDifference(try Transformer(checkpoint, config: untuned).forward(ids).logits, reference) > 1e-2)
        let unscaled = config { t in
            var plain = rope
            plain.members.removeAll { $0.key == "rope_type" }
            plain.append("rope_type", .string("default"))
            set(&t, "rope_parameters", .object(plain))
        }
        #expect(maxAbsDifference(try Transformer(checkpoint, config: unscaled).forward(ids).logits, reference) > 1e-2)
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
    /// Qwen3-Next's released config.json gives no layer_types but full_attention_interval, and its rotary settings at
    /// the top level (partial_rotary_factor, rope_theta): those alone run the model the fixture's layer_types and
    /// rope_parameters do, bit for bit; another interval (a different layer linear) or the whole head rotated (no
    /// partial_rotary_factor anywhere gives transformers' default for qwen3_next, 0.25, the fixture's) moves the logits.
    @Test func qwen3NextReleasedConfigForm() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("verify/qwen3_next"))
        let raw = try #require(checkpoint.config?.raw)
        #expect(raw["layer_types"]?.arrayValue?.compactMap(\.stringValue) == ["linear_attention", "linear_attention", "full_attention"])
        func config(interval: Int, rotary: Double?) -> ModelConfig {
            var c = raw
            c.members.removeAll { $0.key == "rope_parameters" || $0.key == "layer_types" }
            c.append("rope_theta", .double(10000))
            c.append("full_attention_interval", .double(Double(interval)))
            if let rotary { c.append("partial_rotary_factor", .double(rotary)) }
            return ModelConfig(c)
        }
        let ids = Array(0..<12).map { ($0 * 37 + 5) % 32 }
        let reference = try Transformer(checkpoint).forward(ids).logits
        for rotary in [0.25, nil] {
            let released = try Transformer(checkpoint, config: config(interval: 3, rotary: rotary)).forward(ids)
            #expect(released.logits.map(\.bitPattern) == reference.map(\.bitPattern))
        }
        let whole = try Transformer(checkpoint, config: config(interval: 3, rotary: 1)).forward(ids)
        #expect(maxAbsDifference(whole.logits, reference) > 1e-2)
        // Interval 2: layer 1 would be full attention, whose tensors the checkpoint does not have.
        #expect(throws: ForwardError.self) { try Transformer(checkpoint, config: config(interval: 2, rotary: 0.25)).forward(ids) }
    }

    /// The chunked delta rule equals the token-by-token recurrence (the same mathematics in another order, here in Double) on
    /// seeded random heads of 150 tokens (three chunks, the last partial), to float32 rounding; and the state carried between chunks
    /// matters: starting each chunk from zero changes the later outputs.
    @Test func chunkedDeltaRuleIsTheRecurrence() {
        var rng = SplitMix64(seed: 150)
        let (t, dk, dv) = (150, 8, 6)
        func uniform() -> Float { Float(rng.unit()) }
        func normal() -> Float { 2 * uniform() - 1 }
        var q = (0..<(t * dk)).map { _ in normal() }, k = (0..<(t * dk)).map { _ in normal() }
        GatedDeltaNet.l2Normalize(&q, width: dk, scale: 1 / Float(dk).squareRoot())
        GatedDeltaNet.l2Normalize(&k, width: dk, scale: 1)
        let v = (0..<(t * dv)).map { _ in normal() }
        let g = (0..<t).map { _ in -0.05 * uniform() }
        let beta = (0..<t).map { _ in uniform() }
        // S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - exp(g_t) S_{t-1}^T k_t))^T, o_t = S_t^T q_t, in Double.
        var state = [Double](repeating: 0, count: dk * dv), expected = [Float](repeating: 0, count: t * dv)
        for i in 0..<t {
            let decay = exp(Double(g[i]))
            for j in state.indices { state[j] *= decay }
            for e in 0..<dv {
                var memory = 0.0
                for d in 0..<dk { memory += state[d * dv + e] * Double(k[i * dk + d]) }
                let delta = (Double(v[i * dv + e]) - memory) * Double(beta[i])
                for d in 0..<dk { state[d * dv + e] += Double(k[i * dk + d]) * delta }
            }
            for e in 0..<dv {
                var o = 0.0
                for d in 0..<dk { o += state[d * dv + e] * Double(q[i * dk + d]) }
                expected[i * dv + e] = Float(o)
            }
        }
        let chunked = GatedDeltaNet.chunkedDeltaRule(q: q, k: k, v: v, g: g, beta: beta, tokens: t, dk: dk, dv: dv)
        #expect(maxAbsDifference(chunked, expected) < 1e-4)
        let firstChunk = GatedDeltaNet.chunkSize * dv
        #expect(Array(chunked[..<firstChunk]) == GatedDeltaNet.chunkedDeltaRule(q: Array(q[..<(64 * dk)]), k: Array(k[..<(64 * dk)]),
                                                                               v: Array(v[..<firstChunk]), g: Array(g[..<64]),
                                                                               beta: Array(beta[..<64]), tokens: 64, dk: dk, dv: dv))
        let restarted = GatedDeltaNet.chunkedDeltaRule(q: Array(q[(64 * dk)...]), k: Array(k[(64 * dk)...]), v: Array(v[firstChunk...]),
                                                       g: Array(g[64...]), beta: Array(beta[64...]), tokens: t - 64, dk: dk, dv: dv)
        #expect(maxAbsDifference(restarted, chunked[firstChunk...]) > 1e-2)
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

/// DeepSeek-V4's release storage decoded bit for bit as transformers dequantizes it: every FP4 routed expert (two
/// E2M1 codes an I8 byte, E8M0 scale per 32) and FP8 shared expert (E4M3 codes, UE8M0 block scale) of
/// verify/deepseek_v4-release equals transformers' float32 weight (verify/deepseek_v4-release.dequantized.safetensors,
/// Fixtures/moe_reference.py deepseek_v4).
@Suite struct DeepSeekV4ReleaseDecoding {
    @Test func everyQuantizedExpertEqualsTransformers() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("verify/deepseek_v4-release"))
        let reader = try WeightReader(checkpoint)
        let reference = try SafetensorsFile(path: Fixtures.path("verify/deepseek_v4-release.dequantized.safetensors"))
        #expect(reference.tensors.count == 3 * (8 * 3 + 3))
        var nonzero = 0
        for t in reference.tensors {
            let ours = try reader.matrix(t.name)
            #expect([UInt64(ours.rows), UInt64(ours.cols)] == t.shape, "\(t.name)")
            let data = reference.data(t)
            let theirs = (0..<Int(t.elementCount)).map { data.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self) }
            #expect(ours.values.map(\.bitPattern) == theirs, "\(t.name)")
            nonzero += theirs.filter { $0 & 0x7FFF_FFFF != 0 }.count
        }
        #expect(nonzero > 1000)
    }
}
