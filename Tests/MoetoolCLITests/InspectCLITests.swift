import FixtureSupport
import SafetensorsFormat
import Foundation
import StrictJSON
import Testing

/// Runs the built `moetool` binary as a user or a pipeline would.
struct CLI {
    static let binary: String = {
        // The test runner lives in the same build products directory as moetool.
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("moetool").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: Fixtures.root).deletingLastPathComponent().appendingPathComponent(".build/debug/moetool").path
    }()

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// `environment`: variables set for the child on top of this process's.
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = arguments
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        // Capture into files: no pipe can fill up and block the child.
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: dir + "/out")
        p.standardError = FileHandle(forWritingAtPath: dir + "/err")
        try p.run()
        p.waitUntilExit()
        let outData = Data(Fixtures.readBytes(dir + "/out"))
        let errData = Data(Fixtures.readBytes(dir + "/err"))
        try? FileManager.default.removeItem(atPath: dir)
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}

@Suite struct InspectCommand {
    @Test func summarisesAShardedDeepSeekCheckpoint() throws {
        let r = try CLI.run(["inspect", Fixtures.path("models/deepseek_v3-f32-sharded")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("sharded, 5 files"))
        #expect(r.stdout.contains("16 per MoE layer, 4 per token"))
        #expect(r.stdout.contains("3 (1 dense, 2 MoE)"))
        #expect(r.stderr.isEmpty)  // no terminal: no progress output
    }

    @Test func jsonIsStrictAndComplete() throws {
        let r = try CLI.run(["inspect", "--json", Fixtures.path("models/deepseek_v3-mtp-bf16")])
        #expect(r.status == 0)
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["schema"]?.stringValue == "moetool.inspect/1")
        #expect(o["valid"] == .bool(true))
        let expected = Fixtures.json("expected/deepseek_v3-mtp-bf16.json").objectValue!
        #expect(o["tensors"]?.uint64Value == expected["tensor_count"]?.uint64Value)
        #expect(o["parameters"]?.uint64Value == expected["parameters"]?.uint64Value)
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["active_parameters"]?.uint64Value == expected["moe"]?.objectValue?["active_parameters"]?.uint64Value)
        #expect(moe["mtp_layers"]?.uint64Value == 1)
    }

    @Test func everyMalformedFileExitsOneWithFileAndRule() throws {
        for entry in Fixtures.manifest("malformed/manifest.json") {
            let file = entry["file"]!.stringValue!
            let rule = entry["rule"]!.stringValue!
            let path = Fixtures.path("malformed/" + file)
            let r = try CLI.run(["inspect", path])
            #expect(r.status == 1, "\(file): status \(r.status)")
            #expect(r.stderr.contains(path) && r.stderr.contains("[\(rule)]"), "\(file): \(r.stderr)")
            let j = try CLI.run(["inspect", "--json", path])
            #expect(j.status == 1)
            let o = try JSONParser.parse(j.stdout).objectValue
            #expect(o?["valid"] == .bool(false))
            #expect(o?["problems"]?.arrayValue?.first?.objectValue?["rule"]?.stringValue == rule, "\(file)")
        }
    }

    @Test func malformedCheckpointListsEveryProblem() throws {
        let r = try CLI.run(["inspect", "--json", Fixtures.path("malformed/checkpoints/shard_missing")])
        #expect(r.status == 1)
        let problems = try JSONParser.parse(r.stdout).objectValue?["problems"]?.arrayValue ?? []
        #expect(problems.contains { $0.objectValue?["rule"]?.stringValue == "shard_missing" })
    }

    @Test func usageErrorsExitTwo() throws {
        #expect(try CLI.run(["inspect"]).status == 2)
        #expect(try CLI.run(["inspect", "--no-such-flag", "x"]).status == 2)
        #expect(try CLI.run(["inspect", "--filter", "(", "x"]).status == 2)
        #expect(try CLI.run(["no-such-command"]).status == 2)
        #expect(try CLI.run(["--help"]).status == 0)
    }

    @Test func tensorListingCollapsesAndFilters() throws {
        let r = try CLI.run(["inspect", "--tensors", "--filter", "experts", Fixtures.path("models/mixtral-bf16")])
        #expect(r.status == 0)
        #expect(r.stdout.contains("model.layers.{0..2}.block_sparse_moe.experts.{0..7}.w1.weight"))
        #expect(!r.stdout.contains("self_attn"))
        let all = try CLI.run(["inspect", "--tensors", "--no-collapse", "--offsets", Fixtures.path("models/mixtral-bf16")])
        #expect(all.stdout.contains("model.layers.2.block_sparse_moe.experts.7.w2.weight"))
        #expect(all.stdout.contains("model.safetensors ["))
    }

    @Test func escapesControlCharactersInNames() throws {
        let r = try CLI.run(["inspect", "--tensors", "--no-collapse", Fixtures.path("valid/escaped_names.safetensors")])
        #expect(r.status == 0)
        #expect(!r.stdout.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" })
    }

    @Test func scanAndChecksumInJSON() throws {
        let r = try CLI.run(["inspect", "--json", "--scan", "--checksum", Fixtures.path("models/qwen2_moe-bf16")])
        #expect(r.status == 0)
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let scan = try #require(o["scan"]?.arrayValue)
        #expect(scan.count == Int(o["tensors"]!.uint64Value!))
        #expect(scan.allSatisfy { $0.objectValue?["nan"]?.uint64Value == 0 })
        #expect(o["checksums"]?.objectValue?["model.safetensors"]?.stringValue?.count == 64)
    }
}

/// Names, dtypes, metadata and config strings from a file never reach the terminal as control characters.
@Suite struct HostileStringsAreEscaped {
    /// A safetensors file written byte by byte with `header` (a JSON text) and `data`.
    static func write(_ path: String, header: String, data: [UInt8]) {
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
        bytes += Array(header.utf8) + data
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    }

    /// No C0 control but newline and tab, no DEL or C1, no bidi override.
    static func expectClean(_ text: String, _ what: String) {
        let bad = text.unicodeScalars.first { u in
            (u.value < 0x20 && u != "\n" && u != "\t") || (0x7F..<0xA0).contains(u.value) || (0x202A...0x202E).contains(u.value)
        }
        #expect(bad == nil, "\(what): raw U+\(String(bad?.value ?? 0, radix: 16)) in \(text.debugDescription)")
    }

    @Test func everyCommandEscapesWhatItPrints() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let esc = "\\u001b[2J\\u001b]0;x\\u0007\\u202e"
        try FileManager.default.createDirectory(atPath: dir + "/ck", withIntermediateDirectories: true)
        Self.write(dir + "/ck/model.safetensors",
                   header: #"{"__metadata__": {"k\#(esc)": "v\#(esc)"}, "model.layers.0.mlp.experts.0.up_proj.we\#(esc)ight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
                   data: [0, 0, 0x80, 0x3F])
        try Data(#"{"model_type": "m\#(esc)", "architectures": ["A\#(esc)"]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/ck/config.json"))
        Self.write(dir + "/dtype.safetensors", header: #"{"w": {"dtype": "F\#(esc)", "shape": [1], "data_offsets": [0, 4]}}"#, data: [0, 0, 0, 0])
        let runs: [[String]] = [
            ["inspect", dir + "/ck"], ["inspect", dir + "/ck", "--tensors"], ["inspect", dir + "/ck", "--scan"],
            ["inspect", dir + "/dtype.safetensors"], ["convert", dir + "/ck", dir + "/out", "--to", "fp8", "--dry-run"],
            ["convert", dir + "/dtype.safetensors", dir + "/out2", "--to", "fp8"], ["verify", dir + "/ck"],
        ]
        for args in runs {
            let r = try CLI.run(args)
            Self.expectClean(r.stdout, args.joined(separator: " "))
            Self.expectClean(r.stderr, args.joined(separator: " "))
            #expect(!(r.stdout + r.stderr).isEmpty)
        }
        // The config's strings are shown, escaped.
        let shown = try CLI.run(["inspect", dir + "/ck"])
        #expect(shown.stdout.contains("m\\u{1b}[2J\\u{1b}]0;x\\u{7}\\u{202e}"), "\(shown.stdout)")
        // JSON keeps the exact strings (escaped the JSON way), parseable.
        let json = try CLI.run(["inspect", dir + "/ck", "--json"])
        let o = try #require(try JSONParser.parse(json.stdout).objectValue)
        #expect(o["config"]?.objectValue?["model_type"]?.stringValue == "m\u{1b}[2J\u{1b}]0;x\u{7}\u{202e}")
    }
}

/// Checkpoints where users keep them: the Hugging Face cache, by path or by model id.
@Suite final class HubCacheCheckpoints {
    let cache = Fixtures.temporaryDirectory() + "/hub"

    /// Swift Testing makes an instance per test and releases it after: the directory goes with it.
    deinit { Fixtures.removeTemporary(cache) }

    /// Runs moetool with HF_HUB_CACHE pointing at this cache.
    func run(_ args: [String]) throws -> CLI.Result {
        try CLI.run(args, environment: ["HF_HUB_CACHE": cache])
    }

    /// The same report for a snapshot (by path and by id) as for the plain directory, paths aside.
    @Test(arguments: ["models/deepseek_v3-bf16", "models/qwen3_moe-f32-sharded"])
    func inspectSeesTheSameCheckpoint(_ fixture: String) throws {
        let snapshot = try HubCacheLayout.add(model: Fixtures.path(fixture), id: "tiny/model", to: cache)
        let plain = try run(["inspect", "--json", Fixtures.path(fixture)])
        #expect(plain.status == 0, "\(plain.stderr)")
        for target in [snapshot, "tiny/model"] {
            let r = try run(["inspect", "--json", target])
            #expect(r.status == 0, "\(target): \(r.stderr)")
            #expect(r.stdout.replacingOccurrences(of: snapshot, with: "P") == plain.stdout.replacingOccurrences(of: Fixtures.path(fixture), with: "P"),
                    "\(target)")
        }
        let byRevision = try run(["inspect", "tiny/model", "--revision", HubCacheLayout.commit])
        #expect(byRevision.status == 0, "\(byRevision.stderr)")
    }

    @Test func convertAndVerifyTakeAModelID() throws {
        try HubCacheLayout.add(model: Fixtures.path("models/deepseek_v3-bf16"), id: "tiny/dsv3", to: cache)
        let out = Fixtures.temporaryDirectory() + "/fp8"
        defer { Fixtures.removeTemporary(out) }
        let c = try run(["convert", "tiny/dsv3", out, "--to", "fp8", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let direct = Fixtures.temporaryDirectory() + "/fp8"
        defer { Fixtures.removeTemporary(direct) }
        _ = try run(["convert", Fixtures.path("models/deepseek_v3-bf16"), direct, "--to", "fp8", "-q"])
        #expect(Fixtures.readBytes(out + "/model.safetensors") == Fixtures.readBytes(direct + "/model.safetensors"))
        #expect(Fixtures.readBytes(out + "/config.json") == Fixtures.readBytes(direct + "/config.json"))
        let v = try run(["verify", "tiny/dsv3", out])
        #expect(v.status == 0, "\(v.stdout)\(v.stderr)")
        // The outputs never replace a blob the snapshot links to, nor land in the snapshot.
        let snapshot = cache + "/models--tiny--dsv3/snapshots/" + HubCacheLayout.commit
        let blob = try FileManager.default.destinationOfSymbolicLink(atPath: snapshot + "/model.safetensors")
        let before = Fixtures.readBytes(snapshot + "/" + blob)
        for target in [snapshot + "/" + blob, snapshot + "/outputs.safetensors"] {
            let inside = try run(["verify", "tiny/dsv3", "--save-outputs", target])
            #expect(inside.status == 1, "\(target)")
        }
        #expect(Fixtures.readBytes(snapshot + "/" + blob) == before)
    }

    /// plan-experts --checkpoint and compress take the model id too; compress then decompress gives the snapshot's bytes.
    @Test func planExpertsAndCompressTakeAModelID() throws {
        let snapshot = try HubCacheLayout.add(model: Fixtures.path("models/deepseek_v3-bf16"), id: "tiny/dsv3", to: cache)
        let plan = try run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "8", "--slots", "24", "--checkpoint", "tiny/dsv3", "--json"])
        let direct = try run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "8", "--slots", "24", "--checkpoint", snapshot, "--json"])
        #expect(plan.status == 0 && direct.status == 0, "\(plan.stderr)")
        // 3 projections of 24x64 BF16 values per routed expert.
        #expect(plan.stdout.contains("\"bytes_per_expert\": 9216") && direct.stdout.contains("\"bytes_per_expert\": 9216"), "\(plan.stdout)")
        // --config takes the model id as well: the same plan as from the snapshot's config.json.
        let byID = try run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "8", "--slots", "24", "--config", "tiny/dsv3", "--json"])
        let byPath = try run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "8", "--slots", "24", "--config", snapshot, "--json"])
        #expect(byID.status == 0 && byPath.status == 0, "\(byID.stderr)")
        #expect(byID.stdout.replacingOccurrences(of: "\"seconds\": [0-9.e-]+", with: "", options: .regularExpression)
                == byPath.stdout.replacingOccurrences(of: "\"seconds\": [0-9.e-]+", with: "", options: .regularExpression))
        #expect(byID.stdout.contains("\"topk\": 4") && byID.stdout.contains("\"groups\": 8"), "\(byID.stdout)")
        let out = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(out) }
        let c = try run(["compress", "tiny/dsv3", out + "/c", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let d = try run(["decompress", out + "/c", out + "/d", "-q"])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(Fixtures.readBytes(out + "/d/model.safetensors") == Fixtures.readBytes(snapshot + "/model.safetensors"))
    }

    @Test func aModelNotInTheCacheSaysWhatToRun() throws {
        let r = try run(["inspect", "nobody/nothing"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("not in the Hugging Face cache") && r.stderr.contains("hf download nobody/nothing"), "\(r.stderr)")
        try HubCacheLayout.add(model: Fixtures.path("models/mixtral-bf16"), id: "tiny/mixtral", to: cache)
        let rev = try run(["inspect", "tiny/mixtral", "--revision", "v2"])
        #expect(rev.status == 1 && rev.stderr.contains("no revision \"v2\""), "\(rev.stderr)")
        let local = try run(["inspect", Fixtures.path("models/mixtral-bf16"), "--revision", "main"])
        #expect(local.status == 2, "\(local.stderr)")
    }

    /// A blob never downloaded (the link points at nothing) is named, with what to run.
    @Test func aDanglingLinkIsAShardNotDownloaded() throws {
        let snapshot = try HubCacheLayout.add(model: Fixtures.path("models/qwen3_moe-f32-sharded"), id: "tiny/qwen", to: cache)
        let link = snapshot + "/model-00003-of-00005.safetensors"
        let target = try FileManager.default.destinationOfSymbolicLink(atPath: link)
        try FileManager.default.removeItem(atPath: snapshot + "/" + target)
        let r = try run(["inspect", "tiny/qwen"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("model-00003-of-00005.safetensors") && r.stderr.contains("[shard_not_downloaded]")
                && r.stderr.contains("hf download"), "\(r.stderr)")
    }
}

/// Each row of the severity table (Docs/formats.md): an error when a loader would load the checkpoint wrongly,
/// a warning when it is inconsistent but loads correctly (an error under --strict).
@Suite struct Severity {
    /// A copy of `fixture` whose shards keep only the tensors `keep` accepts (plus `extra` in the first shard,
    /// which the index does not list), the index rewritten to match (`totalDelta` added to total_size).
    static func rewritten(_ fixture: String, keep: (String) -> Bool = { _ in true }, extra: Bool = false, totalDelta: Int = 0) throws -> String {
        let source = Fixtures.path(fixture)
        let dir = Fixtures.temporaryDirectory() + "/ck"  // the caller removes it (Fixtures.removeTemporary)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: source) where !name.hasSuffix(".safetensors") && !name.hasSuffix(".index.json") {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: dir + "/" + name)
        }
        var map: [(String, String)] = []
        var total = 0
        let shards = try FileManager.default.contentsOfDirectory(atPath: source).filter { $0.hasSuffix(".safetensors") }.sorted()
        for (i, shard) in shards.enumerated() {
            let f = try SafetensorsFile(path: source + "/" + shard)
            var specs = f.tensors.filter { keep($0.name) }.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
            for s in specs { map.append((s.name, shard)) }
            if extra && i == 0 { specs.append(TensorSpec(name: "model.layers.0.extra.weight", dtype: .F32, shape: [4])) }
            _ = try SafetensorsWriter.write(to: dir + "/" + shard, tensors: specs, metadata: [(key: "format", value: "pt")]) { info, sink in
                if let t = f.tensor(named: info.name) { try sink.write(f.data(t)) } else { try [Float](repeating: 1, count: 4).withUnsafeBytes { try sink.write($0) } }
            }
            total += f.tensors.filter { keep($0.name) }.reduce(0) { $0 + Int($1.byteCount) }
        }
        let entries = map.map { "\"\($0.0)\": \"\($0.1)\"" }.joined(separator: ", ")
        try Data("{\"metadata\": {\"total_size\": \(total + totalDelta)}, \"weight_map\": {\(entries)}}".utf8)
            .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        return dir
    }

    func expectWarning(_ dir: String, _ kind: String) throws {
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["inspect", dir])
        #expect(r.status == 0, "\(kind): \(r.stderr)")
        #expect(r.stdout.contains("warnings"), "\(r.stdout)")
        let strict = try CLI.run(["inspect", dir, "--strict", "--json"])
        #expect(strict.status == 1)
        #expect(strict.stderr.contains("[\(kind)] (--strict)"), "\(strict.stderr)")
        let o = try #require(try JSONParser.parse(strict.stdout).objectValue)
        #expect(o["valid"] == .bool(false))
        #expect(o["warnings"]?.arrayValue?.contains { $0.objectValue?["kind"]?.stringValue == kind } == true, "\(strict.stdout)")
    }

    func expectError(_ dir: String, _ rule: String, _ message: String) throws {
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["inspect", dir, "--json"])
        #expect(r.status == 1, "\(rule)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["valid"] == .bool(false))
        let problems = (o["problems"]?.arrayValue ?? []).compactMap { $0.objectValue }
        #expect(!problems.isEmpty)
        #expect(problems.contains { $0["rule"]?.stringValue == rule && $0["message"]?.stringValue?.contains(message) == true }, "\(problems)")
        #expect(r.stderr.contains("[\(rule)]"), "\(r.stderr)")
    }

    @Test func aTotalSizeOffByOneIsAWarning() throws {
        try expectWarning(try Self.rewritten("models/qwen3_moe-f32-sharded", totalDelta: 1), "total_size_mismatch")
    }

    @Test func aTensorTheWeightMapLacksIsAWarning() throws {
        try expectWarning(try Self.rewritten("models/qwen3_moe-f32-sharded", extra: true), "tensor_not_in_weight_map")
    }

    @Test func aMissingExpertIsAnError() throws {
        let dir = try Self.rewritten("models/qwen3_moe-f32-sharded") { !$0.hasPrefix("model.layers.1.mlp.experts.3.") }
        try expectError(dir, "expert_count_mismatch", "layer 1: found 7 routed experts, config.json says 8")
    }

    @Test func aMissingLayerIsAnError() throws {
        let dir = try Self.rewritten("models/qwen3_moe-f32-sharded") { !$0.hasPrefix("model.layers.2.") }
        try expectError(dir, "layer_count_mismatch", "found 2 decoder layers, config.json says 3")
    }

    @Test func aMissingScaleIsAnError() throws {
        let fp8 = Fixtures.temporaryDirectory() + "/fp8"
        defer { Fixtures.removeTemporary(fp8) }
        let c = try CLI.run(["convert", Fixtures.path("models/qwen3_moe-f32-sharded"), fp8, "--to", "fp8", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let scale = "model.layers.1.mlp.experts.0.up_proj.weight_scale_inv"
        // Rebuild the converted checkpoint without that one scale.
        let copy = Fixtures.temporaryDirectory() + "/copy"
        defer { Fixtures.removeTemporary(copy) }
        try FileManager.default.copyItem(atPath: fp8, toPath: copy)
        for name in try FileManager.default.contentsOfDirectory(atPath: copy) where name.hasSuffix(".safetensors") {
            let f = try SafetensorsFile(path: fp8 + "/" + name)
            guard f.tensor(named: scale) != nil else { continue }
            try FileManager.default.removeItem(atPath: copy + "/" + name)
            try SafetensorsWriter.write(to: copy + "/" + name, tensors: f.tensors.filter { $0.name != scale }
                .map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }, metadata: nil) { info, sink in
                try sink.write(f.data(f.tensor(named: info.name)!))
            }
        }
        let index = copy + "/model.safetensors.index.json"
        let text = String(decoding: Fixtures.readBytes(index), as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.contains("\"\(scale)\"") }
        try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: index))
        try expectError(copy, "scale_missing", "without a weight_scale_inv")
    }

    @Test func theIntactCheckpointIsValidEvenUnderStrict() throws {
        let r = try CLI.run(["inspect", Fixtures.path("models/qwen3_moe-f32-sharded"), "--strict"])
        #expect(r.status == 0, "\(r.stderr)")
    }
}

/// config.json against the tensors: what a loader would look for and not find is an error.
@Suite struct Completeness {
    static let models = ["deepseek_v3-bf16", "deepseek_v3-f32-sharded", "deepseek_v3-fused-bf16", "deepseek_v3-mtp-bf16",
                         "mixtral-bf16", "mixtral-f32-sharded", "qwen2_moe-bf16", "qwen2_moe-f32-sharded", "qwen3_moe-bf16",
                         "qwen3_moe-f32-sharded"]

    /// Every checkpoint transformers wrote is complete: every tensor config.json implies, at its shape, nothing more.
    @Test(arguments: models)
    func transformersCheckpointsAreComplete(_ model: String) throws {
        let r = try CLI.run(["inspect", "--json", "--strict", Fixtures.path("models/" + model)])
        #expect(r.status == 0, "\(model): \(r.stderr)")
        let c = try #require(try JSONParser.parse(r.stdout).objectValue?["completeness"]?.objectValue, "\(model): not checked")
        let tensors = try #require(try JSONParser.parse(r.stdout).objectValue?["tensors"]?.uint64Value)
        // The MTP fixture's layer 3 is beyond num_hidden_layers, so not implied by it.
        #expect(c["expected_tensors"]?.uint64Value == (model == "deepseek_v3-mtp-bf16" ? tensors - 68 : tensors), "\(model)")
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]))
    }

    /// gpt-oss as transformers writes it (float32, verify/gpt_oss) and as MXFP4 (quant/formats/gpt_oss-mxfp4): every
    /// tensor config.json implies (router and its bias, sinks, o_proj's bias, the fused experts and their biases), at
    /// its shape, the MXFP4 blocks at theirs; one tensor fewer is named.
    @Test(arguments: ["verify/gpt_oss", "quant/formats/gpt_oss-mxfp4"])
    func gptOssIsComplete(_ path: String) throws {
        let r = try CLI.run(["inspect", "--json", "--strict", Fixtures.path(path)])
        #expect(r.status == 0, "\(path): \(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "\(path): not checked")
        // 17 a layer (2 norms, q/k/v/o and their biases, sinks, router and its bias, 2 stacks and their biases), then
        // embeddings, norm, lm_head; the MXFP4 file stores 2 more a layer (blocks and scales for each stack).
        #expect(c["expected_tensors"] == .int(37), "\(path)")
        #expect(o["tensors"] == .int(path.hasSuffix("mxfp4") ? 41 : 37), "\(path)")
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        #expect(o["moe"]?.objectValue?["expert_layout"] == .string("fused"))
        let text = try CLI.run(["inspect", Fixtures.path(path)])
        #expect(text.stdout.contains("expert layout   fused (experts.gate_up_proj [E,H,2I], gate/up interleaved)"), "\(text.stdout)")

        let dir = try Severity.rewritten(path) { !$0.hasSuffix("layers.1.self_attn.sinks") }
        defer { Fixtures.removeTemporary(dir) }
        let missing = try CLI.run(["inspect", dir, "--json"])
        #expect(missing.status == 1)
        let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
        #expect(m["missing"] == .array([.string("model.layers.1.self_attn.sinks")]), "\(m)")
    }

    /// GLM-4.5 as transformers writes it, with the MTP layer GLM-4.5 ships (verify/glm4_moe): every tensor config.json
    /// implies (q/k/v biases for attention_bias, q/k norms for use_qk_norm, a dense first layer, the router's
    /// e_score_correction_bias, shared experts) at its shape; the MTP layer counted apart, neither expected nor
    /// unexpected; a missing q_norm is named.
    @Test func glm4MoeIsCompleteWithItsMTPLayerApart() throws {
        let path = Fixtures.path("verify/glm4_moe")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embeddings, norm, lm_head; 11 a layer for attention and norms (2 norms, q/k/v/o, 3 biases, q/k norms); the
        // dense MLP's 3; per MoE layer the router, its bias, 12 x 3 expert projections and the shared expert's 3.
        #expect(c["expected_tensors"] == .int(3 + 3 * 11 + 3 + 2 * (2 + 12 * 3 + 3)))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["layers"] == .int(3) && moe["dense_layers"] == .int(1) && moe["moe_layers"] == .int(2) && moe["mtp_layers"] == .int(1), "\(moe)")
        #expect(moe["routed_experts"] == .int(12) && moe["experts_per_token"] == .int(3) && moe["shared_experts"] == .int(1))
        #expect(moe["expert_groups"] == .int(4) && moe["topk_groups"] == .int(2))
        let kinds = (moe["layer_details"]?.arrayValue ?? []).compactMap { $0.objectValue?["kind"]?.stringValue }
        #expect(kinds == ["dense", "moe", "moe", "mtp"])
        // The MTP parameters are layer 3's, counted from the file; a text token goes through the rest except the
        // 12 - 3 routed experts (3 x 8 x 16 each) it does not use in each MoE layer.
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let mtp = file.tensors.filter { $0.name.hasPrefix("model.layers.3.") }.reduce(UInt64(0)) { $0 + $1.elementCount }
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(mtp > 0 && moe["mtp_parameters"] == .uint(mtp), "\(moe)")
        #expect(moe["total_parameters"] == .uint(total))
        #expect(moe["active_parameters"] == .uint(total - mtp - 2 * 9 * 3 * 8 * 16), "\(moe)")
        let text = try CLI.run(["inspect", path])
        #expect(text.stdout.contains("layers          3 (1 dense, 2 MoE) + 1 MTP"), "\(text.stdout)")

        let dir = try Severity.rewritten("verify/glm4_moe") { !$0.hasSuffix("layers.2.self_attn.q_norm.weight") }
        defer { Fixtures.removeTemporary(dir) }
        let missing = try CLI.run(["inspect", dir, "--json"])
        #expect(missing.status == 1)
        let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
        #expect(m["missing"] == .array([.string("model.layers.2.self_attn.q_norm.weight")]), "\(m)")
    }

    /// MiniMax-M2 as transformers writes it (verify/minimax_m2, MiniMax's own names): every tensor config.json implies
    /// (q/k norms over the whole projection, [heads x head_dim] and [kv heads x head_dim]; block_sparse_moe's router,
    /// its e_score_correction_bias, w1/w2/w3 experts of intermediate_size) at its shape; a missing correction bias is named.
    @Test func minimaxM2IsComplete() throws {
        let path = Fixtures.path("verify/minimax_m2")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embeddings, norm, lm_head; per layer 2 norms, q/k/v/o, q/k norms, the router, its bias and 8 x 3 experts.
        #expect(c["expected_tensors"] == .int(3 + 2 * (8 + 2 + 8 * 3)))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["layers"] == .int(2) && moe["dense_layers"] == .int(0) && moe["moe_layers"] == .int(2), "\(moe)")
        #expect(moe["routed_experts"] == .int(8) && moe["experts_per_token"] == .int(3), "\(moe)")
        // A token goes through everything but the 8 - 3 routed experts (3 x 8 x 16 each) it does not use in each layer.
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(moe["total_parameters"] == .uint(total))
        #expect(moe["active_parameters"] == .uint(total - 2 * 5 * 3 * 8 * 16), "\(moe)")

        let dir = try Severity.rewritten("verify/minimax_m2") { $0 != "model.layers.1.block_sparse_moe.e_score_correction_bias" }
        defer { Fixtures.removeTemporary(dir) }
        let missing = try CLI.run(["inspect", dir, "--json"])
        #expect(missing.status == 1)
        let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
        #expect(m["missing"] == .array([.string("model.layers.1.block_sparse_moe.e_score_correction_bias")]), "\(m)")
    }

    /// Llama 4 as transformers writes Llama4ForConditionalGeneration (verify/llama4): the text model's tensors under
    /// language_model. (dense layers of intermediate_size_mlp, MoE layers with feed_forward.router, the shared expert
    /// and the fused [E, in, out] stacks) are all there at their shapes; the vision tower is counted apart and never
    /// active; a missing router is named.
    @Test func llama4IsComplete() throws {
        let path = Fixtures.path("verify/llama4")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embeddings, norm, lm_head; per layer 2 norms and q/k/v/o; 2 dense MLPs of 3; 2 MoE blocks of router,
        // shared expert (3) and 2 stacks.
        #expect(c["expected_tensors"] == .int(3 + 4 * 6 + 2 * 3 + 2 * 6))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["layers"] == .int(4) && moe["dense_layers"] == .int(2) && moe["moe_layers"] == .int(2), "\(moe)")
        #expect(moe["routed_experts"] == .int(4) && moe["experts_per_token"] == .int(1) && moe["shared_experts"] == .int(1), "\(moe)")
        let kinds = moe["layer_details"]?.arrayValue?.compactMap { $0.objectValue?["kind"]?.stringValue }
        #expect(kinds == ["dense", "moe", "dense", "moe"])
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        let vision = file.tensors.filter { !$0.name.hasPrefix("language_model.") }.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(vision > 0 && moe["multimodal_parameters"] == .uint(vision), "\(moe)")
        #expect(moe["total_parameters"] == .uint(total))
        // A token goes through neither the vision tower nor the 3 of 4 routed experts (16 x 16 + 8 x 16 each) it does not use.
        #expect(moe["active_parameters"] == .uint(total - vision - 2 * 3 * (16 * 16 + 8 * 16)), "\(moe)")

        // One Linear per expert, as the FP8 releases store them (and no vision tower): complete too.
        let split = try CLI.run(["inspect", "--json", "--strict", Fixtures.path("verify/llama4-per-expert")])
        #expect(split.status == 0, "\(split.stderr)")
        let so = try #require(try JSONParser.parse(split.stdout).objectValue)
        #expect(so["completeness"]?.objectValue?["expected_tensors"] == .int(3 + 4 * 6 + 2 * 3 + 2 * (4 + 4 * 3)))
        #expect(so["moe"]?.objectValue?["expert_layout"] == .string("per_expert"))
        #expect(so["moe"]?.objectValue?["active_parameters"] == .uint(total - vision - 2 * 3 * (16 * 16 + 8 * 16)))

        let name = "language_model.model.layers.1.feed_forward.router.weight"
        let dir = try Severity.rewritten("verify/llama4") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let missing = try CLI.run(["inspect", dir, "--json"])
        #expect(missing.status == 1)
        let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
        #expect(m["missing"] == .array([.string(name)]), "\(m)")
    }

    /// DeepSeek-V4 in the release's names (verify/deepseek_v4): every tensor config.json implies at its shape (per layer
    /// 2 norms, 2 hyper-connections of 3, the attention's 8; the CSA layer's compressor (4) and indexer (4 + 2), the
    /// HCA layer's compressor (4); the router with tid2eid on the hash layer, its gate.bias on the others; 8 x 3
    /// experts and 3 shared), all three layers MoE; a missing indexer weight is named. The release's storage
    /// (verify/deepseek_v4-release: FP8 with `.scale`, FP4 experts two to an I8 byte, an MTP layer `mtp.0.`) is as
    /// complete, its FP4 experts counted as the values they hold and the MTP layer apart.
    @Test func deepSeekV4IsComplete() throws {
        let path = Fixtures.path("verify/deepseek_v4")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embed, norm, head, the hyper head's 3; per layer 2 norms, 2 x 3 hyper-connection tensors, 8 attention
        // tensors, the router and its table or bias (2), 8 x 3 experts and 3 shared; CSA 4 + 4 + 2, HCA 4.
        let perLayer = 2 + 6 + 8 + 2 + 8 * 3 + 3
        #expect(c["expected_tensors"] == .int(6 + 3 * perLayer + 10 + 4))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["layers"] == .int(3) && moe["dense_layers"] == .int(0) && moe["moe_layers"] == .int(3), "\(moe)")
        #expect(moe["routed_experts"] == .int(8) && moe["experts_per_token"] == .int(2) && moe["shared_experts"] == .int(1), "\(moe)")
        // A token goes through everything but the 8 - 2 routed experts (3 x 8 x 16 each) it does not use in each layer.
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(moe["total_parameters"] == .uint(total))
        let unused: UInt64 = 3 * 6 * 3 * 8 * 16
        #expect(moe["active_parameters"] == .uint(total - unused), "\(moe)")

        let dir = try Severity.rewritten("verify/deepseek_v4") { $0 != "layers.1.attn.indexer.weights_proj.weight" }
        defer { Fixtures.removeTemporary(dir) }
        let missing = try CLI.run(["inspect", dir, "--json"])
        #expect(missing.status == 1)
        let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
        #expect(m["missing"] == .array([.string("layers.1.attn.indexer.weights_proj.weight")]), "\(m)")

        let release = try CLI.run(["inspect", "--json", "--strict", Fixtures.path("verify/deepseek_v4-release")])
        #expect(release.status == 0, "\(release.stderr)")
        let ro = try #require(try JSONParser.parse(release.stdout).objectValue)
        let rc = try #require(ro["completeness"]?.objectValue, "not checked")
        #expect(rc["expected_tensors"] == c["expected_tensors"])
        #expect(rc["missing"] == .array([]) && rc["wrong_shape"] == .array([]) && rc["unexpected"] == .array([]), "\(rc)")
        let rm = try #require(ro["moe"]?.objectValue)
        // The same model, plus the MTP layer's norm, 8 x 3 experts and e_proj (16 x 16) counted apart.
        let mtp: UInt64 = 16 + 8 * 3 * 8 * 16 + 16 * 16
        #expect(rm["mtp_layers"] == .int(1) && rm["mtp_parameters"] == .uint(mtp), "\(rm)")
        #expect(rm["total_parameters"] == .uint(total + mtp) && rm["active_parameters"] == moe["active_parameters"], "\(rm)")
    }

    /// Kimi-K2 (verify/kimi_k2: config.json's model_type kimi_k2, DeepSeek-V3's names): the completeness check knows
    /// it as DeepSeek-V3 with 384 experts, and the MoE view counts them.
    @Test func kimiK2IsComplete() throws {
        let path = Fixtures.path("verify/kimi_k2")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embeddings, norm, lm_head; per layer 2 norms and 7 MLA tensors; the dense MLP (3); per MoE layer the
        // router, its correction bias, the shared expert (3) and 384 x 3 experts.
        #expect(c["expected_tensors"] == .int(3 + 3 * 9 + 3 + 2 * (2 + 3 + 384 * 3)))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["dense_layers"] == .int(1) && moe["moe_layers"] == .int(2), "\(moe)")
        #expect(moe["routed_experts"] == .int(384) && moe["experts_per_token"] == .int(8), "\(moe)")
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(moe["active_parameters"] == .uint(total - 2 * (384 - 8) * 3 * 4 * 16), "\(moe)")
    }

    /// DeepSeek-V3.2 as transformers writes it (verify/deepseek_v32, the released checkpoint's names): every tensor
    /// config.json implies, the DSA indexer's five in every layer (wq_b [index_n_heads x index_head_dim, q_lora_rank],
    /// wk, the LayerNorm k_norm's weight and bias, weights_proj) among them, at their shapes; the indexer counted as
    /// attention, so active for every token; a missing indexer tensor or one of another shape is named.
    @Test func deepseekV32IsComplete() throws {
        let path = Fixtures.path("verify/deepseek_v32")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embeddings, norm, lm_head; per layer 2 norms, 7 MLA tensors and 5 of the indexer; the dense MLP's 3; per MoE
        // layer the router, its bias, 8 x 3 experts and the shared expert's 3.
        #expect(c["expected_tensors"] == .int(3 + 3 * (2 + 7 + 5) + 3 + 2 * (2 + 8 * 3 + 3)))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["dense_layers"] == .int(1) && moe["moe_layers"] == .int(2), "\(moe)")
        #expect(moe["expert_groups"] == .int(4) && moe["topk_groups"] == .int(2) && moe["experts_per_token"] == .int(3), "\(moe)")
        // A token goes through everything (the indexers' 3 x 2,464 parameters included) but the 8 - 3 routed experts
        // (3 x 8 x 16 each) it does not use in each MoE layer.
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        let indexer = file.tensors.filter { $0.name.contains(".indexer.") }.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(indexer == 3 * (128 * 16 + 16 * 16 + 16 + 16 + 8 * 16))
        #expect(moe["total_parameters"] == .uint(total))
        #expect(moe["active_parameters"] == .uint(total - 2 * 5 * 3 * 8 * 16), "\(moe)")

        let name = "model.layers.1.self_attn.indexer.k_norm.bias"
        let dir = try Severity.rewritten("verify/deepseek_v32") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let missing = try CLI.run(["inspect", dir, "--json"])
        #expect(missing.status == 1)
        let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
        #expect(m["missing"] == .array([.string(name)]), "\(m)")
    }

    /// GLM-5 (verify/glm_moe_dsa): the indexer is expected in the "full" layers 0 and 2 only (indexer_types), not in
    /// the "shared" layer 1; the indexers count as attention, active.
    @Test func glmMoeDsaIsComplete() throws {
        let path = Fixtures.path("verify/glm_moe_dsa")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        #expect(c["expected_tensors"] == .int(3 + 3 * (2 + 7) + 2 * 5 + 3 + 2 * (2 + 8 * 3 + 3)))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(moe["active_parameters"] == .uint(total - 2 * 5 * 3 * 8 * 16), "\(moe)")
    }

    /// Qwen3-Next as transformers writes it (verify/qwen3_next): every tensor config.json implies at its shape (layers 0
    /// and 1 Gated DeltaNet by layer_types: in_proj_qkvz, in_proj_ba, conv1d [64, 1, 4], A_log, dt_bias, the gated
    /// norm, out_proj; layer 2 gated attention, q_proj twice as wide, per-head q/k norms; layer 1 dense by
    /// mlp_only_layers; MoE layers with per-expert experts, shared expert and its gate); the MTP block (mtp.*) counted
    /// apart, neither unexpected nor active; a missing A_log or in_proj_ba is named.
    @Test func qwen3NextIsComplete() throws {
        let path = Fixtures.path("verify/qwen3_next")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embeddings, norm, lm_head; 2 norms per layer; 7 DeltaNet tensors twice, 6 attention tensors once; two MoE
        // blocks of router, 8 x 3 experts, 3 shared-expert projections and its gate; one dense MLP of 3.
        #expect(c["expected_tensors"] == .int(3 + 3 * 2 + 2 * 7 + 6 + 2 * (1 + 8 * 3 + 3 + 1) + 3))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["layers"] == .int(3) && moe["dense_layers"] == .int(1) && moe["moe_layers"] == .int(2), "\(moe)")
        #expect(moe["routed_experts"] == .int(8) && moe["experts_per_token"] == .int(3) && moe["routers"] == .int(2), "\(moe)")
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let mtp = file.tensors.filter { $0.name.hasPrefix("mtp.") }.reduce(UInt64(0)) { $0 + $1.elementCount }
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(mtp > 0 && moe["mtp_layers"] == .int(1) && moe["mtp_parameters"] == .uint(mtp), "\(moe)")
        #expect(moe["total_parameters"] == .uint(total))
        // A token skips the MTP block and the 8 - 3 routed experts (3 x 8 x 16 each) it does not use in each MoE layer.
        #expect(moe["active_parameters"] == .uint(total - mtp - 2 * 5 * 3 * 8 * 16), "\(moe)")

        for name in ["model.layers.1.linear_attn.A_log", "model.layers.0.linear_attn.in_proj_ba.weight"] {
            let dir = try Severity.rewritten("verify/qwen3_next") { $0 != name }
            defer { Fixtures.removeTemporary(dir) }
            let missing = try CLI.run(["inspect", dir, "--json"])
            #expect(missing.status == 1)
            let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
            #expect(m["missing"] == .array([.string(name)]), "\(m)")
        }
    }

    /// Qwen3.5-MoE as released (verify/qwen3_5_moe): the decoder under model.language_model. with Qwen3.5's four
    /// DeltaNet projections, every layer MoE, config.json's fields read from text_config; the vision tower counted
    /// apart, neither unexpected nor active.
    @Test func qwen35MoeIsComplete() throws {
        let path = Fixtures.path("verify/qwen3_5_moe")
        let r = try CLI.run(["inspect", "--json", "--strict", path])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let c = try #require(o["completeness"]?.objectValue, "not checked")
        // embeddings, norm, lm_head; 2 norms per layer; 9 DeltaNet tensors twice, 6 attention tensors once; three MoE
        // blocks of router, 6 x 3 experts, 3 shared-expert projections and its gate.
        #expect(c["expected_tensors"] == .int(3 + 3 * 2 + 2 * 9 + 6 + 3 * (1 + 6 * 3 + 3 + 1)))
        #expect(c["missing"] == .array([]) && c["wrong_shape"] == .array([]) && c["unexpected"] == .array([]), "\(c)")
        let moe = try #require(o["moe"]?.objectValue)
        #expect(moe["layers"] == .int(3) && moe["dense_layers"] == .int(0) && moe["moe_layers"] == .int(3), "\(moe)")
        #expect(moe["routed_experts"] == .int(6) && moe["experts_per_token"] == .int(2), "\(moe)")
        let file = try SafetensorsFile(path: path + "/model.safetensors")
        let visual = file.tensors.filter { $0.name.hasPrefix("model.visual.") }.reduce(UInt64(0)) { $0 + $1.elementCount }
        let total = file.tensors.reduce(UInt64(0)) { $0 + $1.elementCount }
        #expect(visual > 0 && moe["multimodal_parameters"] == .uint(visual), "\(moe)")
        #expect(moe["active_parameters"] == .uint(total - visual - 3 * 4 * 3 * 8 * 16), "\(moe)")

        let name = "model.language_model.layers.1.linear_attn.in_proj_z.weight"
        let dir = try Severity.rewritten("verify/qwen3_5_moe") { $0 != name }
        defer { Fixtures.removeTemporary(dir) }
        let missing = try CLI.run(["inspect", dir, "--json"])
        #expect(missing.status == 1)
        let m = try #require(try JSONParser.parse(missing.stdout).objectValue?["completeness"]?.objectValue)
        #expect(m["missing"] == .array([.string(name)]), "\(m)")
    }

    /// MXFP4 blocks are checked at the shape their parameter implies: a config.json with a larger
    /// intermediate_size makes the gate_up blocks [4, 256, 2, 16] and the down blocks [4, 64, 4, 16].
    @Test func gptOssBlocksOfTheWrongShapeAreNamed() throws {
        let dir = try Severity.rewritten("quant/formats/gpt_oss-mxfp4")
        defer { Fixtures.removeTemporary(dir) }
        let config = dir + "/config.json"
        let text = String(decoding: Fixtures.readBytes(config), as: UTF8.self)
        #expect(text.contains(#""intermediate_size": 96"#))
        try FileManager.default.removeItem(atPath: config)
        try Data(text.replacingOccurrences(of: #""intermediate_size": 96"#, with: #""intermediate_size": 128"#).utf8)
            .write(to: URL(fileURLWithPath: config))
        let r = try CLI.run(["inspect", dir, "--json"])
        #expect(r.status == 1)
        let c = try #require(try JSONParser.parse(r.stdout).objectValue?["completeness"]?.objectValue)
        let wrong = (c["wrong_shape"]?.arrayValue ?? []).compactMap { $0.objectValue?["name"]?.stringValue }
        #expect(wrong.contains("model.layers.0.mlp.experts.gate_up_proj_blocks") && wrong.contains("model.layers.1.mlp.experts.down_proj_blocks"), "\(c)")
        #expect(r.stderr.contains("is [4,192,2,16], config.json makes it [4,256,2,16]"), "\(r.stderr)")
    }

    /// The same for an FP8 conversion: scales are the quantization check's, not unexpected tensors.
    @Test func anFP8ConversionIsComplete() throws {
        let out = Fixtures.temporaryDirectory() + "/fp8"
        defer { Fixtures.removeTemporary(out) }
        _ = try CLI.run(["convert", Fixtures.path("models/deepseek_v3-bf16"), out, "--to", "fp8", "-q"])
        let r = try CLI.run(["inspect", out, "--strict"])
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test func aMissingNormIsAnErrorNamingIt() throws {
        let dir = try Severity.rewritten("models/deepseek_v3-f32-sharded") { !$0.hasSuffix("layers.1.self_attn.q_a_layernorm.weight") }
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["inspect", dir, "--json"])
        #expect(r.status == 1)
        let c = try #require(try JSONParser.parse(r.stdout).objectValue?["completeness"]?.objectValue)
        #expect(c["missing"] == .array([.string("model.layers.1.self_attn.q_a_layernorm.weight")]), "\(c)")
        #expect(r.stderr.contains("[tensor_missing]"), "\(r.stderr)")
    }

    @Test func aWholeMissingExpertIsOnePattern() throws {
        let dir = try Severity.rewritten("models/qwen3_moe-f32-sharded") { !$0.hasPrefix("model.layers.2.mlp.experts.5.") }
        defer { Fixtures.removeTemporary(dir) }
        let r = try CLI.run(["inspect", dir, "--json"])
        let c = try #require(try JSONParser.parse(r.stdout).objectValue?["completeness"]?.objectValue)
        let missing = (c["missing"]?.arrayValue ?? []).compactMap(\.stringValue)
        #expect(missing.count >= 1 && missing.allSatisfy { $0.hasPrefix("model.layers.2.mlp.experts.5.") }, "\(c)")
        #expect(missing.joined().contains("down_proj") && missing.joined().contains("gate_proj") && missing.joined().contains("up_proj"))
    }

    @Test func aWrongShapeIsAnErrorAndAnExtraTensorAWarning() throws {
        let dir = try Severity.rewritten("models/qwen3_moe-f32-sharded")
        defer { Fixtures.removeTemporary(dir) }
        // Rewrite config.json with a larger moe_intermediate_size: every expert projection is now the wrong shape.
        let config = dir + "/config.json"
        let text = String(decoding: Fixtures.readBytes(config), as: UTF8.self)
        let changed = text.replacingOccurrences(of: "\"moe_intermediate_size\": 24", with: "\"moe_intermediate_size\": 32")
        #expect(changed != text)
        try Data(changed.utf8).write(to: URL(fileURLWithPath: config))
        let r = try CLI.run(["inspect", dir])
        #expect(r.status == 1)
        #expect(r.stderr.contains("[tensor_wrong_shape]") && r.stderr.contains("config.json makes it [32,64]"), "\(r.stderr)")

        let extra = try Severity.rewritten("models/qwen3_moe-f32-sharded", extra: true)
        defer { Fixtures.removeTemporary(extra) }
        // Listed in the index this time, so only the completeness check speaks.
        let index = extra + "/model.safetensors.index.json"
        let indexText = String(decoding: Fixtures.readBytes(index), as: UTF8.self)
            .replacingOccurrences(of: "\"weight_map\": {", with: "\"weight_map\": {\"model.layers.0.extra.weight\": \"model-00001-of-00005.safetensors\", ")
        try Data(indexText.utf8).write(to: URL(fileURLWithPath: index))
        let w = try CLI.run(["inspect", extra])
        #expect(w.status == 0, "\(w.stderr)")
        #expect(w.stdout.contains("model.layers.0.extra.weight: not described by config.json"), "\(w.stdout)")
    }
}

@Suite struct InspectIgnoresNoOption {
    /// --threads without --scan or --checksum would do nothing: refused, exit 2.
    @Test func threadsWithoutADataPassIsRefused() throws {
        let r = try CLI.run(["inspect", Fixtures.path("models/mixtral-bf16"), "--threads", "2"])
        #expect(r.status == 2 && r.stdout.isEmpty)
        #expect(r.stderr.hasPrefix("error: --threads sets the cores --scan and --checksum read with"), "\(r.stderr)")
        #expect(try CLI.run(["inspect", Fixtures.path("models/mixtral-bf16"), "--threads", "2", "--scan", "-q"]).status == 0)
    }
}
