import FixtureSupport
import Foundation
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
