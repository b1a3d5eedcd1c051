import FixtureSupport
import Foundation
import StrictJSON
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct CompressCommand {
    /// A sharded checkpoint through compress and decompress on the command line: the JSON
    /// summary, inspect on the compressed copy (headers only), and every byte back.
    @Test func roundTripOnTheCommandLine() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("models/deepseek_v3-f32-sharded")
        let c = try CLI.run(["compress", source, dir + "/packed", "--json"])
        #expect(c.status == 0, "\(c.stderr)")
        let o = try #require(try JSONParser.parse(c.stdout).objectValue)
        #expect(o["schema"]?.stringValue == "moetool.compress/1")
        let ratio = try #require(o["ratio"]?.doubleValue)
        #expect(ratio > 1.05)
        #expect(o["by_dtype"]?.objectValue?["F32"]?.objectValue?["original_bytes"]?.uint64Value ?? 0 > 1_000_000)
        #expect(c.stderr.isEmpty)

        let i = try CLI.run(["inspect", dir + "/packed"])
        #expect(i.status == 0, "\(i.stderr)")
        #expect(i.stdout.contains("(sharded, 5 files, compressed,"))
        #expect(i.stdout.contains("16 per MoE layer, 4 per token"))
        // --scan reads compressed shards directly: the same statistics as on the original.
        let scan = try CLI.run(["inspect", "--scan", "--json", dir + "/packed"])
        let plain = try CLI.run(["inspect", "--scan", "--json", source])
        #expect(scan.status == 0, "\(scan.stderr)")
        let scanned = try #require(try JSONParser.parse(scan.stdout).objectValue?["scan"])
        #expect(scanned == (try JSONParser.parse(plain.stdout).objectValue?["scan"]))
        #expect(scanned.arrayValue?.count == 139)

        // No file of the compressed copy is named .safetensors: a loader globbing for them finds none.
        let packedNames = try FileManager.default.contentsOfDirectory(atPath: dir + "/packed")
        #expect(!packedNames.contains { $0.hasSuffix(".safetensors") } && packedNames.contains("model-00001-of-00005.safetensors.mz"), "\(packedNames)")
        // --checksum hashes the files as stored, under their stored names (sha256sum agrees).
        let sums = try CLI.run(["inspect", "--checksum", "--json", dir + "/packed"])
        let checksums = try #require(try JSONParser.parse(sums.stdout).objectValue?["checksums"]?.objectValue)
        let digest = try #require(checksums["model-00001-of-00005.safetensors.mz"]?.stringValue, "\(sums.stdout)")
        let coreutils = Process()
        coreutils.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        coreutils.arguments = [dir + "/packed/model-00001-of-00005.safetensors.mz"]
        let pipe = Pipe()
        coreutils.standardOutput = pipe
        try coreutils.run()
        coreutils.waitUntilExit()
        #expect(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).hasPrefix(digest + " "))

        let d = try CLI.run(["decompress", dir + "/packed", dir + "/restored"])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(d.stdout.contains(": 5 files restored, 3 copied;"), "\(d.stdout)")
        for name in try FileManager.default.contentsOfDirectory(atPath: source) {
            #expect(Fixtures.readBytes(dir + "/restored/" + name) == Fixtures.readBytes(source + "/" + name), "\(name)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/restored/moetool-compressed.json"))
    }

    /// Damaged input: exit 1, the chunk and tensor named, no output file at all.
    @Test func corruptInputLeavesNoOutput() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let packed = dir + "/m.stz"
        let c = try CLI.run(["compress", Fixtures.path("models/qwen3_moe-bf16/model.safetensors"), packed, "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        var bytes = Fixtures.readBytes(packed)
        bytes[bytes.count / 2] ^= 0xFF
        _ = FileManager.default.createFile(atPath: packed, contents: Data(bytes))
        let d = try CLI.run(["decompress", packed, dir + "/out.safetensors"])
        #expect(d.status == 1)
        #expect(d.stderr.contains("chunk") && d.stderr.contains("tensor"), "\(d.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["m.stz"])
        let truncated = dir + "/t.stz"
        _ = FileManager.default.createFile(atPath: truncated, contents: Data(bytes.prefix(bytes.count - 100)))
        let t = try CLI.run(["decompress", truncated, dir + "/out2.safetensors"])
        #expect(t.status == 1)
        #expect(t.stderr.contains("truncated"), "\(t.stderr)")
    }

    /// --resume of a finished single file keeps it (reported in --json and in the text line) and
    /// never rewrites it; a file of that name that is not a complete output of this input is refused.
    @Test func resumeKeepsWhatIsFinishedAndRefusesForeignFiles() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shard = Fixtures.path("models/mixtral-bf16/model.safetensors")
        #expect(try CLI.run(["compress", shard, dir + "/a.stz"]).status == 0)
        let before = try FileManager.default.attributesOfItem(atPath: dir + "/a.stz")[.modificationDate] as? Date
        let again = try CLI.run(["compress", shard, dir + "/a.stz", "--resume", "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        let files = try JSONParser.parse(again.stdout).objectValue?["files"]?.arrayValue ?? []
        #expect(files.count == 1 && files[0].objectValue?["resumed"] == .bool(true), "\(again.stdout)")
        #expect(try FileManager.default.attributesOfItem(atPath: dir + "/a.stz")[.modificationDate] as? Date == before)
        let text = try CLI.run(["compress", shard, dir + "/a.stz", "--resume"])
        #expect(text.stdout.contains("(1 kept from an earlier run)"), "\(text.stdout)")
        _ = FileManager.default.createFile(atPath: dir + "/b.stz", contents: Data("not ours".utf8))
        let foreign = try CLI.run(["compress", shard, dir + "/b.stz", "--resume"])
        #expect(foreign.status == 1 && foreign.stderr.contains("is not a complete output"), "\(foreign.stderr)")
        #expect(Fixtures.readBytes(dir + "/b.stz") == Array("not ours".utf8))
        // Another revision of the shard: same header, same size, one weight changed. Its compressed file
        // must not pass for this one's, nor a restored file for the other's.
        var revision = Fixtures.readBytes(shard)
        revision[revision.count - 3] ^= 0x40
        _ = FileManager.default.createFile(atPath: dir + "/revision.safetensors", contents: Data(revision))
        let stale = try CLI.run(["compress", dir + "/revision.safetensors", dir + "/a.stz", "--resume"])
        #expect(stale.status == 1 && stale.stderr.contains("is not a complete output"), "\(stale.stderr)")
        _ = FileManager.default.createFile(atPath: dir + "/restored.safetensors", contents: Data(revision))
        let wrong = try CLI.run(["decompress", dir + "/a.stz", dir + "/restored.safetensors", "--resume"])
        #expect(wrong.status == 1 && wrong.stderr.contains("is not a complete output"), "\(wrong.stderr)")
        #expect(Fixtures.readBytes(dir + "/restored.safetensors") == revision)
    }

    @Test func refusals() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model = Fixtures.path("models/mixtral-bf16")
        let existing = dir + "/exists"
        try FileManager.default.createDirectory(atPath: existing, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: existing + "/keep", contents: Data("x".utf8))
        let busy = try CLI.run(["compress", model, existing])
        #expect(busy.status == 1)
        #expect(busy.stderr.contains("is not empty"))
        #expect(Faulty.tree(existing) == ["keep"])  // refused before writing anything
        let foreign = try CLI.run(["compress", model, existing, "--resume"])
        #expect(foreign.status == 1 && foreign.stderr.contains("holds no interrupted run"), "\(foreign.stderr)")
        #expect(Faulty.tree(existing) == ["keep"])
        let notTensors = try CLI.run(["compress", model + "/config.json", dir + "/c.stz"])
        #expect(notTensors.status == 1)
        #expect(notTensors.stderr.contains("not a valid safetensors file"), "\(notTensors.stderr)")
        let plain = try CLI.run(["decompress", model + "/model.safetensors", dir + "/d"])
        #expect(plain.status == 1)
        #expect(plain.stderr.contains("not a moetool compressed shard"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["exists"])
    }

    /// An output that is the input, inside it (also through a symlink), or a directory holding it: exit 1
    /// with the reason, nothing created anywhere. (`compress IN IN/x` and `decompress C C/restored` wrote
    /// inside their input.)
    @Test func outputApartFromTheInput() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = dir + "/IN", packed = dir + "/C"
        try FileManager.default.copyItem(atPath: Fixtures.path("models/mixtral-bf16"), toPath: input)
        #expect(try CLI.run(["compress", input, packed, "-q"]).status == 0)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: "IN")
        let before = Faulty.tree(dir)
        let cases: [([String], String)] = [
            (["compress", input, input + "/x"], "IN/x: is inside the input"),
            (["compress", input, dir + "/link/x"], "link/x: is inside the input"),
            (["compress", input, input + "/sub/deeper"], "IN/sub/deeper: is inside the input"),
            (["decompress", packed, packed + "/restored"], "C/restored: is inside the input"),
            (["compress", input, dir], "holds the input"),
            (["compress", input + "/model.safetensors", dir + "/link/model.safetensors"], "is the input"),
            (["decompress", packed + "/model.safetensors.mz", packed + "/model.safetensors.mz", "--resume"], "is the input"),
        ]
        for (arguments, message) in cases {
            let r = try CLI.run(arguments + ["-q"])
            #expect(r.status == 1 && r.stderr.contains(message), "\(arguments): \(r.stderr)")
            #expect(Faulty.tree(dir) == before, "\(arguments) created something")
        }
    }

    /// Compress output given to compress again (it died of SIGILL, leaving files in OUT): exit 1 naming
    /// the file, with and without --resume, nothing created.
    @Test func alreadyCompressedInputIsRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let packed = dir + "/C"
        #expect(try CLI.run(["compress", Fixtures.path("models/deepseek_v3-f32-sharded"), packed, "-q"]).status == 0)
        for extra in [[], ["--resume"]] {
            let r = try CLI.run(["compress", packed, dir + "/again"] + extra)
            #expect(r.status == 1, "\(extra): \(r.stderr)")
            #expect(r.stderr.hasPrefix("error: \(packed)/model-00001-of-00005.safetensors.mz: already compressed"), "\(r.stderr)")
        }
        let one = try CLI.run(["compress", packed + "/model-00003-of-00005.safetensors.mz", dir + "/one.stz"])
        #expect(one.status == 1 && one.stderr.contains("model-00003-of-00005.safetensors.mz: already compressed"), "\(one.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["C"])
    }

    /// A checkpoint tree (a shard under sub/ named by the index, tokenizer/, original/, a symlinked file)
    /// on the command line: what is left out is said (text and --json); a compress and a decompress killed
    /// part-way and resumed give the same tree as an uninterrupted run, and decompress gives back the input.
    @Test func checkpointTreeWithResume() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = try CheckpointTree.make(in: dir)
        let expected = CheckpointTree.entries(input)
        #expect(mkfifo(input + "/tokenizer/pipe", 0o644) == 0)
        let c = try CLI.run(["compress", input, dir + "/packed"])
        #expect(c.status == 0, "\(c.stderr)")
        #expect(c.stdout.contains(": 6 files compressed, 4 copied, 1 left out (below);"), "\(c.stdout)")
        #expect(c.stdout.hasSuffix("\nleft out: tokenizer/pipe: a FIFO (named pipe), not a file\n"), "\(c.stdout)")
        let json = try CLI.run(["compress", input, dir + "/packed-json", "--json"])
        let leftOut = try JSONParser.parse(json.stdout).objectValue?["left_out"]?.arrayValue ?? []
        #expect(leftOut.map { $0.objectValue?["name"]?.stringValue } == ["tokenizer/pipe"], "\(json.stdout)")
        let d = try CLI.run(["decompress", dir + "/packed", dir + "/restored"])
        #expect(d.status == 0, "\(d.stderr)")
        let differences = CheckpointTree.differences(dir + "/restored", input, expected: expected)
        #expect(differences.isEmpty, "\(differences)")
        for (command, source, reference) in [("compress", input, dir + "/packed"), ("decompress", dir + "/packed", dir + "/restored")] {
            let total = try Faulty.events([command, source, dir + "/\(command)-counted"])
            for k in [total / 3, total / 2, total - 1] {
                let out = dir + "/\(command)-\(k)"
                #expect(try Faulty.run([command, source, out], fault: "kill:\(k)").killed, "\(command) step \(k)")
                let again = try Faulty.run([command, source, out, "--resume"])
                #expect(again.status == 0, "\(command) resume after step \(k): \(again.stderr)")
                Faulty.expectSameTree(out, as: reference, "\(command) killed at step \(k) of \(total), resumed")
            }
        }
    }

    /// Names from the file system are escaped in text output and messages: a directory named with a
    /// terminal escape sequence, a left-out entry with a bell, a bad file with a carriage return.
    @Test func fileNamesAreEscaped() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = dir + "/in\u{1b}[2J"
        try FileManager.default.copyItem(atPath: Fixtures.path("models/mixtral-bf16"), toPath: input)
        #expect(mkfifo(input + "/p\u{7}ipe", 0o644) == 0)
        let c = try CLI.run(["compress", input, dir + "/out\u{1b}]0;x"])
        #expect(c.status == 0, "\(c.stderr)")
        #expect(!c.stdout.contains("\u{1b}") && !c.stdout.contains("\u{7}"), "\(c.stdout)")
        #expect(c.stdout.contains("in\\u{1b}[2J -> \(dir)/out\\u{1b}]0;x: 1 file compressed"), "\(c.stdout)")
        #expect(c.stdout.contains("left out: p\\u{7}ipe: a FIFO"), "\(c.stdout)")
        let bad = dir + "/bad\r.safetensors"
        _ = FileManager.default.createFile(atPath: bad, contents: Data(repeating: 0x41, count: 100))
        let b = try CLI.run(["compress", bad, dir + "/bad.stz"])
        #expect(b.status == 1 && !b.stderr.contains("\r") && b.stderr.contains("bad\\r.safetensors"), "\(b.stderr)")
        let inside = try CLI.run(["decompress", dir + "/out\u{1b}]0;x", dir + "/out\u{1b}]0;x/\u{1b}x"])
        #expect(inside.status == 1 && !inside.stderr.contains("\u{1b}"), "\(inside.stderr)")
    }
}
