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

        let good = try CLI.run(["verify", original, fp8, "--json"])
        #expect(good.status == 0, "\(good.stdout)\(good.stderr)")
        let report = try #require(try JSONParser.parse(good.stdout).objectValue)
        #expect(report["passed"] == .bool(true))
        let layers = try #require(report["layers"]?.arrayValue)
        #expect(layers.count == 2)
        for l in layers {
            let o = try #require(l.objectValue)
            #expect(o["relative_error"]!.doubleValue! > 0.001)  // FP8 does change the numbers
            #expect(o["relative_error"]!.doubleValue! < 0.08)
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
        FileManager.default.createFile(atPath: shard, contents: Data(corrupted))
        let scaled = try CLI.run(["verify", original, fp8])
        #expect(scaled.status == 1, "\(scaled.stdout)")
        #expect(scaled.stdout.contains("FAILED layer 1"), "\(scaled.stdout)")

        // Experts 0 and 5 of layer 2 swapped (all three projections and their scales).
        for name in ["gate_proj.weight", "up_proj.weight", "down_proj.weight",
                     "gate_proj.weight_scale_inv", "up_proj.weight_scale_inv", "down_proj.weight_scale_inv"] {
            let x = file.fileRange(file.tensor(named: "model.layers.2.mlp.experts.0." + name)!)
            let y = file.fileRange(file.tensor(named: "model.layers.2.mlp.experts.5." + name)!)
            let a = Array(bytes[Int(x.lowerBound)..<Int(x.upperBound)]), b = Array(bytes[Int(y.lowerBound)..<Int(y.upperBound)])
            bytes.replaceSubrange(Int(x.lowerBound)..<Int(x.upperBound), with: b)
            bytes.replaceSubrange(Int(y.lowerBound)..<Int(y.upperBound), with: a)
        }
        FileManager.default.createFile(atPath: shard, contents: Data(bytes))
        let swapped = try CLI.run(["verify", original, fp8, "--layers", "2"])
        #expect(swapped.status == 1, "\(swapped.stdout)")
        #expect(swapped.stdout.contains("FAILED layer 2"), "\(swapped.stdout)")
    }

    @Test func smokeTestAndBadArguments() throws {
        let alone = try CLI.run(["verify", Fixtures.path("models/qwen2_moe-bf16"), "--tokens", "8"])
        #expect(alone.status == 0, "\(alone.stderr)")
        #expect(alone.stdout.contains("passed"))
        let dense = try CLI.run(["verify", Fixtures.path("models/deepseek_v3-bf16"), "--layers", "0"])
        #expect(dense.status == 1)
        #expect(dense.stderr.contains("layer 0 is not an MoE layer (MoE layers: 1,2)"), "\(dense.stderr)")
        let other = try CLI.run(["verify", Fixtures.path("models/deepseek_v3-bf16"), Fixtures.path("models/mixtral-bf16")])
        #expect(other.status == 1)
        #expect(other.stderr.contains("differ in shape") || other.stderr.contains("not an MoE layer"), "\(other.stderr)")
    }
}
