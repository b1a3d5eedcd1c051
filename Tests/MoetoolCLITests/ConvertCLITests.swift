import FixtureSupport
import Foundation
import SafetensorsFormat
import StrictJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ConvertNothingToDo {
    /// A conversion that would change no tensor says so, exits 1 and writes nothing (not a silent full copy).
    @Test func aConversionThatChangesNothingIsRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f32 = try CLI.run(["convert", Fixtures.path("models/mixtral-f32-sharded"), dir + "/bf16", "--to", "bf16"])
        #expect(f32.status == 1)
        #expect(f32.stderr.contains("nothing to convert") && f32.stderr.contains("does not cast F32"), "\(f32.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/bf16"))
        let first = try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), dir + "/fp8", "--to", "fp8", "-q"])
        #expect(first.status == 0, "\(first.stderr)")
        let again = try CLI.run(["convert", dir + "/fp8", dir + "/fp8-again", "--to", "fp8"])
        #expect(again.status == 1)
        #expect(again.stderr.contains("already FP8"), "\(again.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/fp8-again"))
        // --dry-run shows the plan and the same note, exit 0.
        let dry = try CLI.run(["convert", dir + "/fp8", dir + "/fp8-again", "--to", "fp8", "--dry-run"])
        #expect(dry.status == 0 && dry.stderr.contains("note: nothing to convert"), "\(dry.stderr)")
    }
}

/// Found by an adversarial run: outputs that would replace what is not an output, or vanish after the run.
@Suite struct AdversarialRegressions {
    /// A FIFO (or a device) at the output path is refused, not replaced by a regular file.
    @Test func outputsNeverReplaceAFIFO() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/fifo"
        #expect(mkfifo(fifo, 0o644) == 0)
        let v = try CLI.run(["verify", Fixtures.path("models/mixtral-bf16"), "--token-ids", "1,2", "--save-outputs", fifo])
        #expect(v.status == 1 && v.stderr.contains("a FIFO"), "\(v.stderr)")
        let p = try CLI.run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "8", "--slots", "16", "-o", fifo])
        #expect(p.status == 1 && p.stderr.contains("a FIFO"), "\(p.stderr)")
        var st = stat()
        #expect(lstat(fifo, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
    }

    /// Shards the index places under moetool's state directory would be deleted with it when the run ends.
    @Test func shardsUnderTheStateDirectoryAreRefused() throws {
        let dir = Fixtures.temporaryDirectory() + "/in"
        defer { Fixtures.removeTemporary(dir) }
        try FileManager.default.copyItem(atPath: Fixtures.path("models/qwen3_moe-f32-sharded"), toPath: dir)
        try FileManager.default.createDirectory(atPath: dir + "/.moetool-convert", withIntermediateDirectories: true)
        let shard = "model-00003-of-00005.safetensors"
        try FileManager.default.moveItem(atPath: dir + "/" + shard, toPath: dir + "/.moetool-convert/" + shard)
        let index = dir + "/model.safetensors.index.json"
        let text = String(decoding: Fixtures.readBytes(index), as: UTF8.self).replacingOccurrences(of: "\"\(shard)\"", with: "\".moetool-convert/\(shard)\"")
        try Data(text.utf8).write(to: URL(fileURLWithPath: index))
        let r = try CLI.run(["convert", dir, dir + "-out", "--to", "fp8"])
        #expect(r.status == 1 && r.stderr.contains(".moetool-* directory"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "-out"))
    }

    /// FP8 weights kept as they are must match the config the run writes (block size, scale format).
    @Test func keptFP8WeightsMustMatchTheWrittenConfig() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // All but the experts to FP8 first, then the rest with ue8m0 scales: two formats in one file.
        let first = try CLI.run(["convert", Fixtures.path("models/deepseek_v3-bf16"), dir + "/attn", "--to", "fp8", "--exclude", "experts", "-q"])
        #expect(first.status == 0, "\(first.stderr)")
        let mixed = try CLI.run(["convert", dir + "/attn", dir + "/all", "--to", "fp8", "--scale-format", "ue8m0"])
        #expect(mixed.status == 1 && mixed.stderr.contains("float32 scales") && mixed.stderr.contains("ue8m0"), "\(mixed.stderr)")
        let same = try CLI.run(["convert", dir + "/attn", dir + "/all2", "--to", "fp8", "-q"])
        #expect(same.status == 0, "\(same.stderr)")
    }
}

@Suite struct ConvertCommand {
    @Test func convertsBothWaysAndInspects() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let fp8 = try CLI.run(["convert", Fixtures.path("models/deepseek_v3-f32-sharded"), dir + "/fp8", "--to", "fp8", "--json"])
        #expect(fp8.status == 0, "\(fp8.stderr)")
        let summary = try #require(try JSONParser.parse(fp8.stdout).objectValue)
        #expect(summary["quantized"]?.uint64Value == 120)
        let inspected = try CLI.run(["inspect", "--json", dir + "/fp8"])
        #expect(inspected.status == 0)
        let q = try JSONParser.parse(inspected.stdout).objectValue?["quantization"]?.objectValue
        #expect(q?["fp8_weights"]?.uint64Value == 120 && q?["with_scale"]?.uint64Value == 120)
        let bf16 = try CLI.run(["convert", dir + "/fp8", dir + "/bf16", "--to", "bf16"])
        #expect(bf16.status == 0)
        #expect(try CLI.run(["inspect", dir + "/bf16"]).status == 0)
    }

    @Test func dryRunWritesNothingAndExplains() throws {
        let out = Fixtures.temporaryDirectory() + "/never"
        defer { Fixtures.removeTemporary(out) }
        let r = try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), out, "--to", "fp8", "--dry-run", "--exclude", "w2"])
        #expect(r.status == 0)
        // name, action, reason: an excluded projection passes through and says why; its sibling is quantized.
        let rows = r.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        #expect(rows.first { $0.first == "model.layers.0.block_sparse_moe.experts.0.w1.weight" } ==
                ["model.layers.0.block_sparse_moe.experts.0.w1.weight", "quantize", "linear", "projection"])
        #expect(rows.first { $0.first == "model.layers.0.block_sparse_moe.experts.0.w2.weight" } ==
                ["model.layers.0.block_sparse_moe.experts.0.w2.weight", "pass_through", "--exclude"])
        // 3 layers: 8 experts x w1, w3 and 4 attention projections quantized; 24 w2, 12 norms, router, embeddings, head kept.
        #expect(r.stdout.hasSuffix("\n60 to quantize, 0 to dequantize, 36 unchanged, 0 dropped\n"), "\(r.stdout.suffix(200))")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func badInputAndUsageExitCodes() throws {
        let out = Fixtures.temporaryDirectory() + "/x"
        defer { Fixtures.removeTemporary(out) }
        #expect(try CLI.run(["convert", Fixtures.path("malformed/size_mismatch.safetensors"), out, "--to", "fp8"]).status == 1)
        #expect(try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), Fixtures.path("models"), "--to", "fp8"]).status == 1)
        #expect(try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), out]).status == 2)  // --to missing
        #expect(try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), out, "--to", "int3"]).status == 2)  // no such target
        #expect(try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), out, "--to", "int4", "--group-size", "48"]).status == 2)
        #expect(try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), out, "--to", "nvfp4", "--group-size", "32"]).status == 2)
    }
}

@Suite struct KilledConversion {
    /// A sharded BF16 checkpoint big enough that a conversion takes a while.
    func makeInput(_ dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var weightMap: [String] = []
        var total = 0
        for shard in 1...6 {
            let name = "model-0000\(shard)-of-00006.safetensors"
            let tensor = "model.layers.\(shard).mlp.down_proj.weight"
            var state = UInt32(shard)
            let values: [UInt16] = (0..<(768 * 2048)).map { _ in
                state = state &* 1_664_525 &+ 1_013_904_223
                return UInt16(0x3C00 | (state >> 16) & 0x3FF) ^ UInt16((state >> 15) & 0x8000)
            }
            try SafetensorsWriter.write(to: dir + "/" + name,
                                        tensors: [TensorSpec(name: tensor, dtype: .BF16, shape: [768, 2048])],
                                        metadata: [(key: "format", value: "pt")]) { _, sink in
                try values.withUnsafeBytes { try sink.write($0) }
            }
            weightMap.append("\"\(tensor)\": \"\(name)\"")
            total += values.count * 2
        }
        let index = "{\"metadata\": {\"total_size\": \(total)}, \"weight_map\": {\(weightMap.joined(separator: ", "))}}"
        try Data(index.utf8).write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
    }

    @Test func sigkillThenResumeIsByteIdentical() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        try makeInput(dir + "/in")
        #expect(try CLI.run(["convert", dir + "/in", dir + "/reference", "--to", "fp8"]).status == 0)

        // Stopped half-way (the debug build's fault hook, see FaultInjectionTests), then killed from outside.
        let args = ["convert", dir + "/in", dir + "/out", "--to", "fp8", "--threads", "1"]
        let total = try Faulty.events(["convert", dir + "/in", dir + "/counted", "--to", "fp8"])
        let (p, pStderr) = try Faulty.startStopped(args, at: total / 2)
        defer { Fixtures.removeTemporary(pStderr) }
        #expect(FileManager.default.fileExists(atPath: dir + "/out/.moetool-convert/model-00001-of-00006.safetensors.done.json"))
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGKILL)
        // Nothing half-written under a final name.
        #expect(!FileManager.default.fileExists(atPath: dir + "/out/model.safetensors.index.json"))
        #expect(try CLI.run(["convert", dir + "/in", dir + "/out", "--to", "fp8"]).status == 1)  // not empty: needs --resume
        let resumed = try CLI.run(["convert", dir + "/in", dir + "/out", "--to", "fp8", "--resume", "--json"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let shards = try JSONParser.parse(resumed.stdout).objectValue?["shards"]?.arrayValue ?? []
        #expect(shards.contains { $0.objectValue?["resumed"] == .bool(true) })
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/reference").sorted()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/out").sorted() == names)
        for name in names {
            #expect(Fixtures.readBytes(dir + "/out/" + name) == Fixtures.readBytes(dir + "/reference/" + name), "\(name)")
        }
    }
}
