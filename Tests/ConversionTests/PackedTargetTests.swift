import Checkpoint
import Conversion
import FixtureSupport
import Foundation
import NumberFormats
import SafetensorsFormat
import StrictJSON
import Testing

/// `convert --to int4|nvfp4|mxfp4` against compressed-tensors quantizing the same BF16 checkpoint
/// (Fixtures/quant/targets, made by Fixtures/quant_formats.py).
@Suite struct PackedTargets {
    static let source = Fixtures.path("quant/targets/source")

    func convert(_ target: ConversionTarget, groupSize: Int = 128, input: String = source) throws -> String {
        let checkpoint = try Checkpoint(path: input)
        var options = ConversionOptions(target: target)
        options.groupSize = groupSize
        let plan = try ConversionPlan(checkpoint: checkpoint, options: options)
        let out = Fixtures.temporaryDirectory() + "/out"
        _ = try CheckpointConversion.run(checkpoint: checkpoint, output: out, plan: plan, options: options)
        return out
    }

    /// Every tensor compressed-tensors wrote is in our output with the same dtype, shape and bytes; every other
    /// tensor is the source's, unchanged; quantization_config is the one compressed-tensors writes.
    @Test(arguments: [
        (ConversionTarget.int4, 128, "int4-g128"), (.int4, 32, "int4-g32"), (.nvfp4, 128, "nvfp4"), (.mxfp4, 128, "mxfp4"),
    ])
    func outputEqualsCompressedTensors(_ target: ConversionTarget, _ groupSize: Int, _ reference: String) throws {
        let out = try convert(target, groupSize: groupSize)
        defer { Fixtures.removeTemporary(out) }
        let ours = try SafetensorsFile(path: out + "/model.safetensors")
        let expected = try SafetensorsFile(path: Fixtures.path("quant/targets/\(reference).safetensors"))
        let source = try SafetensorsFile(path: PackedTargets.source + "/model.safetensors")
        #expect(expected.tensors.count >= 20)
        var modules = Set<String>()
        for e in expected.tensors {
            let t = try #require(ours.tensor(named: e.name), "\(e.name) missing")
            #expect(t.dtype == e.dtype && t.shape == e.shape, "\(e.name)")
            #expect(Array(ours.data(t)) == Array(expected.data(e)), "\(e.name) differs from compressed-tensors")
            modules.insert(String(e.name[..<e.name.lastIndex(of: ".")!]))
        }
        for t in ours.tensors where !expected.tensors.contains(where: { $0.name == t.name }) {
            let s = try #require(source.tensor(named: t.name), "\(t.name) is neither compressed-tensors' nor the source's")
            #expect(Array(ours.data(t)) == Array(source.data(s)))
        }
        // No quantized module keeps its BF16 weight.
        #expect(!modules.contains { ours.tensor(named: $0 + ".weight") != nil })
        let config = try #require(try JSONParser.parse(Fixtures.readBytes(out + "/config.json")).objectValue)
        let reference = try JSONParser.parse(Fixtures.readBytes(Fixtures.path("quant/targets/\(reference)-config.json")))
        #expect(config["quantization_config"] == reference)
    }

    /// A gpt-oss checkpoint gets gpt-oss's own MXFP4 layout: its expert stacks as `_blocks`/`_scales` exactly as
    /// Fixtures/quant_formats.py encodes them by triton_kernels' rule (which transformers loads), everything else
    /// BF16, and gpt-oss's quantization_config.
    @Test func gptOssGetsItsOwnLayout() throws {
        let out = try convert(.mxfp4, input: Fixtures.path("quant/targets/gpt_oss-source"))
        defer { Fixtures.removeTemporary(out) }
        let ours = try SafetensorsFile(path: out + "/model.safetensors")
        let expected = try SafetensorsFile(path: Fixtures.path("quant/formats/gpt_oss-mxfp4/model.safetensors"))
        #expect(ours.tensors.map(\.name).sorted() == expected.tensors.map(\.name).sorted())
        #expect(expected.tensors.filter { $0.name.hasSuffix("_blocks") }.count == 4)
        for e in expected.tensors {
            let t = try #require(ours.tensor(named: e.name))
            #expect(t.dtype == e.dtype && t.shape == e.shape && Array(ours.data(t)) == Array(expected.data(e)), "\(e.name)")
        }
        let config = try #require(try JSONParser.parse(Fixtures.readBytes(out + "/config.json")).objectValue)
        let reference = try #require(try JSONParser.parse(Fixtures.readBytes(Fixtures.path("quant/formats/gpt_oss-mxfp4/config.json"))).objectValue)
        #expect(config["quantization_config"] == reference["quantization_config"])
    }

    /// Our own reader decodes what we wrote: a conversion back to BF16 puts every quantized weight within half
    /// a step of its source, and the group of zeros and the 2^-40 row stay finite.
    @Test(arguments: [ConversionTarget.int4, .nvfp4, .mxfp4])
    func aConversionBackToBF16StaysNearTheSource(_ target: ConversionTarget) throws {
        let quantized = try convert(target)
        defer { Fixtures.removeTemporary(quantized) }
        let back = try convert(.bf16, input: quantized)
        defer { Fixtures.removeTemporary(back) }
        let ours = try SafetensorsFile(path: back + "/model.safetensors")
        let source = try SafetensorsFile(path: PackedTargets.source + "/model.safetensors")
        #expect(ours.tensors.map(\.name).sorted() == source.tensors.map(\.name).sorted())
        var compared = 0
        for s in source.tensors where s.name.hasSuffix("proj.weight") && s.shape[1] % 128 == 0 {
            let t = try #require(ours.tensor(named: s.name))
            let a = ours.data(t), b = source.data(s)
            let n = a.count / 2
            var worst: Float = 0, largest: Float = 0
            for i in 0..<n {
                let x = FloatDecoding.bf16(a.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                let y = FloatDecoding.bf16(b.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                #expect(x.isFinite)
                worst = max(worst, abs(x - y))
                largest = max(largest, abs(y))
            }
            // int4: half of amax / 7.5; FP4: half of the widest E2M1 step (2) times amax / 6, plus scale rounding.
            #expect(worst <= largest * (target == .int4 ? 0.075 : 0.25), "\(s.name): \(worst) of \(largest)")
            compared += 1
        }
        #expect(compared == 11)
    }

    /// compressed-tensors needs whole groups: at group size 128 the 64-column weights stay BF16, named in ignore.
    @Test func weightsTheGroupSizeDoesNotDivideStay() throws {
        let checkpoint = try Checkpoint(path: PackedTargets.source)
        var options = ConversionOptions(target: .int4)
        options.groupSize = 128
        let plan = try ConversionPlan(checkpoint: checkpoint, options: options)
        let down = try #require(plan.decisions.first { $0.name == "model.layers.0.mlp.experts.0.down_proj.weight" })
        #expect(down.action.kind == .passThrough)
        #expect(down.action.reason == "64 columns are not a multiple of the group size 128")
        options.groupSize = 32
        let plan32 = try ConversionPlan(checkpoint: checkpoint, options: options)
        #expect(plan32.decisions.first { $0.name == down.name }?.action.kind == .quantize)
    }

    /// gpt-oss's packed expert stacks are not quantized again (convert --to bf16 first), naming what to run.
    @Test(arguments: [ConversionTarget.int4, .nvfp4, .mxfp4, .fp8])
    func gptOssStacksAreNotRequantized(_ target: ConversionTarget) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("quant/formats/gpt_oss-mxfp4"))
        do {
            _ = try ConversionPlan(checkpoint: checkpoint, options: ConversionOptions(target: target))
            Issue.record("\(target): accepted")
        } catch {
            #expect(error.kind == .quantizationUnsupported)
            #expect(error.message.contains("convert --to bf16 first"), "\(error.message)")
        }
    }

    /// A NaN is refused, naming the tensor and row, and nothing is left under a final name.
    @Test func aNonFiniteWeightIsRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        var values = [Float](repeating: 0.25, count: 64 * 128)
        values[5 * 128 + 7] = .infinity
        try SafetensorsWriter.write(
            to: dir + "/model.safetensors",
            tensors: [TensorSpec(name: "model.layers.0.mlp.up_proj.weight", dtype: .F32, shape: [64, 128])], metadata: nil
        ) { _, sink in try values.withUnsafeBytes { try sink.write($0) } }
        for target in [ConversionTarget.int4, .nvfp4, .mxfp4] {
            let out = Fixtures.temporaryDirectory() + "/out"
            defer { Fixtures.removeTemporary(out) }
            do {
                _ = try convert(target, input: dir)
                Issue.record("\(target): infinity accepted")
            } catch let e as ConversionError {
                #expect(e.kind == .nonFiniteValues && e.tensor == "model.layers.0.mlp.up_proj.weight")
                #expect(target == .nvfp4 || e.message.contains("row 5"), "\(e.message)")
            }
        }
    }
}

/// A weight in one quantized format converted to another goes through its BF16 values, and the run says, per
/// weight, whether the values survived: checked here against the two formats' own decodings.
@Suite struct Requantization {
    func convert(_ input: String, _ target: ConversionTarget, scaleFormat: BlockQuantization.ScaleFormat = .float32,
                 to out: String) throws -> CheckpointConversion.Summary {
        let checkpoint = try Checkpoint(path: input)
        var options = ConversionOptions(target: target)
        options.scaleFormat = scaleFormat
        options.groupSize = 32
        return try CheckpointConversion.run(checkpoint: checkpoint, output: out,
                                            plan: try ConversionPlan(checkpoint: checkpoint, options: options), options: options)
    }

    /// The BF16 values of every weight of a checkpoint, by name, as convert --to bf16 decodes them.
    func decoded(_ input: String, in dir: String) throws -> [String: [UInt16]] {
        _ = try convert(input, .bf16, to: dir)
        let file = try SafetensorsFile(path: dir + "/model.safetensors")
        var values: [String: [UInt16]] = [:]
        for t in file.tensors where t.dtype == .BF16 {
            let d = file.data(t)
            values[t.name] = (0..<(d.count / 2)).map { d.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self) }
        }
        return values
    }

    /// The loss reported for each weight is the difference between the input's decoding and the output's.
    func expectLossesAreTrue(_ summary: CheckpointConversion.Summary, input: String, output: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let before = try decoded(input, in: dir + "/a")
        let after = try decoded(output, in: dir + "/b")
        #expect(!summary.requantized.isEmpty)
        for loss in summary.requantized {
            let a = try #require(before[loss.name]), b = try #require(after[loss.name])
            var changed = 0
            var worst: Float = 0
            // Values compared as numbers: -0 and +0 are the same value (NVFP4 writes -0.0 as code 0).
            for (x, y) in zip(a, b) where FloatDecoding.bf16(x) != FloatDecoding.bf16(y) {
                changed += 1
                worst = max(worst, abs(FloatDecoding.bf16(x) - FloatDecoding.bf16(y)))
            }
            #expect(loss.values == a.count && loss.changed == changed && loss.maxAbsError == worst, "\(loss.name): \(loss), measured \(changed), \(worst)")
        }
    }

    /// MXFP4 values are E2M1 times powers of two: FP8 blocks with power-of-two (ue8m0) scales hold them exactly
    /// where the block's exponent range allows. Here every weight but the one with a row scaled by 2^-40 (too far
    /// below its block's largest value for E4M3) survives; with float32 scales none does.
    @Test func mxfp4ToFP8IsLosslessWhereTheExponentsFit() throws {
        let input = Fixtures.path("quant/formats/ct-mxfp4a16")
        let out = Fixtures.temporaryDirectory() + "/fp8"
        defer { Fixtures.removeTemporary(out) }
        let summary = try convert(input, .fp8, scaleFormat: .ue8m0, to: out)
        #expect(summary.requantized.count == 32)
        #expect(summary.requantized.filter { !$0.lossless }.map(\.name) == ["model.layers.0.mlp.experts.0.gate_proj.weight"])
        try expectLossesAreTrue(summary, input: input, output: out)
        let plainScales = Fixtures.temporaryDirectory() + "/fp8-f32"
        defer { Fixtures.removeTemporary(plainScales) }
        #expect(try convert(input, .fp8, to: plainScales).requantized.allSatisfy { !$0.lossless })
    }

    /// INT4 to MXFP4 loses values, and says how much; a weight whose columns MXFP4's groups do not divide is
    /// decoded to BF16 and named in quantization_config.ignore.
    @Test func int4ToMXFP4ReportsItsLoss() throws {
        let input = Fixtures.path("quant/formats/ct-w4a16")
        let out = Fixtures.temporaryDirectory() + "/mx"
        defer { Fixtures.removeTemporary(out) }
        let summary = try convert(input, .mxfp4, to: out)
        #expect(summary.requantized.count == 24 && summary.dequantized == 8)
        #expect(summary.requantized.allSatisfy { !$0.lossless && $0.maxAbsError > 0 })
        try expectLossesAreTrue(summary, input: input, output: out)
        let config = try #require(try JSONParser.parse(Fixtures.readBytes(out + "/config.json")).objectValue)
        let ignore = (config["quantization_config"]?.objectValue?["ignore"]?.arrayValue ?? []).compactMap(\.stringValue)
        #expect(ignore.contains("model.layers.0.mlp.experts.0.down_proj") && ignore.contains("lm_head"))
        let file = try SafetensorsFile(path: out + "/model.safetensors")
        #expect(file.tensor(named: "model.layers.0.mlp.experts.0.down_proj.weight")?.dtype == .BF16)
        #expect(file.tensor(named: "model.layers.0.mlp.experts.0.gate_proj.weight_packed")?.dtype == .U8)
        #expect(!file.tensors.contains { $0.name.hasSuffix("weight_shape") || $0.dtype == .I32 })
    }

    /// NVFP4 quantized again as NVFP4 gives back the same values (the same scales come out of them), except
    /// where the input's global scale was not the one its own amax gives.
    @Test func nvfp4ToNVFP4KeepsItsValues() throws {
        let input = Fixtures.path("quant/formats/ct-nvfp4a16")
        let out = Fixtures.temporaryDirectory() + "/nv"
        defer { Fixtures.removeTemporary(out) }
        let summary = try convert(input, .nvfp4, to: out)
        #expect(summary.requantized.filter(\.lossless).count >= 30)
        try expectLossesAreTrue(summary, input: input, output: out)
    }
}

/// The rounding rules, from the E2M1 and MX specifications as compressed-tensors applies them.
@Suite struct FourBitRounding {
    /// Nearest E2M1 value, ties to the even code; a negative value rounding to zero keeps its sign (code 8),
    /// -0.0 does not (compressed-tensors multiplies by sign(x), which is 0 there).
    @Test(arguments: [
        (Float(0), UInt8(0)), (-0.0, 0), (0.25, 0), (0.2501, 1), (0.75, 2), (1.25, 2), (1.2501, 3), (1.75, 4),
        (2.5, 4), (2.5001, 5), (3.5, 6), (5, 6), (5.0001, 7), (6, 7), (7.5, 7), (-0.1, 8), (-6, 15), (-1.75, 12), (-100, 15),
    ])
    func fp4Codes(_ q: Float, _ code: UInt8) {
        #expect(FourBitQuantization.fp4Codes([q]) == [code])
    }

    /// MX scale: amax rounded to a power of two on the BF16 bit pattern, up from a mantissa of 0.75; the
    /// exponent is that power's minus 2 (E2M1's largest is 6 < 2^3); a group of zeros gets exponent 0.
    @Test func mxScales() {
        func e(_ amax: Float) -> UInt8 { FourBitQuantization.mxScale(amax: amax, precision: .bf16).0 }
        #expect(e(1) == 125)
        #expect(e(1.7421875) == 125)  // largest BF16 mantissa below 0.75
        #expect(e(1.75) == 126)
        #expect(e(0x1p-20) == 105)
        #expect(e(0) == 0)
        #expect(FourBitQuantization.mxScale(amax: 0, precision: .bf16).1 == 0x1p-127)
    }

    /// NVFP4's global scale: torch computes 2688 / amax as 2688 x (1 / amax), each rounded to BF16.
    @Test func nvfp4GlobalScale() {
        #expect(FourBitQuantization.nvfp4GlobalScale(amax: 1.3671875, precision: .bf16) == 1960)  // not 1968
        #expect(FourBitQuantization.nvfp4GlobalScale(amax: 0, precision: .bf16) == 1)  // 2688 x 2^126 overflows
        #expect(FourBitQuantization.nvfp4GlobalScale(amax: 1.3671875, precision: .f32) == Float(2688) * (1 / Float(1.3671875)))
    }
}
