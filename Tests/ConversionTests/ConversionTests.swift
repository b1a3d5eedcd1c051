import Checkpoint
import Conversion
import FixtureSupport
import Foundation
import NumberFormats
import SafetensorsFormat
import StrictJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct WholeCheckpointConversion {
    func convert(_ input: String, _ target: ConversionTarget, to output: String) throws -> CheckpointConversion.Summary {
        let checkpoint = try Checkpoint(path: input)
        let options = ConversionOptions(target: target)
        let plan = try ConversionPlan(checkpoint: checkpoint, options: options)
        return try CheckpointConversion.run(checkpoint: checkpoint, output: output, plan: plan, options: options)
    }

    /// The transformers-written DeepSeek-V3 fixture converted to FP8 equals, byte for
    /// byte, the same conversion done by the torch reference and written by save_file.
    @Test func fp8OutputIsByteIdenticalToTheTorchReference() throws {
        let out = Fixtures.temporaryDirectory() + "/fp8"
        let summary = try convert(Fixtures.path("models/deepseek_v3-bf16"), .fp8, to: out)
        #expect(summary.quantized == 120)
        let ours = Fixtures.readBytes(out + "/model.safetensors")
        let reference = Fixtures.readBytes(Fixtures.path("quant/deepseek_v3-bf16-fp8.safetensors"))
        #expect(ours.count == reference.count)
        #expect(ours == reference)
        // Other files come along unchanged; config.json gains the FP8 quantization_config.
        #expect(Fixtures.readBytes(out + "/generation_config.json")
                == Fixtures.readBytes(Fixtures.path("models/deepseek_v3-bf16/generation_config.json")))
        let config = try #require(try JSONParser.parse(Fixtures.readBytes(out + "/config.json")).objectValue)
        let q = try #require(config["quantization_config"]?.objectValue)
        #expect(q["quant_method"] == "fp8" && q["fmt"] == "e4m3")
        #expect(q["weight_block_size"] == [128, 128])
        #expect(q["ignored_layers"] == nil)  // DeepSeek's loaders know which layers stay BF16
    }

    /// Sharded F32 -> FP8 -> BF16: a valid sharded checkpoint at each step, every
    /// weight within half an FP8 step of the original (plus BF16 rounding).
    @Test func roundTripStaysWithinHalfAnFP8Step() throws {
        let dir = Fixtures.temporaryDirectory()
        let source = Fixtures.path("models/qwen3_moe-f32-sharded")
        _ = try convert(source, .fp8, to: dir + "/fp8")
        let fp8 = try Checkpoint(path: dir + "/fp8")
        #expect(fp8.layout == .sharded)
        #expect(fp8.config?.quantizationConfig?["ignored_layers"]?.arrayValue?.isEmpty == false)
        let summary = try convert(dir + "/fp8", .bf16, to: dir + "/bf16")
        #expect(summary.dequantized > 0 && summary.dropped == summary.dequantized)
        let original = try Checkpoint(path: source)
        let back = try Checkpoint(path: dir + "/bf16")
        #expect(back.tensorCount == original.tensorCount)
        #expect(back.config?.quantizationConfig == nil)
        var checked = 0
        for located in original.allTensors where located.tensor.shape.count == 2 {
            let t = located.tensor
            let q = try #require(fp8.locate(t.name))
            guard q.tensor.dtype == .F8_E4M3 else { continue }
            let scale = try #require(fp8.locate(t.name + "_scale_inv"))
            let b = try #require(back.locate(t.name))
            #expect(b.tensor.dtype == .BF16 && b.tensor.shape == t.shape)
            let x = original.file(located).data(t)
            let y = back.file(b).data(b.tensor)
            let s = fp8.file(scale).data(scale.tensor)
            let cols = Int(t.shape[1])
            let gridCols = (cols + 127) / 128
            for i in 0..<Int(t.elementCount) {
                let xi = x.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
                let yi = FloatDecoding.bf16(y.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
                let si = s.loadUnaligned(fromByteOffset: ((i / cols) / 128 * gridCols + (i % cols) / 128) * 4, as: Float.self)
                // Half an E4M3 step at x/s (3 mantissa bits; subnormal step 2^-9), then BF16 rounding of the result.
                let bound = max(abs(xi) * 0x1p-4, 0x1p-10 * si) + abs(yi) * 0x1p-8
                #expect(abs(yi - xi) <= bound * 1.0001, "\(t.name)[\(i)]: \(xi) -> \(yi)")
                if abs(yi - xi) > bound * 1.0001 { return }
            }
            checked += 1
        }
        #expect(checked > 20)
    }

    @Test func tensorSelectionFollowsTheRule() {
        func action(_ name: String, _ shape: [UInt64], _ dtype: Dtype = .BF16) -> TensorAction.Kind {
            TensorSelection().action(for: TensorInfo(name: name, dtype: dtype, shape: shape, begin: 0, end: 0),
                                     target: .fp8, hasScale: false, isScale: false).kind
        }
        #expect(action("model.layers.3.mlp.experts.7.down_proj.weight", [64, 32]) == .quantize)
        #expect(action("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", [576, 64]) == .quantize)
        #expect(action("model.layers.0.block_sparse_moe.experts.1.w2.weight", [64, 32]) == .quantize)
        #expect(action("model.embed_tokens.weight", [512, 64]) == .passThrough)
        #expect(action("lm_head.weight", [512, 64]) == .passThrough)
        #expect(action("model.layers.61.shared_head.head.weight", [512, 64]) == .passThrough)
        #expect(action("model.layers.61.eh_proj.weight", [64, 128]) == .passThrough)
        #expect(action("model.layers.3.mlp.gate.weight", [16, 64]) == .passThrough)
        #expect(action("model.layers.1.mlp.shared_expert_gate.weight", [1, 64]) == .passThrough)
        #expect(action("model.layers.0.self_attn.q_proj.bias", [64]) == .passThrough)
        #expect(action("model.layers.2.mlp.experts.gate_up_proj", [8, 48, 64]) == .passThrough)
        #expect(action("model.layers.0.mlp.down_proj.weight", [64, 32], .F8_E4M3) == .passThrough)
        #expect(action("model.layers.0.mlp.down_proj.weight", [64, 32], .I32) == .passThrough)
    }
}

@Suite struct ConversionRefusals {
    func plan(_ input: String, _ target: ConversionTarget) throws -> (Checkpoint, ConversionPlan, ConversionOptions) {
        let c = try Checkpoint(path: input)
        let o = ConversionOptions(target: target)
        return (c, try ConversionPlan(checkpoint: c, options: o), o)
    }

    @Test func refusesANonEmptyOutputOrOneInsideTheInput() throws {
        let (c, p, o) = try plan(Fixtures.path("models/mixtral-bf16"), .fp8)
        let out = Fixtures.temporaryDirectory()
        #expect(FileManager.default.createFile(atPath: out + "/keep.txt", contents: Data("x".utf8)))
        #expect(throws: ConversionError.self) { try CheckpointConversion.run(checkpoint: c, output: out, plan: p, options: o) }
        #expect(Fixtures.readBytes(out + "/keep.txt") == Array("x".utf8))
        #expect(throws: ConversionError.self) {
            try CheckpointConversion.run(checkpoint: c, output: Fixtures.path("models/mixtral-bf16/sub"), plan: p, options: o)
        }
        #expect(!FileManager.default.fileExists(atPath: Fixtures.path("models/mixtral-bf16/sub")))
    }

    @Test func refusesOtherQuantizationMethods() throws {
        let dir = Fixtures.temporaryDirectory()
        try FileManager.default.copyItem(atPath: Fixtures.path("models/mixtral-bf16/model.safetensors"), toPath: dir + "/model.safetensors")
        try Data(#"{"model_type": "mixtral", "quantization_config": {"quant_method": "gptq"}}"#.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let c = try Checkpoint(path: dir)
        #expect(throws: ConversionError.self) { try ConversionPlan(checkpoint: c, options: ConversionOptions(target: .fp8)) }
    }

    /// NaN in a weight refuses the conversion, naming the tensor, and leaves no shard
    /// under its final name; --allow-nonfinite lets the block become NaN.
    @Test func refusesNonFiniteWeightsUnlessAllowed() throws {
        let dir = Fixtures.temporaryDirectory()
        var values = [Float](repeating: 0.25, count: 256 * 130)
        values[1000] = .nan
        try SafetensorsWriter.write(
            to: dir + "/model.safetensors",
            tensors: [TensorSpec(name: "model.layers.0.mlp.down_proj.weight", dtype: .F32, shape: [256, 130])], metadata: nil
        ) { _, sink in try values.withUnsafeBytes { try sink.write($0) } }
        let c = try Checkpoint(path: dir)
        var options = ConversionOptions(target: .fp8)
        let p = try ConversionPlan(checkpoint: c, options: options)
        let out = Fixtures.temporaryDirectory() + "/out"
        do {
            _ = try CheckpointConversion.run(checkpoint: c, output: out, plan: p, options: options)
            Issue.record("NaN accepted")
        } catch let e as ConversionError {
            #expect(e.tensor == "model.layers.0.mlp.down_proj.weight")
            #expect(e.message.contains("1 NaN"))
        }
        #expect(!FileManager.default.fileExists(atPath: out + "/model.safetensors"))
        // Only the state of the interrupted conversion (for --resume) remains.
        #expect(try FileManager.default.contentsOfDirectory(atPath: out) == [CheckpointConversion.stateDirectoryName])

        options.allowNonFinite = true
        let out2 = Fixtures.temporaryDirectory() + "/out2"
        _ = try CheckpointConversion.run(checkpoint: c, output: out2, plan: p, options: options)
        let f = try SafetensorsFile(path: out2 + "/model.safetensors")
        let scale = try #require(f.tensor(named: "model.layers.0.mlp.down_proj.weight_scale_inv"))
        let s = (0..<4).map { f.data(scale).loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
        #expect(s[0].isNaN && !s[1].isNaN && !s[2].isNaN && !s[3].isNaN)
    }
}

/// Interrupted, resumed and distributed conversions end with the same bytes as one uninterrupted run.
@Suite struct ResumeAndShards {
    func run(_ output: String, _ mode: CheckpointConversion.Mode) throws -> CheckpointConversion.Summary {
        let c = try Checkpoint(path: Fixtures.path("models/mixtral-f32-sharded"))
        let o = ConversionOptions(target: .fp8)
        return try CheckpointConversion.run(checkpoint: c, output: output, plan: try ConversionPlan(checkpoint: c, options: o),
                                            options: o, mode: mode)
    }

    func files(_ dir: String) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) { out[name] = Fixtures.readBytes(dir + "/" + name) }
        return out
    }

    @Test func twoWorkersThenFinalizeEqualsOneRun() throws {
        let dir = Fixtures.temporaryDirectory()
        let single = try run(dir + "/single", .full)
        #expect(single.finalized && single.shards.count == 5)
        let first = try run(dir + "/split", .shards(index: 1, count: 2))
        let second = try run(dir + "/split", .shards(index: 2, count: 2))
        #expect(!first.finalized && first.shards.map(\.name).count == 3 && second.shards.count == 2)
        #expect(FileManager.default.fileExists(atPath: dir + "/split/" + CheckpointConversion.stateDirectoryName))
        _ = try run(dir + "/split", .finalize)
        #expect(try files(dir + "/split") == files(dir + "/single"))
    }

    @Test func finalizeRefusesMissingOrDamagedShards() throws {
        let dir = Fixtures.temporaryDirectory() + "/out"
        _ = try run(dir, .shards(index: 1, count: 2))
        #expect(throws: ConversionError.self) { try run(dir, .finalize) }
        _ = try run(dir, .shards(index: 2, count: 2))
        // Damage a finished shard: finalize must notice, resume must redo it.
        let victim = dir + "/model-00002-of-00005.safetensors"
        var bytes = Fixtures.readBytes(victim)
        bytes[bytes.count - 1] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: victim))
        #expect(throws: ConversionError.self) { try run(dir, .finalize) }
        let resumed = try run(dir, .resume)
        #expect(resumed.shards.filter { !$0.resumed }.map(\.name) == ["model-00002-of-00005.safetensors"])
        let reference = Fixtures.temporaryDirectory() + "/ref"
        _ = try run(reference, .full)
        #expect(try files(dir) == files(reference))
    }

    @Test func resumeRefusesAForeignDirectoryOrOtherOptions() throws {
        let dir = Fixtures.temporaryDirectory()
        #expect(FileManager.default.createFile(atPath: dir + "/notes.txt", contents: Data("mine".utf8)))
        #expect(throws: ConversionError.self) { try run(dir, .resume) }
        let out = Fixtures.temporaryDirectory() + "/out"
        _ = try run(out, .shards(index: 1, count: 3))
        let c = try Checkpoint(path: Fixtures.path("models/mixtral-f32-sharded"))
        var other = ConversionOptions(target: .fp8)
        other.scaleFormat = .ue8m0
        #expect(throws: ConversionError.self) {
            try CheckpointConversion.run(checkpoint: c, output: out, plan: try ConversionPlan(checkpoint: c, options: other),
                                         options: other, mode: .resume)
        }
        // Another revision of the input: same names, same sizes, other bytes (a copy touched later).
        let revised = Fixtures.temporaryDirectory() + "/in"
        try FileManager.default.copyItem(atPath: Fixtures.path("models/mixtral-f32-sharded"), toPath: revised)
        let copyOut = Fixtures.temporaryDirectory() + "/out"
        let r = try Checkpoint(path: revised)
        let options = ConversionOptions(target: .fp8)
        _ = try CheckpointConversion.run(checkpoint: r, output: copyOut, plan: try ConversionPlan(checkpoint: r, options: options),
                                         options: options, mode: .shards(index: 1, count: 3))
        let shard = revised + "/" + r.fileNames[1]
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: 60)], ofItemAtPath: shard)
        let changed = try Checkpoint(path: revised)
        do {
            _ = try CheckpointConversion.run(checkpoint: changed, output: copyOut,
                                             plan: try ConversionPlan(checkpoint: changed, options: options), options: options, mode: .resume)
            Issue.record("resumed from a changed input")
        } catch let e as ConversionError {
            #expect(e.message.contains("a changed input"), "\(e)")
        }
    }
}

/// FP8 weights are read as what they are: their own dtype, the block size the config declares, and
/// scales that make sense (refused otherwise).
@Suite struct FP8Decoding {
    func convertToBF16(_ input: String, allowNonFinite: Bool = false) throws -> String {
        let c = try Checkpoint(path: input)
        var o = ConversionOptions(target: .bf16)
        o.allowNonFinite = allowNonFinite
        let out = Fixtures.temporaryDirectory() + "/bf16"
        _ = try CheckpointConversion.run(checkpoint: c, output: out, plan: try ConversionPlan(checkpoint: c, options: o), options: o)
        return out
    }

    /// Every dequantized tensor equals torch's `(codes.float() * scale).to(bfloat16)` bit for bit.
    func expectEqualsReference(_ out: String, _ expectedFile: String) throws {
        let ours = try SafetensorsFile(path: out + "/model.safetensors")
        let expected = try SafetensorsFile(path: Fixtures.path(expectedFile))
        #expect(expected.tensors.count >= 1)
        for e in expected.tensors {
            let t = try #require(ours.tensor(named: e.name), "\(e.name) missing")
            #expect(t.dtype == .BF16 && t.shape == e.shape)
            #expect(Array(ours.data(t)) == Array(expected.data(e)), "\(e.name) differs from torch")
        }
        #expect(!ours.tensors.contains { Checkpoint.isScaleName($0.name) })
    }

    /// E4M3FN, E5M2, E4M3FNUZ and E5M2FNUZ codes, 200x300 (partial blocks both ways).
    @Test func everyFP8DtypeDecodesAsItself() throws {
        try expectEqualsReference(try convertToBF16(Fixtures.path("quant/fp8_variants")), "quant/fp8_variants-expected.safetensors")
    }

    /// weight_block_size [100, 128] on a [200, 128] weight: its [2, 1] grid is also 128x128's, so only
    /// honouring the declared size gives rows 100..127 the second scale.
    @Test func theDeclaredBlockSizeIsHonoured() throws {
        try expectEqualsReference(try convertToBF16(Fixtures.path("quant/fp8_block100")), "quant/fp8_block100-expected.safetensors")
    }

    /// A copy of the [100, 128] fixture with another config or other scale bytes.
    func variant(config: String? = nil, scales: [Float]? = nil, codeAt0: UInt8? = nil) throws -> String {
        let dir = Fixtures.temporaryDirectory()
        let source = Fixtures.path("quant/fp8_block100")
        var bytes = Fixtures.readBytes(source + "/model.safetensors")
        let f = try SafetensorsFile(path: source + "/model.safetensors")
        if let scales {
            let s = try #require(f.tensor(named: "model.layers.0.mlp.experts.0.down_proj.weight_scale_inv"))
            let at = Int(f.fileRange(s).lowerBound)
            for (i, v) in scales.enumerated() { withUnsafeBytes(of: v) { for k in 0..<4 { bytes[at + i * 4 + k] = $0[k] } } }
        }
        if let codeAt0 {
            let w = try #require(f.tensor(named: "model.layers.0.mlp.experts.0.down_proj.weight"))
            bytes[Int(f.fileRange(w).lowerBound)] = codeAt0
        }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        let text = config ?? String(decoding: Fixtures.readBytes(source + "/config.json"), as: UTF8.self)
        try Data(text.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        return dir
    }

    func refusal(_ input: String) throws -> ConversionError? {
        do {
            _ = try convertToBF16(input)
            return nil
        } catch let e as ConversionError {
            return e
        }
    }

    @Test func aScaleGridThatContradictsTheDeclaredBlockSizeIsRefused() throws {
        let dir = try variant(config: #"{"quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 128]}}"#)
        let e = try #require(try refusal(dir))
        #expect(e.tensor == "model.layers.0.mlp.experts.0.down_proj.weight_scale_inv")
        #expect(e.message.contains("[2,1]") && e.message.contains("[4,1]"), "\(e.message)")
    }

    @Test(arguments: ["[0, 0]", "[0, 128]", "[128]", "[128, 1e400]", "\"128\"", "[1048577, 128]"])
    func anImpossibleDeclaredBlockSizeIsRefusedWhenOpened(_ value: String) throws {
        let dir = try variant(config: #"{"quantization_config": {"quant_method": "fp8", "weight_block_size": \#(value)}}"#)
        do {
            _ = try Checkpoint(path: dir)
            Issue.record("\(value) accepted")
        } catch {
            #expect(error.problems.first?.rule == .configInvalid)
            #expect(error.description.contains("weight_block_size"))
        }
    }

    @Test(arguments: [
        ([Float.nan, 0.5], "scale of block (0, 0)"),
        ([0.002, Float.infinity], "scale of block (1, 0)"),
        ([0, 0.5], "is 0.0, so small that every code dequantizes to 0"),
        ([Float.leastNonzeroMagnitude, 0.5], "so small that every code dequantizes to 0"),
        ([0.002, 1e38], "beyond BF16's range"),
    ])
    func impossibleScalesAreRefusedNamingTheBlock(_ scales: [Float], _ expected: String) throws {
        let dir = try variant(scales: scales)
        let e = try #require(try refusal(dir), "\(scales) accepted")
        #expect(e.tensor == "model.layers.0.mlp.experts.0.down_proj.weight")
        #expect(e.message.contains(expected), "\(e.message)")
        // --allow-nonfinite writes what they give.
        _ = try convertToBF16(dir, allowNonFinite: true)
    }

    @Test func aNaNCodeIsRefusedNamingItsPlace() throws {
        let e = try #require(try refusal(try variant(codeAt0: 0x7F)))
        #expect(e.message.contains("row 0, column 0") && e.message.contains("NaN"), "\(e.message)")
    }

    /// A zero-element weight whose other dimension is 2^64-1 (the reference reader opens it) converts both ways.
    @Test(arguments: [[UInt64.max, 0], [0, UInt64.max]])
    func zeroElementWeightsWithHugeDimensionsConvert(_ shape: [UInt64]) throws {
        let dir = Fixtures.temporaryDirectory()
        let specs = [TensorSpec(name: "model.layers.0.self_attn.q_proj.weight", dtype: .BF16, shape: shape),
                     TensorSpec(name: "model.layers.0.self_attn.k_proj.weight", dtype: .BF16, shape: [128, 128])]
        try SafetensorsWriter.write(to: dir + "/model.safetensors", tensors: specs, metadata: nil) { info, sink in
            try sink.write(UnsafeRawBufferPointer(start: nil, count: 0))
            if info.shape == [128, 128] { try [UInt8](repeating: 0x3F, count: 128 * 128 * 2).withUnsafeBytes { try sink.write($0) } }
        }
        let c = try Checkpoint(path: dir)
        let o = ConversionOptions(target: .fp8)
        let out = dir + "-fp8"
        _ = try CheckpointConversion.run(checkpoint: c, output: out, plan: try ConversionPlan(checkpoint: c, options: o), options: o)
        let fp8 = try SafetensorsFile(path: out + "/model.safetensors")
        #expect(fp8.tensor(named: "model.layers.0.self_attn.q_proj.weight")?.shape == shape)
        #expect(fp8.tensor(named: "model.layers.0.self_attn.k_proj.weight")?.dtype == .F8_E4M3)
        let back = try convertToBF16(out)
        #expect(try SafetensorsFile(path: back + "/model.safetensors").tensor(named: "model.layers.0.self_attn.q_proj.weight")?.shape == shape)
    }
}

/// A checkpoint laid out beyond one flat directory.
@Suite struct CheckpointTrees {
    /// The sharded Qwen3 fixture with shard 2 moved to `sub/` (the index says so) and a `tokenizer/` directory.
    static func nested() throws -> String {
        let dir = Fixtures.temporaryDirectory() + "/in"
        try FileManager.default.copyItem(atPath: Fixtures.path("models/qwen3_moe-f32-sharded"), toPath: dir)
        let shard = "model-00002-of-00005.safetensors"
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: dir + "/" + shard, toPath: dir + "/sub/" + shard)
        let index = dir + "/" + Checkpoint.indexFileName
        let text = String(decoding: Fixtures.readBytes(index), as: UTF8.self).replacingOccurrences(of: "\"\(shard)\"", with: "\"sub/\(shard)\"")
        try Data(text.utf8).write(to: URL(fileURLWithPath: index))
        try FileManager.default.createDirectory(atPath: dir + "/tokenizer/extra", withIntermediateDirectories: true)
        try Data("vocab".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer/vocab.txt"))
        try Data("deep".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer/extra/merges.txt"))
        try FileManager.default.copyItem(atPath: Fixtures.path("models/mixtral-bf16/model.safetensors"), toPath: dir + "/stray.safetensors")
        #expect(mkfifo(dir + "/fifo", 0o644) == 0)
        // A linked directory inside the checkpoint is followed; one outside it is not carried along.
        try FileManager.default.createSymbolicLink(atPath: dir + "/tokens", withDestinationPath: "tokenizer")
        let elsewhere = Fixtures.temporaryDirectory()
        try Data("far".utf8).write(to: URL(fileURLWithPath: elsewhere + "/big.bin"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/outside", withDestinationPath: elsewhere)
        return dir
    }

    @Test func aShardInASubdirectoryIsConvertedWhereTheIndexSaysItIs() throws {
        let input = try Self.nested()
        let c = try Checkpoint(path: input)
        #expect(c.fileNames.contains("sub/model-00002-of-00005.safetensors"))
        let o = ConversionOptions(target: .fp8)
        let out = input + "-fp8"
        let summary = try CheckpointConversion.run(checkpoint: c, output: out, plan: try ConversionPlan(checkpoint: c, options: o), options: o)
        #expect(summary.shards.count == 5)
        // Every other file, at any depth, is carried over; what is not is said.
        #expect(Fixtures.readBytes(out + "/tokenizer/vocab.txt") == Array("vocab".utf8))
        #expect(Fixtures.readBytes(out + "/tokenizer/extra/merges.txt") == Array("deep".utf8))
        #expect(summary.leftOut.map(\.name) == ["fifo", "outside", "stray.safetensors"], "\(summary.leftOut)")
        #expect(Fixtures.readBytes(out + "/tokens/vocab.txt") == Array("vocab".utf8))
        #expect(!FileManager.default.fileExists(atPath: out + "/outside"))
        #expect(!FileManager.default.fileExists(atPath: out + "/stray.safetensors"))
        let converted = try Checkpoint(path: out)
        #expect(converted.fileNames == c.fileNames)
        #expect(converted.tensorCount > c.tensorCount)  // scales added
        // Two workers and a finalize give the same shards.
        let split = input + "-split"
        let p = try ConversionPlan(checkpoint: c, options: o)
        _ = try CheckpointConversion.run(checkpoint: c, output: split, plan: p, options: o, mode: .shards(index: 1, count: 2))
        _ = try CheckpointConversion.run(checkpoint: c, output: split, plan: p, options: o, mode: .shards(index: 2, count: 2))
        _ = try CheckpointConversion.run(checkpoint: c, output: split, plan: p, options: o, mode: .finalize)
        for name in c.fileNames { #expect(Fixtures.readBytes(split + "/" + name) == Fixtures.readBytes(out + "/" + name), "\(name)") }
    }
}
