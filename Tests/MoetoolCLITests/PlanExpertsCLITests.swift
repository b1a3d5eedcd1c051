import FixtureSupport
import Foundation
import StrictJSON
import Testing

@Suite struct PlanExpertsCommand {
    func ints(_ v: JSONValue?) -> [[Int]] { v!.arrayValue!.map { $0.arrayValue!.map { Int($0.doubleValue!) } } }

    /// The EPLB README example through the command line, with the baseline algorithm: the
    /// published phy2log, and the file written whole.
    @Test func readmeExampleAsEPLB() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/placement.json"
        let r = try CLI.run(["plan-experts", Fixtures.path("profiles/readme.json"), "--gpus", "8", "--nodes", "2", "--slots", "16",
                             "--groups", "4", "--policy", "hierarchical", "--algorithm", "eplb", "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        let doc = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(out), as: UTF8.self)).objectValue)
        #expect(doc["schema"]?.stringValue == "moetool.placement/1")
        #expect(ints(doc["phy2log"]) == [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                                         [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]])
        #expect(ints(doc["logcnt"]) == [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1], [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["placement.json"])
        #expect(r.stdout.contains("wrote \(out)"))
    }

    /// A DeepSeek-V3 config supplies experts, groups, top-k and topk_group; a checkpoint the
    /// bytes per expert; the report is JSON with the baseline beside it.
    @Test func configAndCheckpoint() throws {
        let model = Fixtures.path("models/deepseek_v3-f32-sharded")
        let r = try CLI.run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json.zst"), "--config", model, "--checkpoint", model,
                             "--gpus", "8", "--gpus-per-node", "4", "--redundant-per-gpu", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["schema"]?.stringValue == "moetool.plan-experts/1")
        #expect(o["slots"]?.uint64Value == 32 && o["groups"]?.uint64Value == 8 && o["nodes"]?.uint64Value == 2)
        // The routing the metrics used comes from config.json and is recorded with them.
        let topk = try #require(o["topk"]?.uint64Value), topkGroup = try #require(o["topk_group"]?.uint64Value)
        #expect(topk == 4 && topkGroup == 4, "topk \(topk), topk_group \(topkGroup)")
        #expect(o["previous"] == .null && o["output_format"] == .null)
        let m = try #require(o["metrics"]?.objectValue)
        // One routed expert of the tiny model: gate, up (24x64) and down (64x24), float32.
        // (Unwrapped first: comparing an optional with a folded constant inside #expect trips
        // AddressSanitizer in the Swift 6.3 runtime's AnyHashable conversion.)
        let perExpert: UInt64 = 3 * 24 * 64 * 4
        let bytesPerExpert = try #require(m["bytes_per_expert"]?.uint64Value)
        let redundantBytes = try #require(m["redundant_bytes"]?.uint64Value)
        let duplicates = try #require(m["colocated_duplicates"]?.uint64Value)
        #expect(bytesPerExpert == perExpert)
        #expect(redundantBytes == perExpert * 16 * 2)
        #expect(duplicates == 0)
        let nodes = try #require(m["nodes_per_token"]?.doubleValue)
        #expect(nodes >= 1 && nodes <= 2)
        let ours = try #require(m["mean_imbalance"]?.doubleValue)
        let base = try #require(o["baseline"]?.objectValue?["mean_imbalance"]?.doubleValue)
        #expect(ours <= base + 1e-6)
        #expect(m["layers"]?.arrayValue?.count == 2)
    }

    /// DeepSeek-V3.2's config.json (verify/deepseek_v32: mlp_layer_types dense, sparse, sparse; 8 experts in 4 groups
    /// keeping 2, top-3): the routing recorded with the metrics, and SGLang's map a row per decoder layer with the
    /// dense layer 0's trivial row.
    @Test func deepseekV32Config() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let profile = dir + "/loads.json"
        let loads = (0..<2).map { l in "[" + (0..<8).map { String(100 + 37 * (($0 * 5 + l * 3) % 8)) }.joined(separator: ",") + "]" }
        #expect(FileManager.default.createFile(atPath: profile, contents: Data("{\"layers\":[\(loads.joined(separator: ","))]}".utf8)))
        let config = Fixtures.path("verify/deepseek_v32")
        let r = try CLI.run(["plan-experts", profile, "--config", config, "--gpus", "4", "--slots", "12", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["groups"]?.uint64Value == 4 && o["topk"]?.uint64Value == 3 && o["topk_group"]?.uint64Value == 2, "\(o)")
        let out = dir + "/sglang.json"
        let s = try CLI.run(["plan-experts", profile, "--config", config, "--gpus", "4", "--ep-num-redundant-experts", "4", "--format", "sglang", "-o", out])
        #expect(s.status == 0, "\(s.stderr)")
        let map = ints(try JSONParser.parse(String(decoding: Fixtures.readBytes(out), as: UTF8.self)).objectValue?["physical_to_logical_map"])
        #expect(map.count == 3 && map.allSatisfy { $0.count == 12 })
        #expect(map[0] == (0..<12).map { $0 % 8 })
    }

    /// SGLang's format out, then back in as --previous: a row per decoder layer (the dense layer 0 holds
    /// SGLang's trivial row), experts + --ep-num-redundant-experts slots, and the same loads need no moves.
    @Test func sglangRoundTrip() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = [Fixtures.path("profiles/tiny_dsv3.json"), "--config", Fixtures.path("models/deepseek_v3-bf16"),
                    "--gpus", "8", "--nodes", "2", "--ep-num-redundant-experts", "8"]
        let first = try CLI.run(["plan-experts"] + args + ["--format", "sglang", "-o", dir + "/sglang.json"])
        #expect(first.status == 0, "\(first.stderr)")
        let doc = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(dir + "/sglang.json"), as: UTF8.self)).objectValue)
        #expect(doc.keys == ["physical_to_logical_map"])  // SGLang passes every member to init_by_mapping as an argument
        let map = ints(doc["physical_to_logical_map"])
        #expect(map.count == 3)  // num_hidden_layers, the dense layer 0 included
        #expect(map.allSatisfy { $0.count == 24 })  // 16 experts + 8 redundant
        #expect(map[0] == (0..<24).map { $0 % 16 })
        let moetool = try CLI.run(["plan-experts"] + args + ["-o", dir + "/moetool.json"])
        #expect(moetool.status == 0, "\(moetool.stderr)")
        let own = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(dir + "/moetool.json"), as: UTF8.self)).objectValue)
        #expect(Array(map[1...]) == ints(own["phy2log"]))
        let again = try CLI.run(["plan-experts"] + args + ["--previous", dir + "/sglang.json", "--json"])
        #expect(again.status == 0, "\(again.stderr)")
        let o = try #require(try JSONParser.parse(again.stdout).objectValue)
        #expect(o["metrics"]?.objectValue?["moved_slots"]?.uint64Value == 0)
    }

    /// Llama 4's config.json (verify/llama4: 4 layers, MoE every second one, 4 experts, top-1, all in text_config):
    /// experts, top-k and one group read from it, and SGLang's file has a row per decoder layer, the dense layers 0 and
    /// 2 holding the trivial row and the profile's two layers going to layers 1 and 3.
    @Test func llama4Config() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let profile = dir + "/loads.json"
        #expect(FileManager.default.createFile(atPath: profile, contents: Data(#"{"layers":[[90,10,40,60],[5,70,20,30]]}"#.utf8)))
        let args = [profile, "--config", Fixtures.path("verify/llama4"), "--gpus", "2", "--ep-num-redundant-experts", "2"]
        let r = try CLI.run(["plan-experts"] + args + ["--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["topk"] == .int(1) && o["experts"] == .int(4) && o["groups"] == .int(1) && o["layers"] == .int(2), "\(o)")
        let sglang = try CLI.run(["plan-experts"] + args + ["--format", "sglang", "-o", dir + "/sglang.json"])
        #expect(sglang.status == 0, "\(sglang.stderr)")
        let doc = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(dir + "/sglang.json"), as: UTF8.self)).objectValue)
        let map = ints(doc["physical_to_logical_map"])
        #expect(map.count == 4)
        #expect(map[0] == [0, 1, 2, 3, 0, 1] && map[2] == map[0])
        let own = try CLI.run(["plan-experts"] + args + ["-o", dir + "/moetool.json"])
        #expect(own.status == 0, "\(own.stderr)")
        let plan = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(dir + "/moetool.json"), as: UTF8.self)).objectValue)
        #expect([map[1], map[3]] == ints(plan["phy2log"]))
    }

    /// Qwen3-Next's config.json (num_experts 8, top-3, mlp_only_layers [1]) and Qwen3.5-MoE's (its fields in
    /// text_config: 6 experts, top-2, every layer MoE) give the plan its experts, top-k and MoE layers: SGLang's file
    /// has a row per decoder layer, the dense layer's the trivial one.
    @Test(arguments: [("qwen3_next", 8, 3, [0, 2]), ("qwen3_5_moe", 6, 2, [0, 1, 2])])
    func hybridConfigs(_ fixture: String, _ experts: Int, _ topk: Int, _ moeLayers: [Int]) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let loads = moeLayers.indices.map { l in (0..<experts).map { e in String((e * 37 + l * 11) % 23 + 1) }.joined(separator: ",") }
        let profile = dir + "/loads.json"
        #expect(FileManager.default.createFile(atPath: profile, contents: Data("{\"layers\":[[\(loads.joined(separator: "],["))]]}".utf8)))
        let args = [profile, "--config", Fixtures.path("verify/" + fixture), "--gpus", "2", "--ep-num-redundant-experts", "2"]
        let r = try CLI.run(["plan-experts"] + args + ["--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["topk"]?.uint64Value == UInt64(topk) && o["slots"]?.uint64Value == UInt64(experts + 2), "\(o)")
        #expect(o["metrics"]?.objectValue?["layers"]?.arrayValue?.count == moeLayers.count)
        let out = try CLI.run(["plan-experts"] + args + ["--format", "sglang", "-o", dir + "/sglang.json"])
        #expect(out.status == 0, "\(out.stderr)")
        let doc = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(dir + "/sglang.json"), as: UTF8.self)).objectValue)
        let map = ints(doc["physical_to_logical_map"])
        #expect(map.count == 3)
        for l in 0..<3 where !moeLayers.contains(l) { #expect(map[l] == (0..<(experts + 2)).map { $0 % experts }) }
        #expect(moeLayers.allSatisfy { Set(map[$0]) == Set(0..<experts) })
    }

    /// What SGLang's loader would refuse is refused here first, naming the flag or the file name to use.
    @Test func sglangExpectationsChecked() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let profile = Fixtures.path("profiles/tiny_dsv3.json"), config = Fixtures.path("models/deepseek_v3-bf16")
        let slots = try CLI.run(["plan-experts", profile, "--config", config, "--gpus", "8", "--slots", "24", "--format", "sglang", "-o", dir + "/p.json"])
        #expect(slots.status == 1)
        #expect(slots.stderr.hasPrefix("error: 24 slots per layer, but SGLang makes 16 (16 experts + --ep-num-redundant-experts 0) and refuses the file: run SGLang with --ep-num-redundant-experts 8, and give moetool the same flag [sglang_incompatible]"), "\(slots.stderr)")
        let noConfig = try CLI.run(["plan-experts", profile, "--gpus", "8", "--format", "sglang", "-o", dir + "/p.json"])
        #expect(noConfig.status == 1)
        #expect(noConfig.stderr.hasPrefix("error: --format sglang needs --config with num_hidden_layers"), "\(noConfig.stderr)")
        let name = try CLI.run(["plan-experts", profile, "--config", config, "--gpus", "8", "--format", "sglang", "-o", dir + "/p.txt"])
        #expect(name.status == 2)
        #expect(name.stderr.contains("name the output *.json"), "\(name.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == [])
    }

    /// An SGLang dump (torch.save, with its dense layer 0) plans as the JSON profile of the same loads;
    /// two ranks' dumps sum to it; the malicious pickle is refused and runs nothing.
    @Test func sglangDumpPlannedDirectly() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = Fixtures.path("models/deepseek_v3-bf16")
        let dumps = Fixtures.path("profiles/sglang/")
        func phy2log(_ profiles: [String], _ extra: [String] = []) throws -> [[Int]] {
            let out = dir + "/p\(UUID().uuidString).json"
            let r = try CLI.run(["plan-experts"] + profiles + ["--gpus", "4", "--redundant-per-gpu", "1", "-o", out] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return ints(try JSONParser.parse(String(decoding: Fixtures.readBytes(out), as: UTF8.self)).objectValue?["phy2log"])
        }
        let json = try phy2log([Fixtures.path("profiles/tiny_dsv3.json")])
        #expect(try phy2log([dumps + "single/expert_distribution_recorder_1764756000.25.pt"], ["--config", config]) == json)
        #expect(try phy2log([dumps + "single.pt.zst"]) == json)
        #expect(try phy2log([dumps + "ranks/expert_distribution_recorder_1764756000.25_0.pt", dumps + "ranks/expert_distribution_recorder_1764756000.25_1.pt"], ["--config", config]) == json)
        let note = try CLI.run(["plan-experts", dumps + "single/expert_distribution_recorder_1764756000.25.pt", "--gpus", "4"])
        #expect(note.stderr == "note: decoder layer 0 of the dumps had no routed token: taken as dense and left out (give --config to check)\n")
        let marker = "/tmp/moetool-malicious-pickle-ran"
        unlink(marker)
        let evil = try CLI.run(["plan-experts", dumps + "refused/malicious.pt", "--gpus", "4", "--json"])
        #expect(evil.status == 1)
        #expect(errorID(evil.stdout) == "invalid_torch_file", "\(evil.stdout)")
        #expect(evil.stderr.contains("global posix.system is not one torch.load(weights_only=True) allows; nothing was run (pickle_global_refused)"), "\(evil.stderr)")
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test(arguments: [
        (["--gpus", "8", "--slots", "8"], "slots (8) must be at least the number of logical experts (16)"),
        (["--gpus", "6", "--slots", "32"], "must be a multiple of the GPU count (6)"),
        (["--gpus", "8", "--nodes", "3", "--slots", "48"], "GPUs (8) must be a multiple of the node count (3)"),
        (["--gpus", "6", "--nodes", "3", "--slots", "48", "--policy", "hierarchical"], "groups (8) must be divisible by nodes (3)"),
        (["--gpus", "8", "--groups", "5"], "experts (16) must be divisible by the expert groups (5)"),
    ])
    func impossibleParameters(_ extra: [String], _ message: String) throws {
        let r = try CLI.run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--groups", "8"] + extra)
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr.contains(message), "\(r.stderr)")
    }

    /// A bad profile: exit 1, the file and the problem named, an existing output untouched.
    @Test func badProfileLeavesOutputAlone() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/placement.json"
        try "keep me".write(toFile: out, atomically: false, encoding: .utf8)
        let r = try CLI.run(["plan-experts", Fixtures.path("profiles/malformed/negative.json"), "--gpus", "1", "-o", out])
        #expect(r.status == 1)
        #expect(r.stderr.contains("negative.json: layers[0][1]: load -2 is negative"), "\(r.stderr)")
        #expect(String(decoding: Fixtures.readBytes(out), as: UTF8.self) == "keep me")
        let mismatch = try CLI.run(["plan-experts", Fixtures.path("profiles/readme.json"), "--gpus", "4",
                                    "--config", Fixtures.path("models/deepseek_v3-f32-sharded")])
        #expect(mismatch.status == 1)
        #expect(mismatch.stderr.contains("the profile has 12 experts per layer but the config has 16"), "\(mismatch.stderr)")
    }

    @Test func usageErrors() throws {
        let r = try CLI.run(["plan-experts", Fixtures.path("profiles/readme.json"), "--gpus", "8", "--nodes", "2", "--gpus-per-node", "4"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("--nodes or --gpus-per-node"))
    }

    /// No option is silently ignored: --format without -o, --per-layer with --json, and
    /// --topk-group without the experts per token are refused before any work.
    @Test func optionsThatWouldDoNothingRefused() throws {
        let profile = Fixtures.path("profiles/tiny_dsv3.json")
        for (flags, message) in [(["--format", "sglang"], "--format needs -o"), (["--format", "moetool"], "--format needs -o"),
                                 (["--per-layer", "--json"], "--per-layer is for the text report")] {
            let r = try CLI.run(["plan-experts", profile, "--gpus", "4"] + flags)
            #expect(r.status == 2, "\(flags): \(r.stderr)")
            #expect(r.stderr.hasPrefix("error: \(message)"), "\(flags): \(r.stderr)")
            // With --json the error is a moetool.error/1 document on stdout as well; without, stdout stays empty.
            #expect(flags.contains("--json") ? errorID(r.stdout) == "usage" : r.stdout.isEmpty, "\(flags): \(r.stdout)")
        }
        let group = try CLI.run(["plan-experts", profile, "--gpus", "4", "--topk-group", "2"])
        #expect(group.status == 1 && group.stdout.isEmpty)
        #expect(group.stderr == "error: --topk-group needs the experts per token: give --topk or --config\n", "\(group.stderr)")
        let threads = try CLI.run(["plan-experts", profile, "--gpus", "4", "--threads", "-1"])
        #expect(threads.status == 2 && threads.stderr.contains("--threads must be 0"), "\(threads.stderr)")
    }

    /// A placement error is one line: the single prefix, the file, the problem, the rule's id and hint.
    @Test func errorLineCarriesRuleAndHint() throws {
        let path = Fixtures.path("profiles/malformed/negative.json")
        let r = try CLI.run(["plan-experts", path, "--gpus", "1"])
        #expect(r.status == 1 && r.stdout.isEmpty)
        #expect(r.stderr == "error: \(path): layers[0][1]: load -2 is negative [invalid_load]; loads count tokens: finite numbers, 0 or more\n")
        let nodes = try CLI.run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "6", "--gpus-per-node", "4"])
        #expect(nodes.status == 1)
        #expect(nodes.stderr.hasPrefix("error: GPUs (6) must be a multiple of the GPUs per node (4): every node has the same number of GPUs [invalid_topology]; "), "\(nodes.stderr)")
    }

    /// One layer is "1 layer"; a tiny model's replicas are shown in KiB and MiB, not as 0.0 GiB.
    @Test func reportReadsRightForSmallCounts() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try #"{"layers": [[5, 1, 1, 1]]}"#.write(toFile: dir + "/one.json", atomically: false, encoding: .utf8)
        let one = try CLI.run(["plan-experts", dir + "/one.json", "--gpus", "1"])
        #expect(one.status == 0, "\(one.stderr)")
        #expect(one.stdout.hasPrefix("\(dir)/one.json: 1 layer x 4 experts -> 4 slots on 1 GPU (1 node x 1), 1 group\n"), "\(one.stdout)")
        #expect(one.stdout.contains("\nreplicas: 0 redundant per layer, 0 in all\n"), "\(one.stdout)")
        let model = Fixtures.path("models/deepseek_v3-f32-sharded")
        let tiny = try CLI.run(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "8", "--slots", "24", "--checkpoint", model])
        #expect(tiny.status == 0, "\(tiny.stderr)")
        #expect(tiny.stdout.contains("\nreplicas: 8 redundant per layer, 16 in all; 0.3 MiB (36.0 KiB per GPU at 18.0 KiB per expert)\n"), "\(tiny.stdout)")
    }

    /// An output that is an input, or inside one, is refused before any work (exit 1, naming both),
    /// whatever path reaches it: the profile itself, a symlink or a hard link to it, --previous,
    /// the config, a file inside --checkpoint. Every input is byte-identical afterwards.
    @Test func outputNeverOverwritesAnInput() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fm = FileManager.default
        let profile = dir + "/P.json"
        try fm.copyItem(atPath: Fixtures.path("profiles/tiny_dsv3.json"), toPath: profile)
        try fm.createSymbolicLink(atPath: dir + "/symlink.json", withDestinationPath: profile)
        try fm.linkItem(atPath: profile, toPath: dir + "/hardlink.json")
        let checkpoint = dir + "/CK"
        try fm.createDirectory(atPath: checkpoint, withIntermediateDirectories: false)
        try fm.copyItem(atPath: Fixtures.path("models/deepseek_v3-f32-sharded/config.json"), toPath: checkpoint + "/config.json")
        let base = ["plan-experts", profile, "--gpus", "4", "--groups", "8"]
        let prepared = try CLI.run(base + ["-o", dir + "/previous.json"])
        #expect(prepared.status == 0, "\(prepared.stderr)")
        let watched = [profile, dir + "/previous.json", checkpoint + "/config.json"]
        let before = watched.map(Fixtures.readBytes)
        let cases: [(extra: [String], output: String, input: String)] = [
            ([], profile, profile),
            ([], dir + "/symlink.json", profile),
            ([], dir + "/hardlink.json", profile),
            (["--previous", dir + "/previous.json"], dir + "/previous.json", dir + "/previous.json"),
            (["--config", checkpoint + "/config.json"], checkpoint + "/config.json", checkpoint + "/config.json"),
            (["--checkpoint", checkpoint], checkpoint + "/config.json", checkpoint),
            (["--config", checkpoint], checkpoint + "/placement.json", checkpoint),
        ]
        for c in cases {
            let r = try CLI.run(base + c.extra + ["-o", c.output])
            #expect(r.status == 1, "-o \(c.output): \(r.stdout)")
            #expect(r.stderr.contains("-o \(c.output) is"), "\(r.stderr)")
            #expect(r.stderr.contains("input \(c.input)"), "\(r.stderr)")
            #expect(r.stdout.isEmpty)
        }
        #expect(watched.map(Fixtures.readBytes) == before)
        #expect(!fm.fileExists(atPath: checkpoint + "/placement.json"))
    }

    /// Control characters in a profile's name, in a JSON key or a CSV field reach the terminal
    /// escaped, never as the bytes that would move the cursor or clear the screen.
    @Test func fileDerivedTextIsEscaped() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hostile = dir + "/loads\u{1B}[2J\u{1B}]0;owned\u{07}.json"
        try FileManager.default.copyItem(atPath: Fixtures.path("profiles/tiny_dsv3.json"), toPath: hostile)
        let ok = try CLI.run(["plan-experts", hostile, "--gpus", "4", "-o", hostile + ".out"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("loads\\u{1b}[2J\\u{1b}]0;owned\\u{7}.json: 2 layers x 16 experts"), "\(ok.stdout)")
        #expect(ok.stdout.contains("wrote \(dir)/loads\\u{1b}[2J"), "\(ok.stdout)")
        let key = dir + "/key.json"
        try #"{"layers": [[1, 2]], "\u001b[2J": 1, "\u001b[2J": 2}"#.write(toFile: key, atomically: false, encoding: .utf8)
        let field = dir + "/field.csv"
        try "layer,expert,load\n0,0,\u{1B}[2Jmany\n".write(toFile: field, atomically: false, encoding: .utf8)
        for (file, message) in [(key, "member \"\\u{1b}[2J\" appears twice"), (field, "load \"\\u{1b}[2Jmany\" is not a number")] {
            let r = try CLI.run(["plan-experts", file, "--gpus", "1"])
            #expect(r.status == 1)
            #expect(r.stderr.contains(message), "\(r.stderr)")
            #expect(!r.stderr.unicodeScalars.contains { $0.value == 0x1B })
        }
        #expect(!(ok.stdout + ok.stderr).unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 })
    }

    /// A placement made for 4 GPUs x 4 slots is not a starting point for 16 GPUs x 1 slot (the
    /// same 16 slots per layer, on other GPUs): refused, exit 1, naming what differs.
    @Test func previousOfAnotherDeploymentRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let profile = Fixtures.path("profiles/tiny_dsv3.json")
        let made = try CLI.run(["plan-experts", profile, "--gpus", "4", "--slots", "16", "-o", dir + "/4x4.json"])
        #expect(made.status == 0, "\(made.stderr)")
        let r = try CLI.run(["plan-experts", profile, "--gpus", "16", "--slots", "16", "--previous", dir + "/4x4.json"])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stderr == "error: \(dir)/4x4.json: the previous placement is for 4 GPUs (num_gpus), this plan for 16 (16 GPUs x 1 slot, 16 experts, 2 layers) [other_deployment]; re-plan from a placement of the same deployment, or plan without a previous placement\n", "\(r.stderr)")
        let same = try CLI.run(["plan-experts", profile, "--gpus", "4", "--slots", "16", "--previous", dir + "/4x4.json", "--json"])
        #expect(same.status == 0, "\(same.stderr)")
        // The maps are read slot by slot and refused where they leave the plan's shape.
        for (text, message) in [
            (#"{"physical_to_logical_map": [[0, 1], [0, 1], [0, 1]], "x": {"y": [1, [2]]}}"#, "layer 0 must list 16 slots, it lists 2"),
            (#"{"meta": {"deep": [[1, 2], {"k": null}]}, "phy2log": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, "x"]]}"#, "layer 0 slot 15: \"x\" is not an expert index below 16"),
            (#"{"phy2log": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0]]}"#, "layer 0 must list 16 slots, it lists more"),
        ] {
            try text.write(toFile: dir + "/bad.json", atomically: false, encoding: .utf8)
            let r = try CLI.run(["plan-experts", profile, "--gpus", "4", "--slots", "16", "--previous", dir + "/bad.json"])
            #expect(r.status == 1)
            #expect(r.stderr.contains("bad.json: \(message)"), "\(r.stderr)")
        }
    }

    /// Numbers from a config or a flag are range-checked before any arithmetic: a config's
    /// num_experts_per_tok of 2^63 - 1 trapped, a --topk of 10^11 allocated 800 GB. File values
    /// exit 1 naming the file and key; flags out of range exit 2; a flag beyond the profile exits 1.
    @Test func outOfRangeNumbersRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let profile = Fixtures.path("profiles/tiny_dsv3.json")
        let config = String(decoding: Fixtures.readBytes(Fixtures.path("models/deepseek_v3-f32-sharded/config.json")), as: UTF8.self)
        let cases: [(key: String, value: String, message: String)] = [
            ("num_experts_per_tok", "9223372036854775807", "num_experts_per_tok is 9223372036854775807; a token picks 1 to 16 experts: fix the config or give --topk"),
            ("topk_group", "1000", "topk_group is 1000; a token uses 1 to 8 groups (n_group): fix the config or give --topk-group"),
            ("n_group", "4611686018427387904", "n_group is 4611686018427387904; it must be 1 to the experts per layer (16)"),
            ("n_routed_experts", "9223372036854775807", "n_routed_experts is 9223372036854775807; moetool plans 1 to 65536 experts per layer"),
        ]
        for c in cases {
            let pattern = try Regex("\"\(c.key)\": *[0-9]+")
            let edited = config.replacing(pattern, with: "\"\(c.key)\": \(c.value)")
            #expect(edited != config, "\(c.key) is in the fixture config")
            let path = dir + "/\(c.key).json"
            try edited.write(toFile: path, atomically: false, encoding: .utf8)
            let r = try CLI.run(["plan-experts", profile, "--gpus", "4", "--config", path])
            #expect(r.status == 1, "\(c.key): \(r.stdout)")
            #expect(r.stderr.contains("\(path): \(c.message)"), "\(r.stderr)")
        }
        for flags in [["--topk", "100000000000"], ["--topk", "1e11"], ["--topk-group", "9223372036854775807"], ["--groups", "100000000"]] {
            let r = try CLI.run(["plan-experts", profile, "--gpus", "4"] + flags)
            #expect(r.status == 2, "\(flags): \(r.stderr)")
        }
        let beyond = try CLI.run(["plan-experts", profile, "--gpus", "4", "--topk", "17"])
        #expect(beyond.status == 1)
        #expect(beyond.stderr.contains("top-k (17) must be 1 to the experts per layer (16)"), "\(beyond.stderr)")
    }

    /// Loads whose sums overflow are refused (exit 1, file and layer named) rather than planned
    /// into "-nan" in the report and 0 in the placement file.
    @Test func overflowingLoadsNeverReachTheOutput() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let profile = dir + "/huge.json"
        try #"{"layers": [[1e308, 1e308, 1e308, 1e308]]}"#.write(toFile: profile, atomically: false, encoding: .utf8)
        for extra in [[], ["--json"]] {
            let r = try CLI.run(["plan-experts", profile, "--gpus", "2", "-o", dir + "/placement.json"] + extra)
            #expect(r.status == 1)
            #expect(extra.isEmpty ? r.stdout.isEmpty : errorID(r.stdout) == "layer_total_too_large", "\(r.stdout)")
            #expect(r.stderr.contains("huge.json: layer 0: the loads add up to more than the largest float"), "\(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/placement.json"))
    }
}

/// The id of a moetool.error/1 document (nil when `text` is not one).
func errorID(_ text: String) -> String? {
    guard let o = try? JSONParser.parse(text).objectValue, o["schema"]?.stringValue == "moetool.error/1" else { return nil }
    return o["error"]?.objectValue?["id"]?.stringValue
}

/// plan-experts `--config` for each architecture verify runs: experts, groups and top-k from the fixture's own
/// config.json (under whatever key the architecture uses), MoE layers told apart from dense ones, and SGLang's file
/// with a row for every decoder layer (the dense ones trivial) and every expert placed in each MoE row.
@Suite struct PlanExpertsArchitectures {
    /// fixture, its routed experts, its MoE layers (from the fixture's recipe, not from moetool), its decoder layers.
    static let architectures: [(String, Int, [Int], Int)] = [
        ("verify/glm4_moe", 12, [1, 2], 3), ("verify/minimax_m2", 8, [0, 1], 2), ("verify/gpt_oss", 4, [0, 1], 2),
        ("verify/kimi_k2", 384, [1, 2], 3),
        // DeepSeek-V4: every layer MoE, the hash-routed first one too (tid2eid fixes its choice, not its load).
        ("verify/deepseek_v4", 8, [0, 1, 2], 3),
    ]

    @Test(arguments: architectures)
    func sglangRowsForEveryDecoderLayer(_ arch: (String, Int, [Int], Int)) throws {
        let (fixture, experts, moeLayers, layers) = arch
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Loads for the MoE layers only, as a JSON profile has them: uneven, deterministic.
        let rows = moeLayers.map { l in (0..<experts).map { e in String(1 + (e * 7919 + l * 104729) % 997) }.joined(separator: ",") }
        let profile = dir + "/loads.json"
        try #"{"layers":[\#(rows.map { "[\($0)]" }.joined(separator: ","))]}"#.write(toFile: profile, atomically: false, encoding: .utf8)
        let redundant = 4
        let out = dir + "/sglang.json"
        let r = try CLI.run(["plan-experts", profile, "--config", Fixtures.path(fixture), "--gpus", "4",
                             "--ep-num-redundant-experts", String(redundant), "--format", "sglang", "-o", out])
        #expect(r.status == 0, "\(fixture): \(r.stderr)")
        let doc = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(out), as: UTF8.self)).objectValue)
        let map = doc["physical_to_logical_map"]!.arrayValue!.map { $0.arrayValue!.map { Int($0.doubleValue!) } }
        #expect(map.count == layers, "\(fixture): a row per decoder layer")
        for (l, row) in map.enumerated() {
            #expect(row.count == experts + redundant, "\(fixture) layer \(l)")
            if moeLayers.contains(l) {
                #expect(Set(row) == Set(0..<experts), "\(fixture) layer \(l): every expert placed")
            } else {
                #expect(row == (0..<(experts + redundant)).map { $0 % experts }, "\(fixture) layer \(l): SGLang's trivial row")
            }
        }
        let json = try CLI.run(["plan-experts", profile, "--config", Fixtures.path(fixture), "--gpus", "4", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let o = try #require(try JSONParser.parse(json.stdout).objectValue)
        #expect(o["metrics"]?.objectValue?["layers"]?.arrayValue?.count == moeLayers.count, "\(fixture)")
    }
}
