import FixtureSupport
import Foundation
import SafetensorsFormat
import StrictJSON
import Testing

@Suite struct VerifyCommand {
    /// The tiny DeepSeek-V3 converted to FP8 passes against its BF16 original; a corrupted
    /// scale block or two swapped experts fail, naming the layer.
    @Test func fp8ConversionPassesDamageFails() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = Fixtures.path("models/deepseek_v3-bf16")
        let fp8 = dir + "/fp8"
        let c = try CLI.run(["convert", original, fp8, "--to", "fp8", "-q"])
        #expect(c.status == 0, "\(c.stderr)")

        let whole = try CLI.run(["verify", original, fp8, "--json"])
        #expect(whole.status == 0, "\(whole.stdout)\(whole.stderr)")
        let model = try #require(try JSONParser.parse(whole.stdout).objectValue)
        #expect(model["mode"] == .string("model"))
        let logits = try #require(model["logits"]?.objectValue)
        #expect(logits["kl_divergence"]!.doubleValue! > 0 && logits["kl_divergence"]!.doubleValue! < 0.01)
        #expect(model["hidden_states"]?.arrayValue?.count == 4)
        #expect(model["moe_layers"]?.arrayValue?.count == 2)

        let good = try CLI.run(["verify", original, fp8, "--layers", "all", "--json"])
        #expect(good.status == 0, "\(good.stdout)\(good.stderr)")
        let report = try #require(try JSONParser.parse(good.stdout).objectValue)
        #expect(report["passed"] == .bool(true))
        let layers = try #require(report["layers"]?.arrayValue)
        #expect(layers.count == 2)
        for l in layers {
            let o = try #require(l.objectValue)
            #expect(o["relative_error"]!.doubleValue! > 0.001)  // FP8 does change the numbers
            #expect(o["relative_error"]!.doubleValue! < 0.08)  // layer mode: 4.6-4.7% here
            #expect(o["router_agreement"]!.doubleValue! == 1)  // the router stays in BF16
        }

        let shard = fp8 + "/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        var bytes = Fixtures.readBytes(shard)
        // One scale block of one expert 16 times too large.
        let scale = file.tensor(named: "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv")!
        let at = Int(file.fileRange(scale).lowerBound)
        let value = Float(bitPattern: UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24)
        let bad = (value * 16).bitPattern
        var corrupted = bytes
        for i in 0..<4 { corrupted[at + i] = UInt8((bad >> (8 * UInt32(i))) & 0xFF) }
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(corrupted)))
        let scaled = try CLI.run(["verify", original, fp8, "--layers", "all"])
        #expect(scaled.status == 1, "\(scaled.stdout)")
        #expect(scaled.stdout.contains("FAILED layer 1"), "\(scaled.stdout)")
        let scaledWhole = try CLI.run(["verify", original, fp8])
        #expect(scaledWhole.status == 1, "\(scaledWhole.stdout)")
        #expect(scaledWhole.stdout.contains("FAILED logits"), "\(scaledWhole.stdout)")

        // Experts 0 and 5 of layer 2 swapped (all three projections and their scales).
        for name in ["gate_proj.weight", "up_proj.weight", "down_proj.weight",
                     "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"] {
            let x = file.fileRange(file.tensor(named: "model.layers.2.mlp.experts.0." + name)!)
            let y = file.fileRange(file.tensor(named: "model.layers.2.mlp.experts.5." + name)!)
            let a = Array(bytes[Int(x.lowerBound)..<Int(x.upperBound)]), b = Array(bytes[Int(y.lowerBound)..<Int(y.upperBound)])
            bytes.replaceSubrange(Int(x.lowerBound)..<Int(x.upperBound), with: b)
            bytes.replaceSubrange(Int(y.lowerBound)..<Int(y.upperBound), with: a)
        }
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(bytes)))
        let swapped = try CLI.run(["verify", original, fp8, "--layers", "2"])
        #expect(swapped.status == 1, "\(swapped.stdout)")
        #expect(swapped.stdout.contains("FAILED layer 2"), "\(swapped.stdout)")
        let swappedWhole = try CLI.run(["verify", original, fp8])
        #expect(swappedWhole.status == 1, "\(swappedWhole.stdout)")
        // Sampling the two experts the router uses most in layer 2 still runs and reports.
        let sampled = try CLI.run(["verify", original, original, "--layers", "2", "--experts", "2", "--json"])
        #expect(sampled.status == 0, "\(sampled.stderr)")
        let norm = try #require(try JSONParser.parse(sampled.stdout).objectValue?["layers"]?.arrayValue?.first?.objectValue?["output_norm"]?.doubleValue)
        let full = try CLI.run(["verify", original, original, "--layers", "2", "--json"])
        let fullNorm = try #require(try JSONParser.parse(full.stdout).objectValue?["layers"]?.arrayValue?.first?.objectValue?["output_norm"]?.doubleValue)
        #expect(norm > 0 && norm != fullNorm)  // fewer experts, a different (partial) output
    }

    @Test func smokeTestAndBadArguments() throws {
        let alone = try CLI.run(["verify", Fixtures.path("models/qwen2_moe-bf16"), "--tokens", "8", "--layers", "all"])
        #expect(alone.status == 0, "\(alone.stderr)")
        #expect(alone.stdout.contains("passed"))
        let wholeAlone = try CLI.run(["verify", Fixtures.path("models/mixtral-bf16"), "--token-ids", "1,2,3,4"])
        #expect(wholeAlone.status == 0, "\(wholeAlone.stderr)")
        #expect(wholeAlone.stdout.contains("whole model, 4 tokens"))
        let outside = try CLI.run(["verify", Fixtures.path("models/mixtral-bf16"), "--token-ids", "1,99999"])
        #expect(outside.status == 1)
        #expect(outside.stderr.contains("outside the vocabulary"))
        // Options that would be ignored or wasted are refused before any work.
        let model = Fixtures.path("models/qwen3_moe-bf16")
        for (args, message) in [(["--experts", "2"], "--experts applies to layer mode"), (["--layers", "1,1"], "names layer 1 twice"),
                                (["--token-ids", ""], "one or more token ids"), (["--token-ids", "3,-1"], "one or more token ids"),
                                (["--layers", "1", "--token-ids", "1,2"], "--token-ids applies to whole-model mode")] {
            let r = try CLI.run(["verify", model] + args)
            #expect(r.status == 2 && r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        // --json records the limits it judged by, and whether layer mode ran a sample of the experts.
        let sampled = try CLI.run(["verify", model, model, "--layers", "1", "--experts", "2", "--json"])
        let o = try #require(try JSONParser.parse(sampled.stdout).objectValue)
        #expect(o["experts"] == .int(2))
        #expect(o["thresholds"]?.objectValue?["min_cosine"]?.doubleValue == 0.99)
        let dense = try CLI.run(["verify", Fixtures.path("models/deepseek_v3-bf16"), "--layers", "0"])
        #expect(dense.status == 1)
        #expect(dense.stderr.contains("layer 0 is not an MoE layer (MoE layers: 1,2)"), "\(dense.stderr)")
        let other = try CLI.run(["verify", Fixtures.path("models/deepseek_v3-bf16"), Fixtures.path("models/mixtral-bf16")])
        #expect(other.status == 1)
        #expect(other.stderr.contains("different models (model_type deepseek_v3 and mixtral)"), "\(other.stderr)")
    }

    /// --save-outputs through the command line: the logits for transformers' token ids match
    /// transformers' logits, and the router choices are there for every MoE layer.
    @Test func savedOutputsMatchTransformers() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let reference = try SafetensorsFile(path: Fixtures.path("verify/qwen2_moe-f32-sharded.model.safetensors"))
        let idsTensor = reference.tensor(named: "token_ids")!
        let ids = (0..<Int(idsTensor.elementCount)).map { reference.data(idsTensor).loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self) }
        let out = dir + "/outputs.safetensors"
        let r = try CLI.run(["verify", Fixtures.path("models/qwen2_moe-f32-sharded"), "--token-ids",
                             ids.map(String.init).joined(separator: ","), "--save-outputs", out])
        #expect(r.status == 0, "\(r.stderr)")
        let saved = try SafetensorsFile(path: out)
        #expect(saved.tensors.map(\.name).sorted() == ["hidden.embeddings", "hidden.layer.0", "hidden.layer.1", "hidden.layer.2", "logits",
                                                       "router.layer.0.experts", "router.layer.0.weights", "router.layer.1.experts",
                                                       "router.layer.1.weights", "router.layer.2.experts", "router.layer.2.weights", "token_ids"])
        func floats(_ f: SafetensorsFile, _ name: String) -> [Float] {
            let t = f.tensor(named: name)!
            return (0..<Int(t.elementCount)).map { f.data(t).loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
        }
        let worst = zip(floats(saved, "logits"), floats(reference, "logits")).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-4, "logits differ by \(worst)")
    }
}


/// Whole-model mode checks every routed expert, not only those its tokens reach.
@Suite struct VerifyCoverage {
    static let original = Fixtures.path("models/deepseek_v3-bf16")

    /// An FP8 conversion of the tiny DeepSeek-V3, and an expert of layer 2 that the default tokens never choose
    /// (read from the run's own saved router choices).
    static func setUp() throws -> (dir: String, fp8: String, unreached: Int) {
        let dir = Fixtures.temporaryDirectory()  // the caller removes it
        let fp8 = dir + "/fp8"
        let c = try CLI.run(["convert", original, fp8, "--to", "fp8", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let saved = dir + "/outputs.safetensors"
        let r = try CLI.run(["verify", original, "--save-outputs", saved])
        #expect(r.status == 0, "\(r.stderr)")
        let f = try SafetensorsFile(path: saved)
        let t = try #require(f.tensor(named: "router.layer.2.experts"))
        let chosen = Set((0..<Int(t.elementCount)).map { Int(f.data(t).loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) })
        let unreached = try #require((0..<16).first { !chosen.contains($0) }, "the tokens reach every expert: nothing to test")
        return (dir, fp8, unreached)
    }

    enum Damage: String, CaseIterable { case zeroed, scaleTimesFour, scaleNegated, swapped }

    @Test(arguments: Damage.allCases)
    func damageToAnExpertNoTokenReachesFails(_ damage: Damage) throws {
        let (dir, fp8, e) = try Self.setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shard = fp8 + "/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        var bytes = Fixtures.readBytes(shard)
        func range(_ name: String) throws -> Range<Int> {
            let r = file.fileRange(try #require(file.tensor(named: name), "\(name)"))
            return Int(r.lowerBound)..<Int(r.upperBound)
        }
        let p = "model.layers.2.mlp.experts.\(e)."
        switch damage {
        case .zeroed:
            for n in ["gate_proj.weight", "up_proj.weight", "down_proj.weight"] {
                let r = try range(p + n)
                bytes.replaceSubrange(r, with: [UInt8](repeating: 0, count: r.count))
            }
        case .scaleTimesFour, .scaleNegated:
            let r = try range(p + "down_proj.weight_scale_inv")
            let v = bytes[r].withUnsafeBytes { $0.loadUnaligned(as: Float.self) } * (damage == .scaleTimesFour ? 4 : -1)
            withUnsafeBytes(of: v) { for k in 0..<4 { bytes[r.lowerBound + k] = $0[k] } }
        case .swapped:
            let other = (e + 1) % 16
            for n in ["gate_proj.weight", "up_proj.weight", "down_proj.weight",
                      "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"] {
                let x = try range(p + n), y = try range("model.layers.2.mlp.experts.\(other)." + n)
                let a = Array(bytes[x]), b = Array(bytes[y])
                bytes.replaceSubrange(x, with: b)
                bytes.replaceSubrange(y, with: a)
            }
        }
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(bytes)))
        let r = try CLI.run(["verify", Self.original, fp8])
        #expect(r.status == 1, "\(damage) passed:\n\(r.stdout)")
        #expect(r.stdout.contains("FAILED layer 2 expert \(e):"), "\(r.stdout)")
        let j = try CLI.run(["verify", Self.original, fp8, "--json"])
        let o = try #require(try JSONParser.parse(j.stdout).objectValue)
        let layer2 = try #require(o["expert_coverage"]?.arrayValue?.compactMap(\.objectValue).first { $0["layer"] == .int(2) })
        #expect(layer2["experts"] == .int(16) && layer2["run_alone"] == .int(16))
        #expect((layer2["reached_by_tokens"]?.uint64Value ?? 16) < 16)
    }

    @Test func anIntactConversionPassesAndReportsCoverage() throws {
        let (dir, fp8, _) = try Self.setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try CLI.run(["verify", Self.original, fp8])
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.contains("layer 2 experts: ") && r.stdout.contains("of 16 reached by the tokens, 16 run alone on 8 hidden states"), "\(r.stdout)")
    }

    @Test(arguments: [["--max-rel-error", "nan"], ["--min-cosine", "2"], ["--min-cosine", "nan"], ["--max-kl=-1"],
                      ["--min-router-agreement", "inf"], ["--min-top1-agreement", "1.5"]])
    func impossibleLimitsAreRefused(_ args: [String]) throws {
        let r = try CLI.run(["verify", Self.original, Self.original] + args)
        #expect(r.status == 2, "\(args): \(r.status) \(r.stderr)")
        let flag = args[0].split(separator: "=")[0]
        #expect(r.stderr.contains(flag + " must be"), "\(r.stderr)")
    }

    /// --save-outputs never replaces the weights or config it verifies, however the path is spelled.
    @Test func outputsNeverLandOnTheInputs() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let copy = dir + "/ck"
        try FileManager.default.copyItem(atPath: Self.original, toPath: copy)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: copy)
        let before = Fixtures.readBytes(copy + "/model.safetensors")
        for target in [copy + "/model.safetensors", copy + "/config.json", dir + "/link/model.safetensors", copy + "/new.safetensors"] {
            let r = try CLI.run(["verify", copy, "--save-outputs", target])
            #expect(r.status == 1, "\(target): \(r.status)")
            #expect(r.stderr.contains("--save-outputs"), "\(r.stderr)")
        }
        #expect(Fixtures.readBytes(copy + "/model.safetensors") == before)
        #expect(!FileManager.default.fileExists(atPath: copy + "/new.safetensors"))
        // A file given as the checkpoint: its config.json beside it is an input too.
        let r = try CLI.run(["verify", copy + "/model.safetensors", "--save-outputs", copy + "/config.json"])
        #expect(r.status == 1)
    }
}

extension VerifyCoverage {
    /// A bad expert that tokens do reach, mixed with good ones, stays under a layer's limits; judged alone it fails,
    /// in layer mode too (the default for real-sized models).
    @Test func aReachedExpertWithGateAndUpSwappedFailsInBothModes() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let copy = dir + "/ck"
        try FileManager.default.copyItem(atPath: Self.original, toPath: copy)
        let shard = copy + "/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        var bytes = Fixtures.readBytes(shard)
        let g = file.fileRange(try #require(file.tensor(named: "model.layers.1.mlp.experts.3.gate_proj.weight")))
        let u = file.fileRange(try #require(file.tensor(named: "model.layers.1.mlp.experts.3.up_proj.weight")))
        let a = Array(bytes[Int(g.lowerBound)..<Int(g.upperBound)]), b = Array(bytes[Int(u.lowerBound)..<Int(u.upperBound)])
        bytes.replaceSubrange(Int(g.lowerBound)..<Int(g.upperBound), with: b)
        bytes.replaceSubrange(Int(u.lowerBound)..<Int(u.upperBound), with: a)
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(bytes)))
        for mode in [["--layers", "all"], []] {
            let r = try CLI.run(["verify", Self.original, copy] + mode)
            #expect(r.status == 1, "\(mode): passed\n\(r.stdout)")
            #expect(r.stdout.contains("FAILED layer 1 expert 3:"), "\(mode): \(r.stdout)")
        }
    }
}

/// gpt-oss through the command line: its FP8 conversion (attention projections; the 3-D expert stacks stay as
/// they are) passes and damage is caught; its MXFP4 experts run and equal their BF16 conversion.
@Suite struct VerifyGptOss {
    static let original = Fixtures.path("verify/gpt_oss")

    @Test func fp8ConversionPassesDamageFails() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fp8 = dir + "/fp8"
        let c = try CLI.run(["convert", Self.original, fp8, "--to", "fp8", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let shard = fp8 + "/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        #expect(file.tensor(named: "model.layers.1.self_attn.o_proj.weight")?.dtype == .F8_E4M3)
        #expect(file.tensor(named: "model.layers.1.mlp.experts.gate_up_proj")?.dtype == .F32)  // 3-D: not quantized

        let whole = try CLI.run(["verify", Self.original, fp8, "--json"])
        #expect(whole.status == 0, "\(whole.stdout)\(whole.stderr)")
        let model = try #require(try JSONParser.parse(whole.stdout).objectValue)
        let kl = try #require(model["logits"]?.objectValue?["kl_divergence"]?.doubleValue)
        #expect(kl > 0 && kl < 0.01)  // FP8 does change the attention
        #expect(model["hidden_states"]?.arrayValue?.count == 3)
        #expect(model["moe_layers"]?.arrayValue?.count == 2)
        let layers = try CLI.run(["verify", Self.original, fp8, "--layers", "all"])
        #expect(layers.status == 0, "\(layers.stdout)\(layers.stderr)")

        let intact = Fixtures.readBytes(shard)
        // One attention projection's scale 16 times too large.
        let scaled = try ShardSurgery.scaled(intact, file, "model.layers.1.self_attn.o_proj.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(scaled, shard: shard, original: Self.original, converted: fp8, modes: [[]], naming: ["FAILED logits"])

        // Experts 0 and 2 of layer 1 swapped: their slices of the four stacks.
        let swapped = try ShardSurgery.swappedInStacks(intact, file, prefix: "model.layers.1.mlp.experts.", experts: 4, 0, 2,
                                                       stacks: ["gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "1"], []],
                                     naming: ["FAILED layer 1 expert 0:", "FAILED layer 1 expert 2:"])
    }

    /// The MXFP4 fixture (quant_formats.py) runs whole and equals its `convert --to bf16` output exactly (the
    /// same values, read transposed); a scale block of one expert made 16 times larger is caught.
    @Test func mxfp4EqualsItsBF16ConversionDamageFails() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mxfp4 = Fixtures.path("quant/formats/gpt_oss-mxfp4")
        let bf16 = dir + "/bf16"
        let c = try CLI.run(["convert", mxfp4, bf16, "--to", "bf16", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let r = try CLI.run(["verify", mxfp4, bf16, "--json"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["logits"]?.objectValue?["max_abs_error"]?.doubleValue == 0)
        #expect(o["logits"]?.objectValue?["norm"]?.doubleValue ?? 0 > 0)
        let hidden = try #require(o["hidden_states"]?.arrayValue)
        #expect(hidden.count == 3 && hidden.allSatisfy { $0.objectValue?["relative_error"]?.doubleValue == 0 })
        let coverage = (o["expert_coverage"]?.arrayValue ?? []).compactMap(\.objectValue)
        #expect(coverage.count == 2 && coverage.allSatisfy { $0["run_alone"] == .int(4) && $0["worst_relative_error"]?.doubleValue == 0 })

        let copy = dir + "/mxfp4"
        try FileManager.default.copyItem(atPath: mxfp4, toPath: copy)
        let shard = copy + "/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        var bytes = Fixtures.readBytes(shard)
        // down_proj_scales [4, 64, 3] U8 (E8M0): expert 3, row 6, group 0, four exponents up. quant_formats.py
        // spreads rows over 2^-3...2^3 (row r times 2^((r % 7) - 3)): row 6 is one of the largest. (The same damage
        // to row 0, 64 times smaller, moves the expert's output by 3.8%: under the default 15% limit.)
        let s = try ShardSurgery.range(file, "model.layers.0.mlp.experts.down_proj_scales")
        bytes[s.lowerBound + (3 * 64 + 6) * 3] += 4
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(bytes)))
        for mode in [["--layers", "all"], []] {
            let bad = try CLI.run(["verify", bf16, copy] + mode)
            #expect(bad.status == 1, "\(mode): passed\n\(bad.stdout)")
            #expect(bad.stdout.contains("FAILED layer 0 expert 3:"), "\(mode): \(bad.stdout)")
        }
    }
}

/// GLM-4.5 through the command line (Fixtures/verify/glm4_moe: a dense first layer, two MoE layers, and an MTP
/// layer 3 that the forward pass leaves aside): its FP8 conversion passes, a corrupted scale block and two swapped
/// experts fail, damage to the MTP layer changes nothing.
@Suite struct VerifyGlm4Moe {
    static let original = Fixtures.path("verify/glm4_moe")

    @Test func fp8ConversionPassesDamageFails() throws {
        let converted = try FP8Conversion(Self.original, quantized: ["model.layers.0.mlp.gate_proj.weight", "model.layers.1.self_attn.q_proj.weight",
                                                                     "model.layers.2.mlp.experts.5.down_proj.weight", "model.layers.2.mlp.shared_experts.up_proj.weight"],
                                          kept: ["model.layers.1.mlp.gate.weight"], hiddenStates: 4, moeLayers: [1, 2])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)
        // The MTP layer (3) is in the file but not run: not an MoE layer verify can be asked for.
        let mtp = try CLI.run(["verify", Self.original, fp8, "--layers", "3"])
        #expect(mtp.status == 1 && mtp.stderr.contains("layer 3 is not an MoE layer (MoE layers: 1,2)"), "\(mtp.stderr)")

        let intact = Fixtures.readBytes(shard)
        // The MTP layer's weights are not the model's forward pass: damaging them changes no output.
        let mtpDamaged = try ShardSurgery.scaled(intact, file, "model.layers.3.mlp.experts.0.down_proj.weight_scale_inv", by: 16)
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(mtpDamaged)))
        let same = try CLI.run(["verify", Self.original, fp8, "--json"])
        #expect(same.stdout == converted.wholeReport, "\(same.stdout)")

        // One scale block of a routed expert 16 times too large.
        let damaged = try ShardSurgery.scaled(intact, file, "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "all"], []],
                                     naming: ["FAILED layer 1 expert 3:"])

        // Experts 0 and 5 of layer 2 swapped (all three projections and their scales).
        let swapped = try ShardSurgery.swapped(intact, file, prefix: "model.layers.2.mlp.experts.", 0, 5, suffixes: [
            "gate_proj.weight", "up_proj.weight", "down_proj.weight",
            "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "2"], []],
                                     naming: ["FAILED layer 2 expert 0:", "FAILED layer 2 expert 5:"])
    }

    /// config.json asks for q/k norms (use_qk_norm) and q/k/v biases (attention_bias): a checkpoint without one of them
    /// is refused, naming the tensor, rather than run without it.
    @Test(arguments: ["model.layers.1.self_attn.q_norm.weight", "model.layers.0.self_attn.k_proj.bias"])
    func aMissingNormOrBiasIsRefused(_ name: String) throws {
        let dir = try Severity.rewritten("verify/glm4_moe") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["verify", dir])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr.contains(name), "\(r.stderr)")
    }
}

/// MiniMax-M2 through the command line (Fixtures/verify/minimax_m2: two MoE layers of 8 w1/w2/w3 experts under
/// block_sparse_moe, the sigmoid router with its block's e_score_correction_bias, q/k norms over the whole
/// projection, partial rotary): its FP8 conversion passes, a corrupted scale block and two swapped experts fail.
@Suite struct VerifyMiniMaxM2 {
    static let original = Fixtures.path("verify/minimax_m2")

    @Test func fp8ConversionPassesDamageFails() throws {
        let converted = try FP8Conversion(Self.original, quantized: ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.block_sparse_moe.experts.6.w2.weight"],
                                          kept: ["model.layers.1.block_sparse_moe.gate.weight", "model.layers.1.block_sparse_moe.e_score_correction_bias",
                                                "model.layers.1.self_attn.q_norm.weight"], hiddenStates: 3, moeLayers: [0, 1])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)

        let intact = Fixtures.readBytes(shard)
        // One scale block of a routed expert 16 times too large.
        let damaged = try ShardSurgery.scaled(intact, file, "model.layers.0.block_sparse_moe.experts.4.w2.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "all"], []],
                                     naming: ["FAILED layer 0 expert 4:"])

        // Experts 1 and 6 of layer 1 swapped (all three projections and their scales).
        let swapped = try ShardSurgery.swapped(intact, file, prefix: "model.layers.1.block_sparse_moe.experts.", 1, 6, suffixes: [
            "w1.weight", "w2.weight", "w3.weight", "w1.weight_scale_inv", "w2.weight_scale_inv", "w3.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "1"], []],
                                     naming: ["FAILED layer 1 expert 1:", "FAILED layer 1 expert 6:"])
    }

    /// MiniMax-M2 always normalises q and k: a checkpoint without one of the norms is refused, naming the tensor.
    @Test func aMissingNormIsRefused() throws {
        let name = "model.layers.1.self_attn.k_norm.weight"
        let dir = try Severity.rewritten("verify/minimax_m2") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["verify", dir])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr.contains(name), "\(r.stderr)")
    }
}

/// Llama 4 through the command line (Fixtures/verify/llama4: Llama4ForConditionalGeneration, the text model under
/// language_model. beside a vision tower; dense layers 0 and 2, MoE layers 1 and 3 of 4 fused experts [E, in, out]
/// with a top-1 sigmoid router and a shared expert): its FP8 conversion quantizes the text model's 2-D projections
/// (the shared expert's too) and leaves the expert stacks, routers and the vision tower as they are, and passes; a
/// corrupted scale block and two swapped experts fail; a missing shared expert is refused by name.
@Suite struct VerifyLlama4 {
    static let original = Fixtures.path("verify/llama4")

    @Test func fp8ConversionPassesDamageFails() throws {
        let text = "language_model.model.layers."
        let converted = try FP8Conversion(Self.original, quantized: [text + "0.self_attn.q_proj.weight", text + "2.feed_forward.down_proj.weight",
                                                                     text + "3.feed_forward.shared_expert.gate_proj.weight"],
                                          kept: [text + "1.feed_forward.experts.gate_up_proj", text + "1.feed_forward.experts.down_proj",  // 3-D
                                                 text + "1.feed_forward.router.weight", "vision_model.model.layers.0.self_attn.q_proj.weight",
                                                 "vision_model.vision_adapter.mlp.fc1.weight", "multi_modal_projector.linear_1.weight"],
                                          hiddenStates: 5, moeLayers: [1, 3])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)
        // What transformers' FP8 loader must not convert: the kept experts modules among the Linears left alone.
        let written = try JSONParser.parse(String(decoding: Fixtures.readBytes(fp8 + "/config.json"), as: UTF8.self))
        let config = try #require(written.objectValue?["quantization_config"]?.objectValue)
        let kept = Set(config["modules_to_not_convert"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        for module in [text + "1.feed_forward.experts", text + "3.feed_forward.experts", text + "1.feed_forward.router",
                       "vision_model.model.layers.0.self_attn.q_proj", "language_model.lm_head"] {
            #expect(kept.contains(module), "\(module): \(kept.sorted())")
        }
        #expect(!kept.contains(text + "1.feed_forward.shared_expert.down_proj"))

        let intact = Fixtures.readBytes(shard)
        // The shared expert's scale block 16 times too large: the MoE block's output and the logits move.
        let damaged = try ShardSurgery.scaled(intact, file, text + "3.feed_forward.shared_expert.down_proj.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "all"]],
                                     naming: ["FAILED layer 3: relative error"])
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [[]],
                                     naming: ["FAILED logits"])

        // Experts 0 and 2 of layer 1 swapped: their slices of both stacks.
        let swapped = try ShardSurgery.swappedInStacks(intact, file, prefix: text + "1.feed_forward.experts.", experts: 4, 0, 2,
                                                       stacks: ["gate_up_proj", "down_proj"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "1"], []],
                                     naming: ["FAILED layer 1 expert 0:", "FAILED layer 1 expert 2:"])
    }

    /// Llama 4 with one Linear per expert (verify/llama4-per-expert, as the FP8 releases store them): the same model as
    /// the fused stacks (verify passes with no difference at all), and its FP8 conversion quantizes the experts too,
    /// passes, and fails with two experts swapped.
    @Test func perExpertLayoutConvertsAndVerifies() throws {
        let split = Fixtures.path("verify/llama4-per-expert")
        let same = try CLI.run(["verify", Self.original, split, "--json"])
        #expect(same.status == 0, "\(same.stdout)\(same.stderr)")
        let o = try #require(try JSONParser.parse(same.stdout).objectValue)
        #expect(o["logits"]?.objectValue?["max_abs_error"]?.doubleValue == 0)
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fp8 = dir + "/fp8"
        let c = try CLI.run(["convert", split, fp8, "--to", "fp8", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let shard = fp8 + "/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        #expect(file.tensor(named: "language_model.model.layers.1.feed_forward.experts.2.down_proj.weight")?.dtype == .F8_E4M3)
        let r = try CLI.run(["verify", split, fp8])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let swapped = try ShardSurgery.swapped(Fixtures.readBytes(shard), file, prefix: "language_model.model.layers.3.feed_forward.experts.", 0, 1,
                                               suffixes: ["gate_proj.weight", "up_proj.weight", "down_proj.weight", "gate_proj.weight_scale_inv",
                                                          "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: split, converted: fp8, modes: [["--layers", "3"], []],
                                     naming: ["FAILED layer 3 expert 0:", "FAILED layer 3 expert 1:"])
    }

    /// Every Llama 4 MoE block has its shared expert: a checkpoint without one of its projections is refused, naming it;
    /// so is one without the router of a layer config.json makes MoE (rather than run as a dense layer).
    @Test func aMissingSharedExpertOrRouterIsRefused() throws {
        let name = "language_model.model.layers.3.feed_forward.shared_expert.up_proj.weight"
        let dir = try Severity.rewritten("verify/llama4") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        for mode in [[], ["--layers", "3"]] {
            let r = try CLI.run(["verify", dir] + mode)
            #expect(r.status == 1, "\(mode): \(r.stdout)")
            #expect(r.stderr.contains(name), "\(mode): \(r.stderr)")
        }
        let router = "language_model.model.layers.1.feed_forward.router.weight"
        let noRouter = try Severity.rewritten("verify/llama4") { $0 != router }
        defer { Fixtures.removeTemporary(noRouter) }
        let r = try CLI.run(["verify", noRouter])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr.contains(router), "\(r.stderr)")
    }
}

/// DeepSeek-V4 through the command line (Fixtures/verify/deepseek_v4, in the release's names: a sliding, a CSA and an
/// HCA layer, hyper-connections, a hash-routed first layer then top-2 of 8 experts, shared experts): its FP8 conversion
/// passes (the attention's wq_a, wq_b, wkv, wo_a, wo_b and the experts in FP8; the compressors, the indexer's
/// weights_proj, the routers and tid2eid as they were), a corrupted scale block and two swapped experts fail.
@Suite struct VerifyDeepSeekV4 {
    static let original = Fixtures.path("verify/deepseek_v4")

    @Test func fp8ConversionPassesDamageFails() throws {
        let converted = try FP8Conversion(Self.original, quantized: ["layers.0.attn.wq_a.weight", "layers.1.attn.wo_a.weight", "layers.2.attn.wkv.weight",
                                                                     "layers.1.attn.indexer.wq_b.weight", "layers.1.ffn.experts.6.w2.weight",
                                                                     "layers.2.ffn.shared_experts.w3.weight"],
                                          kept: ["layers.1.attn.compressor.wkv.weight", "layers.1.attn.indexer.compressor.wgate.weight",
                                                "layers.1.attn.indexer.weights_proj.weight", "layers.1.ffn.gate.weight", "layers.1.ffn.gate.bias",
                                                "layers.0.hc_attn_fn", "embed.weight", "head.weight"], hiddenStates: 4, moeLayers: [0, 1, 2])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)
        #expect(file.tensor(named: "layers.0.ffn.gate.tid2eid")?.dtype == .I64)

        let intact = Fixtures.readBytes(shard)
        // One scale block of a routed expert of the hash layer 16 times too large.
        let damaged = try ShardSurgery.scaled(intact, file, "layers.0.ffn.experts.4.w2.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "all"], []],
                                     naming: ["FAILED layer 0 expert 4:"])

        // Experts 1 and 6 of layer 2 swapped (all three projections and their scales).
        let swapped = try ShardSurgery.swapped(intact, file, prefix: "layers.2.ffn.experts.", 1, 6, suffixes: [
            "w1.weight", "w2.weight", "w3.weight", "w1.weight_scale_inv", "w2.weight_scale_inv", "w3.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "2"], []],
                                     naming: ["FAILED layer 2 expert 1:", "FAILED layer 2 expert 6:"])
    }

    /// The release's storage (verify/deepseek_v4-release: FP8 with UE8M0 `.scale` blocks, FP4 experts as I8 with
    /// E8M0 `.scale` per 32) is read as FP8 blocks and MXFP4 (inspect lists both), converts to BF16 (every encoded
    /// weight dequantized, the scales dropped) and runs identically (max abs error 0); one expert row's exponent
    /// four steps up (x16) fails.
    @Test func releaseStorageEqualsItsBF16ConversionDamageFails() throws {
        let release = Fixtures.path("verify/deepseek_v4-release")
        let inspect = try CLI.run(["inspect", release, "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let layouts = try #require(try JSONParser.parse(inspect.stdout).objectValue?["quantization"]?.objectValue?["layouts"]?.arrayValue)
        let counts = layouts.compactMap { $0.objectValue }.map { ($0["encoding"]?.stringValue ?? "", $0["weights"]) }
        // 5 attention projections x 3 layers, the indexer's wq_b, 3 shared experts x 3 layers; 8 x 3 experts x 3 layers
        // and the MTP layer's 8 x 3.
        #expect(counts.contains { $0 == ("fp8-block", .int(25)) } && counts.contains { $0 == ("mxfp4", .int(96)) }, "\(layouts)")

        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bf16 = dir + "/bf16"
        let c = try CLI.run(["convert", release, bf16, "--to", "bf16", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let converted = try SafetensorsFile(path: bf16 + "/model.safetensors")
        #expect(converted.tensor(named: "layers.1.ffn.experts.3.w1.weight")?.shape == [8, 16])
        #expect(converted.tensors.allSatisfy { !$0.name.hasSuffix(".scale") })
        let r = try CLI.run(["verify", release, bf16, "--json"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["logits"]?.objectValue?["max_abs_error"]?.doubleValue == 0)

        let copy = dir + "/release"
        try FileManager.default.copyItem(atPath: release, toPath: copy)
        let shard = copy + "/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        var bytes = Fixtures.readBytes(shard)
        // layers.2.ffn.experts.5.w2.scale: F8_E8M0 [16, 1], one exponent a row; row 3's four up.
        let s = try ShardSurgery.range(file, "layers.2.ffn.experts.5.w2.scale")
        bytes[s.lowerBound + 3] += 4
        try ShardSurgery.expectFails(bytes, shard: shard, original: bf16, converted: copy, modes: [["--layers", "2"], []],
                                     naming: ["FAILED layer 2 expert 5:"])
    }

    /// The names transformers' save_pretrained writes (the release's under `model.`, with `model.embed_tokens.weight`,
    /// `model.hc_head.hc_fn` ..., `model.norm.weight`, and the release's `head.weight`) run the same model bit for bit,
    /// and are complete for inspect.
    @Test func transformersSavedNamesRunIdentically() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: Self.original + "/config.json", toPath: dir + "/config.json")
        let f = try SafetensorsFile(path: Self.original + "/model.safetensors")
        let saved = ["embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight", "hc_head_fn": "model.hc_head.hc_fn",
                     "hc_head_base": "model.hc_head.hc_base", "hc_head_scale": "model.hc_head.hc_scale"]
        func rename(_ name: String) -> String { saved[name] ?? (name.hasPrefix("layers.") ? "model." + name : name) }
        let specs = f.tensors.map { TensorSpec(name: rename($0.name), dtype: $0.dtype, shape: $0.shape) }
        #expect(specs.contains { $0.name == "model.layers.1.attn.indexer.wq_b.weight" } && specs.contains { $0.name == "head.weight" })
        let byNewName = Dictionary(uniqueKeysWithValues: f.tensors.map { (rename($0.name), $0) })
        _ = try SafetensorsWriter.write(to: dir + "/model.safetensors", tensors: specs, metadata: [(key: "format", value: "pt")]) { info, sink in
            try sink.write(f.data(byNewName[info.name]!))
        }
        let r = try CLI.run(["verify", Self.original, dir, "--json"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["logits"]?.objectValue?["max_abs_error"]?.doubleValue == 0)
        #expect(o["moe_layers"]?.arrayValue?.count == 3)
        // inspect's completeness knows these names too.
        let inspect = try CLI.run(["inspect", dir, "--json", "--strict"])
        #expect(inspect.status == 0, "\(inspect.stdout)\(inspect.stderr)")
        let c = try #require(try JSONParser.parse(inspect.stdout).objectValue?["completeness"]?.objectValue)
        #expect(c["expected_tensors"] == .int(155) && c["missing"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
    }

    /// A tensor the forward pass needs (the hash table, the indexer's queries, a compressor's position bias, the hyper
    /// head) missing: refused, naming it.
    @Test(arguments: ["layers.0.ffn.gate.tid2eid", "layers.1.attn.indexer.wq_b.weight", "layers.2.attn.compressor.ape", "hc_head_fn"])
    func aMissingTensorIsRefused(_ name: String) throws {
        let dir = try Severity.rewritten("verify/deepseek_v4") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["verify", dir])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr.contains(name), "\(r.stderr)")
    }
}

/// Kimi-K2 through the command line (Fixtures/verify/kimi_k2: config.json as Moonshot publishes it, model_type
/// kimi_k2 on DeepSeek-V3's architecture; a dense first layer, two MoE layers of 384 experts in one group, top-8,
/// routed scaling 2.827): verify runs it as DeepSeek-V3, its FP8 conversion passes, damage to one of 384 experts fails.
@Suite struct VerifyKimiK2 {
    static let original = Fixtures.path("verify/kimi_k2")

    @Test func fp8ConversionPassesDamageFails() throws {
        let converted = try FP8Conversion(Self.original, quantized: ["model.layers.2.mlp.experts.383.down_proj.weight"],
                                          kept: ["model.layers.2.mlp.gate.weight"], hiddenStates: 4, moeLayers: [1, 2])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)
        let config = try #require(try JSONParser.parse(Fixtures.readBytes(fp8 + "/config.json")).objectValue)
        #expect(config["model_type"] == .string("kimi_k2"))  // kept as the release names it

        let intact = Fixtures.readBytes(shard)
        let damaged = try ShardSurgery.scaled(intact, file, "model.layers.1.mlp.experts.300.up_proj.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "1"]],
                                     naming: ["FAILED layer 1 expert 300:"])
        let swapped = try ShardSurgery.swapped(intact, file, prefix: "model.layers.2.mlp.experts.", 5, 371, suffixes: [
            "gate_proj.weight", "up_proj.weight", "down_proj.weight",
            "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "2"]],
                                     naming: ["FAILED layer 2 expert 5:", "FAILED layer 2 expert 371:"])
    }
}

/// DeepSeek-V3.2 through the command line (Fixtures/verify/deepseek_v32: a dense layer then two MoE layers of 8
/// experts in 4 groups, MLA with the DSA indexer keeping 5 keys per query): its FP8 conversion (the indexer's wq_b and
/// wk in FP8, as the release ships them) passes, a corrupted scale block and two swapped experts fail, a checkpoint
/// without an indexer tensor is refused by name.
@Suite struct VerifyDeepseekV32 {
    static let original = Fixtures.path("verify/deepseek_v32")

    @Test func fp8ConversionPassesDamageFails() throws {
        let converted = try FP8Conversion(Self.original, quantized: ["model.layers.0.mlp.gate_proj.weight", "model.layers.1.self_attn.q_b_proj.weight",
                                                                     "model.layers.2.mlp.experts.5.down_proj.weight", "model.layers.1.self_attn.indexer.wq_b.weight",
                                                                     "model.layers.1.self_attn.indexer.wk.weight"],
                                          kept: ["model.layers.1.mlp.gate.weight", "model.layers.1.self_attn.indexer.weights_proj.weight",
                                                "model.layers.1.self_attn.indexer.k_norm.bias"], hiddenStates: 4, moeLayers: [1, 2])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)
        // The indexers' choices are compared too: FP8 flips a few queries' keys (of those that drop keys at all).
        let report = try #require(try JSONParser.parse(converted.wholeReport).objectValue)
        let list = try #require(report["key_selections"]?.arrayValue)
        let selections = list.compactMap(\.objectValue)
        #expect(selections.map { $0["layer"] } == [.int(0), .int(1), .int(2)])
        #expect(selections.allSatisfy { $0["queries"] == .int(32) && ($0["queries_dropping_keys"]?.uint64Value ?? 0) > 0 })
        let same = selections.compactMap { $0["same_keys"]?.uint64Value }
        #expect(same.count == 3 && same.contains { $0 < 32 } && same.allSatisfy { $0 >= 16 }, "\(selections)")
        let itself = try CLI.run(["verify", Self.original, Self.original])
        #expect(itself.stdout.contains("layer 2 sparse attention: same keys for 32 of 32 queries; 27 attend to only some of the keys before them"),
                "\(itself.stdout)")

        let intact = Fixtures.readBytes(shard)
        // One scale block of a routed expert 16 times too large.
        let damaged = try ShardSurgery.scaled(intact, file, "model.layers.2.mlp.experts.6.down_proj.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "all"], []],
                                     naming: ["FAILED layer 2 expert 6:"])

        // Experts 2 and 7 of layer 1 swapped (all three projections and their scales).
        let swapped = try ShardSurgery.swapped(intact, file, prefix: "model.layers.1.mlp.experts.", 2, 7, suffixes: [
            "gate_proj.weight", "up_proj.weight", "down_proj.weight",
            "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "1"], []],
                                     naming: ["FAILED layer 1 expert 2:", "FAILED layer 1 expert 7:"])
    }

    /// Each layer's indexer needs all of its tensors (the k_norm's bias too): a checkpoint without one is refused,
    /// naming it, rather than run with dense attention.
    @Test(arguments: ["model.layers.2.self_attn.indexer.k_norm.bias", "model.layers.0.self_attn.indexer.weights_proj.weight"])
    func aMissingIndexerTensorIsRefused(_ name: String) throws {
        let dir = try Severity.rewritten("verify/deepseek_v32") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["verify", dir])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr.contains(name), "\(r.stderr)")
    }
}

/// GLM-5 through the command line (Fixtures/verify/glm_moe_dsa: DeepSeek-V3.2's structure with the indexer's rotary
/// interleaved and layer 1 sharing layer 0's selection, so without an indexer of its own): its FP8 conversion passes,
/// a corrupted scale block and two swapped experts fail, a full layer without its indexer is refused by name.
@Suite struct VerifyGlmMoeDsa {
    static let original = Fixtures.path("verify/glm_moe_dsa")

    @Test func fp8ConversionPassesDamageFails() throws {
        let converted = try FP8Conversion(Self.original, quantized: ["model.layers.2.self_attn.indexer.wq_b.weight", "model.layers.1.self_attn.kv_b_proj.weight",
                                                                     "model.layers.1.mlp.experts.3.up_proj.weight"],
                                          kept: [], hiddenStates: nil, moeLayers: [1, 2])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)
        #expect(file.tensor(named: "model.layers.1.self_attn.indexer.wq_b.weight") == nil)  // a shared layer

        let intact = Fixtures.readBytes(shard)
        let damaged = try ShardSurgery.scaled(intact, file, "model.layers.1.mlp.experts.5.gate_proj.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "all"], []],
                                     naming: ["FAILED layer 1 expert 5:"])
        let swapped = try ShardSurgery.swapped(intact, file, prefix: "model.layers.2.mlp.experts.", 0, 4, suffixes: [
            "gate_proj.weight", "up_proj.weight", "down_proj.weight",
            "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: Self.original, converted: fp8, modes: [["--layers", "2"], []],
                                     naming: ["FAILED layer 2 expert 0:", "FAILED layer 2 expert 4:"])
    }

    /// Layer 2 is a "full" layer: without its indexer's wk it is refused, naming the tensor.
    @Test func aFullLayerWithoutItsIndexerIsRefused() throws {
        let name = "model.layers.2.self_attn.indexer.wk.weight"
        let dir = try Severity.rewritten("verify/glm_moe_dsa") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["verify", dir])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr.contains(name), "\(r.stderr)")
    }
}

/// The first half of the architecture suites: `original` converted to FP8 in a temporary directory, which must store
/// each of `quantized` as E4M3 and keep each of `kept` as it was (F32: the fixtures are float32); then verified against
/// the original with verify's default limits, whole (FP8 does change the model: KL above 0 and below 0.01; the
/// `hiddenStates` states, when given, and the MoE layers `moeLayers` reported) and layer by layer (the same layers).
struct FP8Conversion {
    let dir: String
    let fp8: String
    let shard: String
    let file: SafetensorsFile
    /// verify's whole-model `--json` report, as printed.
    let wholeReport: String

    init(_ original: String, quantized: [String],
                                          kept: [String], hiddenStates: Int?, moeLayers: [Int]) throws {
        dir = Fixtures.temporaryDirectory()
        fp8 = dir + "/fp8"
        let c = try CLI.run(["convert", original, fp8, "--to", "fp8", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        shard = fp8 + "/model.safetensors"
        file = try SafetensorsFile(path: shard)
        for name in quantized { #expect(file.tensor(named: name)?.dtype == .F8_E4M3, "\(name)") }
        for name in kept { #expect(file.tensor(named: name)?.dtype == .F32, "\(name) is kept as it is") }
        let whole = try CLI.run(["verify", original, fp8, "--json"])
        #expect(whole.status == 0, "\(whole.stdout)\(whole.stderr)")
        wholeReport = whole.stdout
        let model = try #require(try JSONParser.parse(whole.stdout).objectValue)
        let kl = try #require(model["logits"]?.objectValue?["kl_divergence"]?.doubleValue)
        #expect(kl > 0 && kl < 0.01, "KL \(kl)")
        if let hiddenStates { #expect(model["hidden_states"]?.arrayValue?.count == hiddenStates) }
        let layers = moeLayers.map { JSONValue.int($0) }
        #expect(model["moe_layers"]?.arrayValue?.compactMap { $0.objectValue?["layer"] } == layers)
        let byLayer = try CLI.run(["verify", original, fp8, "--layers", "all", "--json"])
        #expect(byLayer.status == 0, "\(byLayer.stdout)\(byLayer.stderr)")
        let perLayer = try #require(try JSONParser.parse(byLayer.stdout).objectValue)
        #expect(perLayer["layers"]?.arrayValue?.compactMap { $0.objectValue?["layer"] } == layers)
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

/// Byte surgery on a converted shard, for the architecture suites: a tensor's bytes in the file, a float32 scale
/// multiplied, two experts' tensors exchanged, and the verdict that must follow.
enum ShardSurgery {
    static func range(_ file: SafetensorsFile, _ name: String) throws -> Range<Int> {
        let r = file.fileRange(try #require(file.tensor(named: name), "\(name)"))
        return Int(r.lowerBound)..<Int(r.upperBound)
    }

    /// `bytes` with the float32 at the start of tensor `name` multiplied by `factor`.
    static func scaled(_ bytes: [UInt8], _ file: SafetensorsFile, _ name: String, by factor: Float) throws -> [UInt8] {
        var out = bytes
        let at = try range(file, name).lowerBound
        let v = out[at..<(at + 4)].withUnsafeBytes { $0.loadUnaligned(as: Float.self) } * factor
        withUnsafeBytes(of: v) { for k in 0..<4 { out[at + k] = $0[k] } }
        return out
    }

    /// `bytes` with tensors `prefix + a + suffix` and `prefix + b + suffix` exchanged, for every suffix.
    static func swapped(_ bytes: [UInt8], _ file: SafetensorsFile, prefix: String, _ a: Int, _ b: Int, suffixes: [String]) throws -> [UInt8] {
        var out = bytes
        for suffix in suffixes {
            let x = try range(file, "\(prefix)\(a).\(suffix)"), y = try range(file, "\(prefix)\(b).\(suffix)")
            let first = Array(out[x]), second = Array(out[y])
            out.replaceSubrange(x, with: second)
            out.replaceSubrange(y, with: first)
        }
        return out
    }

    /// `bytes` with experts `a` and `b` exchanged in each stack `prefix + stack` of `experts` equal slices.
    static func swappedInStacks(_ bytes: [UInt8], _ file: SafetensorsFile, prefix: String, experts: Int, _ a: Int, _ b: Int,
                                stacks: [String]) throws -> [UInt8] {
        var out = bytes
        for stack in stacks {
            let r = try range(file, prefix + stack)
            let per = r.count / experts
            let x = (r.lowerBound + a * per)..<(r.lowerBound + (a + 1) * per), y = (r.lowerBound + b * per)..<(r.lowerBound + (b + 1) * per)
            let first = Array(out[x])
            out.replaceSubrange(x, with: out[y])
            out.replaceSubrange(y, with: first)
        }
        return out
    }

    /// Writes `bytes` as `shard`, then verify of `converted` against `original` must fail in each mode, naming `failures`.
    static func expectFails(_ bytes: [UInt8], shard: String, original: String, converted: String, modes: [[String]], naming failures: [String]) throws {
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(bytes)))
        for mode in modes {
            let r = try CLI.run(["verify", original, converted] + mode)
            #expect(r.status == 1, "\(mode): passed\n\(r.stdout)")
            #expect(failures.allSatisfy { r.stdout.contains($0) }, "\(mode): \(r.stdout)")
        }
    }
}

/// Qwen3-Next and Qwen3.5-MoE through the command line (Fixtures/verify/qwen3_next: DeltaNet, DeltaNet (a dense
/// layer), gated attention, per-expert experts and an MTP block; Fixtures/verify/qwen3_5_moe: the same kinds of layer
/// under model.language_model., every layer MoE, a vision tower): the FP8 conversion leaves the DeltaNet's conv1d,
/// A_log, dt_bias, beta/decay projections, norms, routers and shared-expert gates as they are and verifies, whole
/// and layer by layer; a corrupted scale block and two swapped experts fail; a missing tensor is refused by name.
@Suite struct VerifyQwen3Next {
    /// fixture, its decoder's prefix, an MoE layer, a linear-attention layer and its beta/decay projections.
    static let models = [("qwen3_next", "model.", 2, 0, ["in_proj_ba"]),
                         ("qwen3_5_moe", "model.language_model.", 1, 1, ["in_proj_b", "in_proj_a"])]

    @Test(arguments: models)
    func fp8ConversionPassesDamageFails(_ fixture: String, _ prefix: String, _ moe: Int, _ linear: Int, _ gates: [String]) throws {
        let original = Fixtures.path("verify/" + fixture)
        let l = "\(prefix)layers.\(linear).linear_attn.", m = "\(prefix)layers.\(moe).mlp."
        let kept = ["conv1d.weight", "A_log", "dt_bias", "norm.weight"].map { l + $0 } + gates.map { l + $0 + ".weight" }
            + [m + "gate.weight", m + "shared_expert_gate.weight", "\(prefix)layers.2.self_attn.q_norm.weight"]
        let converted = try FP8Conversion(original, quantized: [l + "out_proj.weight", "\(prefix)layers.2.self_attn.q_proj.weight",
                                                                m + "experts.3.down_proj.weight", m + "shared_expert.up_proj.weight"],
                                          kept: kept, hiddenStates: 4, moeLayers: fixture == "qwen3_next" ? [0, 2] : [0, 1, 2])
        defer { converted.remove() }
        let (fp8, shard, file) = (converted.fp8, converted.shard, converted.file)

        let intact = Fixtures.readBytes(shard)
        // One scale block of a routed expert 16 times too large.
        let damaged = try ShardSurgery.scaled(intact, file, m + "experts.4.down_proj.weight_scale_inv", by: 16)
        try ShardSurgery.expectFails(damaged, shard: shard, original: original, converted: fp8, modes: [["--layers", "all"], []],
                                     naming: ["FAILED layer \(moe) expert 4:"])

        // Experts 1 and 5 of the MoE layer swapped (all three projections and their scales).
        let swapped = try ShardSurgery.swapped(intact, file, prefix: m + "experts.", 1, 5, suffixes: [
            "gate_proj.weight", "up_proj.weight", "down_proj.weight",
            "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"])
        try ShardSurgery.expectFails(swapped, shard: shard, original: original, converted: fp8, modes: [["--layers", "\(moe)"], []],
                                     naming: ["FAILED layer \(moe) expert 1:", "FAILED layer \(moe) expert 5:"])
    }

    /// A checkpoint without one of the DeltaNet's tensors, a q/k norm of the gated attention or the shared expert's
    /// gate (both always applied) is refused, naming it.
    @Test(arguments: models)
    func aMissingTensorIsRefused(_ fixture: String, _ prefix: String, _ moe: Int, _ linear: Int, _ gates: [String]) throws {
        for name in ["\(prefix)layers.\(linear).linear_attn.A_log", "\(prefix)layers.\(linear).linear_attn.\(gates[0]).weight",
                     "\(prefix)layers.2.self_attn.q_norm.weight", "\(prefix)layers.\(moe).mlp.shared_expert_gate.weight"] {
            let dir = try Severity.rewritten("verify/" + fixture) { $0 != name }
            defer { Fixtures.removeTemporary(dir) }
            let r = try CLI.run(["verify", dir])
            #expect(r.status == 1, "\(r.stdout)")
            #expect(r.stderr.contains(name), "\(r.stderr)")
        }
    }

    /// The MTP block (mtp.*) is not part of the forward pass: zeroing it changes no output bit.
    @Test func theMTPBlockIsNotRun() throws {
        let source = Fixtures.path("verify/qwen3_next")
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: source, toPath: dir + "/ck")
        let shard = dir + "/ck/model.safetensors"
        let file = try SafetensorsFile(path: shard)
        var bytes = Fixtures.readBytes(shard)
        let mtp = file.tensors.filter { $0.name.hasPrefix("mtp.") }
        #expect(mtp.count > 10)
        for t in mtp { bytes.replaceSubrange(try ShardSurgery.range(file, t.name), with: [UInt8](repeating: 0, count: Int(t.byteCount))) }
        #expect(FileManager.default.createFile(atPath: shard, contents: Data(bytes)))
        let r = try CLI.run(["verify", source, dir + "/ck", "--json"])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let model = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(model["logits"]?.objectValue?["max_abs_error"]?.doubleValue == 0)
    }
}

/// Qwen2-MoE's shared expert is always gated by sigmoid(shared_expert_gate): a checkpoint whose gate is missing is
/// refused by name rather than run with the shared expert ungated (which would be another model).
@Suite struct VerifyQwen2MoeSharedGate {
    @Test func aMissingSharedExpertGateIsRefused() throws {
        let name = "model.layers.1.mlp.shared_expert_gate.weight"
        let dir = try Severity.rewritten("models/qwen2_moe-f32-sharded") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        for mode in [[], ["--layers", "1"]] {
            let r = try CLI.run(["verify", dir] + mode)
            #expect(r.status == 1, "\(mode): \(r.stdout)")
            #expect(r.stderr.contains(name), "\(mode): \(r.stderr)")
        }
    }
}
