import FixtureSupport
import Foundation
import SafetensorsFormat
import StrictJSON
import Testing

/// The library-written quantized fixtures (Fixtures/quant_formats.py) through the commands: convert --to bf16
/// writes the producing library's own dequantization bit for bit, verify finds the quantized checkpoint and its
/// conversion identical, inspect counts the model's parameters.
@Suite struct QuantizedFormats {
    static let fixtures = ["ct-w4a16", "ct-w4a16-asym", "ct-nvfp4a16", "ct-mxfp4a16", "ct-fp8", "ct-fp8-f32", "gpt_oss-mxfp4", "modelopt-nvfp4"]

    @Test(arguments: fixtures)
    func convertToBF16WritesTheLibrarysValues(_ name: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let source = Fixtures.path("quant/formats/" + name)
        let c = try CLI.run(["convert", source, dir + "/bf16", "--to", "bf16", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let out = try SafetensorsFile(path: dir + "/bf16/model.safetensors")
        let expected = try SafetensorsFile(path: Fixtures.path("quant/formats/\(name)-expected.safetensors"))
        var compared = 0
        for t in expected.tensors where t.dtype == .BF16 {
            let written = try #require(out.tensor(named: t.name), "\(name): \(t.name) not written")
            #expect(written.dtype == .BF16 && written.shape == t.shape, "\(t.name)")
            #expect(Array(out.data(written)) == Array(expected.data(t)), "\(name): \(t.name)")
            compared += 1
        }
        #expect(compared >= 4)
        // Nothing of the quantized format is left: no packed codes, scales or zero points, no quantization_config.
        #expect(!out.tensors.contains { $0.name.hasSuffix("_packed") || $0.name.hasSuffix("_blocks") || $0.name.hasSuffix("weight_scale")
            || $0.name.hasSuffix("_zero_point") || $0.name.hasSuffix("_scales") || $0.name.hasSuffix("input_scale") })
        let config = String(decoding: Fixtures.readBytes(dir + "/bf16/config.json"), as: UTF8.self)
        #expect(!config.contains("quantization_config"))
        // ModelOpt's own record of the quantization stays behind (vLLM would read it and expect NVFP4 weights).
        #expect(!FileManager.default.fileExists(atPath: dir + "/bf16/hf_quant_config.json"))
        #expect(FileManager.default.fileExists(atPath: source + "/hf_quant_config.json") == (name == "modelopt-nvfp4"))
    }

    /// What convert --to int4|nvfp4|mxfp4 writes, verify runs: against its own BF16 conversion it is the same
    /// model, and against the BF16 source it differs (4 bits lose something), as verify reports.
    @Test(arguments: ["int4", "nvfp4", "mxfp4"])
    func verifyRunsWhatConvertQuantizes(_ target: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let source = Fixtures.path("quant/targets/source")
        #expect(try CLI.run(["convert", source, dir + "/q", "--to", target, "-q"]).status == 0)
        #expect(try CLI.run(["convert", dir + "/q", dir + "/bf16", "--to", "bf16", "-q"]).status == 0)
        let same = try CLI.run(["verify", dir + "/q", dir + "/bf16", "--json"])
        #expect(same.status == 0, "\(same.stdout)\(same.stderr)")
        let logits = try #require(try JSONParser.parse(same.stdout).objectValue?["logits"]?.objectValue)
        #expect(logits["max_abs_error"]?.doubleValue == 0, "\(target): \(same.stdout.prefix(600))")
        let lossy = try CLI.run(["verify", source, dir + "/q", "--json"])
        let error = try #require(try JSONParser.parse(lossy.stdout).objectValue?["logits"]?.objectValue?["max_abs_error"]?.doubleValue)
        #expect(error > 0, "\(target)")
    }

    /// A quantized checkpoint and its BF16 conversion are the same model: no difference at all.
    @Test(arguments: fixtures.filter { ($0.hasPrefix("ct-") && $0 != "ct-fp8-f32") || $0 == "modelopt-nvfp4" })
    func verifyFindsTheConversionIdentical(_ name: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let source = Fixtures.path("quant/formats/" + name)
        #expect(try CLI.run(["convert", source, dir + "/bf16", "--to", "bf16", "-q"]).status == 0)
        let v = try CLI.run(["verify", source, dir + "/bf16", "--json"])
        #expect(v.status == 0, "\(v.stdout)\(v.stderr)")
        let logits = try #require(try JSONParser.parse(v.stdout).objectValue?["logits"]?.objectValue)
        #expect(logits["max_abs_error"]?.doubleValue == 0, "\(name): \(v.stdout.prefix(600))")
    }

    static let encodings = ["ct-w4a16": ("int4-pack", 32), "ct-w4a16-asym": ("int4-pack-asym", 32), "ct-nvfp4a16": ("nvfp4", 32),
                            "ct-mxfp4a16": ("mxfp4", 32), "ct-fp8": ("fp8-block", 32), "ct-fp8-f32": ("fp8-block", 32),
                            "gpt_oss-mxfp4": ("mxfp4-gpt-oss", 4), "modelopt-nvfp4": ("nvfp4-modelopt", 16)]

    /// Complete and consistent even under --strict (packed weights and their bookkeeping are what config.json
    /// implies), every encoded weight recognised, and the parameters those of the model.
    @Test(arguments: fixtures)
    func inspectCountsTheModelsParameters(_ name: String) throws {
        let i = try CLI.run(["inspect", "--json", "--strict", Fixtures.path("quant/formats/" + name)])
        #expect(i.status == 0, "\(i.stderr)")
        let o = try #require(try JSONParser.parse(i.stdout).objectValue)
        let (encoding, count) = try #require(QuantizedFormats.encodings[name])
        let found = o["quantization"]?.objectValue?["encodings"]?.objectValue
        #expect(found?.members.count == 1 && found?[encoding]?.uint64Value == UInt64(count), "\(name): \(String(describing: found))")
        let params = try #require(Fixtures.json("quant/formats/\(name)-params.json").objectValue?["parameters"]?.uint64Value)
        // Headers alone count int4 rows padded to whole words (2 layers x 4 experts x 64 rows x 4 padding values).
        let padding: UInt64 = name.hasPrefix("ct-w4a16") ? 2 * 4 * 64 * 4 : 0
        #expect(o["parameters"]?.uint64Value == params + padding, "\(name)")
        #expect((o["quantization_overhead"]?.objectValue?["elements"]?.uint64Value ?? 0) > 0)
    }

    /// How each fixture's weights are grouped and scaled, as Fixtures/quant_formats.py's schemes set them (2 layers:
    /// gate/up of 4 experts and q/k/v/o in groups of 32, down_proj per output row, for the INT4 fixtures; every
    /// Linear for NVFP4 and MXFP4; FP8 per tensor on attention, per row on gate/up, 32x32 blocks on down), and what
    /// stays unquantized (embedding, head, routers).
    @Test func inspectSaysHowWeightsAreGroupedAndWhatIsLeft() throws {
        let expected: [String: [String]] = [
            "ct-w4a16": ["24 int4-pack: groups of 32 columns, BF16 scales: q x scale", "8 int4-pack: one scale per output row, BF16 scales: q x scale"],
            "ct-nvfp4a16": ["32 nvfp4: groups of 16 columns, F8_E4M3 scales: e2m1 x scale / global scale"],
            "ct-mxfp4a16": ["32 mxfp4: groups of 32 columns, E8M0 scales: e2m1 x 2^(e - 127)"],
            "ct-fp8": ["8 fp8-block: 32x32 blocks, BF16 scales: code x scale", "16 fp8-block: one scale per output row, BF16 scales: code x scale",
                       "8 fp8-block: one scale per tensor, BF16 scales: code x scale"],
        ]
        for (name, lines) in expected {
            let i = try CLI.run(["inspect", "--json", Fixtures.path("quant/formats/" + name)])
            let q = try #require(try JSONParser.parse(i.stdout).objectValue?["quantization"]?.objectValue)
            let layouts = (q["layouts"]?.arrayValue ?? []).compactMap { v -> String? in
                guard let o = v.objectValue, let w = o["weights"]?.uint64Value, let e = o["encoding"]?.stringValue,
                      let l = o["layout"]?.stringValue else { return nil }
                return "\(w) \(e): \(l)"
            }
            #expect(Set(layouts) == Set(lines), "\(name): \(layouts)")
            let left = (q["unquantized_weights"]?.arrayValue ?? []).compactMap(\.stringValue)
            #expect(left == ["lm_head.weight", "model.embed_tokens.weight", "model.layers.0.mlp.gate.weight", "model.layers.1.mlp.gate.weight"], "\(name)")
        }
    }
}
