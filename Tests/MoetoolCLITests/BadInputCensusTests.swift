import FixtureSupport
import Foundation
import StrictJSON
import Testing

/// Every malformed fixture, fed to every command that reads that kind of file: exit status 1 (not a
/// crash, not a usage error), a message on stderr, nothing written, and an answer within a bound.
@Suite struct BadInputCensus {
    static let malformedFiles: [String] = {
        let dir = Fixtures.path("malformed")
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.hasSuffix(".safetensors") }.sorted().map { dir + "/" + $0 }
    }()

    /// The broken checkpoint directories (those of severity "warning" load correctly and are not bad input).
    static let malformedCheckpoints: [String] = {
        let dir = Fixtures.path("malformed/checkpoints")
        let warnings = Set(Fixtures.manifest("malformed/checkpoints/manifest.json")
            .filter { $0["severity"]?.stringValue == "warning" }.compactMap { $0["dir"]?.stringValue })
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted().compactMap { name in
            var isDir: ObjCBool = false
            guard !warnings.contains(name) else { return nil }
            return FileManager.default.fileExists(atPath: dir + "/" + name, isDirectory: &isDir) && isDir.boolValue ? dir + "/" + name : nil
        }
    }()

    static let malformedProfiles: [String] = ["profiles/malformed", "profiles/sglang/refused"].flatMap { relative in
        let dir = Fixtures.path(relative)
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted().map { dir + "/" + $0 }
    }

    /// Runs one command on a bad input and checks the answer.
    func refuses(_ arguments: [String], output: String? = nil, seconds limit: Double = 20) throws {
        let start = Date()
        let r = try CLI.run(arguments)
        let took = Date().timeIntervalSince(start)
        let what = arguments.joined(separator: " ")
        #expect(r.status == 1, "\(what): exit \(r.status)\n\(r.stderr)")
        #expect(!r.stderr.isEmpty, "\(what): no message")
        #expect(took < limit, "\(what): \(took) s")
        if let output { #expect(!FileManager.default.fileExists(atPath: output), "\(what): wrote \(output)") }
    }

    @Test func counts() {
        #expect(Self.malformedFiles.count >= 40)
        #expect(Self.malformedCheckpoints.count >= 11)
        #expect(Self.malformedProfiles.count >= 17)
    }

    @Test(arguments: malformedFiles)
    func malformedSafetensors(_ path: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try refuses(["inspect", path])
        try refuses(["inspect", "--json", path])
        try refuses(["convert", path, dir + "/out", "--to", "fp8"], output: dir + "/out/model.safetensors")
        try refuses(["compress", path, dir + "/c.stz"], output: dir + "/c.stz")
        try refuses(["decompress", path, dir + "/d.safetensors"], output: dir + "/d.safetensors")
        try refuses(["verify", path])
    }

    @Test(arguments: malformedCheckpoints)
    func malformedCheckpoint(_ path: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try refuses(["inspect", path])
        try refuses(["convert", path, dir + "/out", "--to", "fp8"], output: dir + "/out/model.safetensors.index.json")
        try refuses(["verify", path])
        try refuses(["plan-experts", Fixtures.path("profiles/tiny_dsv3.json"), "--gpus", "8", "--slots", "16", "--checkpoint", path])
    }

    @Test(arguments: malformedProfiles)
    func malformedProfile(_ path: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try refuses(["plan-experts", path, "--gpus", "2", "-o", dir + "/p.json"], output: dir + "/p.json")
        try refuses(["plan-experts", path, "--gpus", "2", "--json"])
    }

    /// Compressed shards cut or damaged at many places: decompress and inspect refuse each.
    @Test func damagedCompressedShards() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let packed = dir + "/m.stz"
        let c = try CLI.run(["compress", Fixtures.path("models/mixtral-bf16/model.safetensors"), packed, "-q"])
        #expect(c.status == 0)
        let bytes = Fixtures.readBytes(packed)
        for (i, cut) in [1, 8, 23, 24, 100, bytes.count / 3, bytes.count / 2, bytes.count - 65, bytes.count - 1].enumerated() {
            let p = dir + "/cut\(i).stz"
            #expect(FileManager.default.createFile(atPath: p, contents: Data(bytes.prefix(cut))))
            try refuses(["decompress", p, dir + "/out\(i)"], output: dir + "/out\(i)")
        }
        for (i, at) in [9, 13, 17, 30, bytes.count / 2, bytes.count - 100, bytes.count - 200, bytes.count - 40, bytes.count - 20, bytes.count - 3].enumerated() {
            var damaged = bytes
            damaged[at] ^= 0xA5
            let p = dir + "/flip\(i).stz"
            #expect(FileManager.default.createFile(atPath: p, contents: Data(damaged)))
            try refuses(["decompress", p, dir + "/flipped\(i)"], output: dir + "/flipped\(i)")
        }
    }

    /// Configs that disagree with the weights, or that are impossible: verify answers with an error
    /// naming the field or tensor instead of dividing by zero or indexing out of range.
    @Test(arguments: [
        ("num_key_value_heads", "0", "num_key_value_heads 0 must be positive"),
        ("num_attention_heads", "8", "q_proj.weight is [64, 64], but the model needs [128, 64]"),
        ("hidden_size", "32", "model.embed_tokens.weight is [512, 64]; config.json says [512, 32]"),
        ("head_dim", "7", "head_dim 7 must be a positive even number"),
    ])
    func configsThatDisagreeWithTheWeights(_ field: String, _ value: String, _ message: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("models/qwen3_moe-bf16")
        try FileManager.default.copyItem(atPath: source + "/model.safetensors", toPath: dir + "/model.safetensors")
        var config = String(decoding: Fixtures.readBytes(source + "/config.json"), as: UTF8.self)
        let pattern = try Regex("\"\(field)\": [0-9]+")
        #expect(config.contains(pattern), "\(field) not in the fixture's config")
        config.replace(pattern, with: "\"\(field)\": \(value)")
        try config.write(toFile: dir + "/config.json", atomically: false, encoding: .utf8)
        let r = try CLI.run(["verify", dir])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains(message), "\(r.stderr)")
    }

    /// Headers at the edge of what is allowed, and past it. The bounds, for the debug build the tests
    /// run (a release build is about 8 times faster; Docs/reliability.md has its figures): an answer
    /// within 60 s, and no process of this test run above 1 GiB resident.
    @Test func extremeHeadersAreAnsweredWithinBounds() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func write(_ name: String, header: [UInt8], dataBytes: Int = 0) throws -> String {
            let path = dir + "/" + name
            #expect(FileManager.default.createFile(atPath: path, contents: nil))
            let h = try #require(FileHandle(forWritingAtPath: path))
            try h.write(contentsOf: withUnsafeBytes(of: UInt64(header.count).littleEndian) { Data($0) })
            try h.write(contentsOf: header)
            try h.truncate(atOffset: UInt64(8 + header.count + dataBytes))  // zero data, without writing it
            try h.close()
            return path
        }
        // 1,000,000 tensors of one F32 each: valid, and summarised.
        var million: [UInt8] = Array("{".utf8)
        million.reserveCapacity(70_000_000)
        for i in 0..<1_000_000 {
            if i > 0 { million.append(UInt8(ascii: ",")) }
            million += Array("\"t\(i)\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\(4 * i),\(4 * i + 4)]}".utf8)
        }
        million.append(UInt8(ascii: "}"))
        // A header of exactly the 100,000,000-byte limit (valid), and one byte more (refused unread).
        let padding = 100_000_000 - Array("{\"__metadata__\":{\"pad\":\"\"}}".utf8).count
        var huge = Array("{\"__metadata__\":{\"pad\":\"".utf8)
        huge += [UInt8](repeating: UInt8(ascii: "x"), count: padding)
        huge += Array("\"}}".utf8)
        let depth = 1_000_000
        let nested = Array("{\"__metadata__\":{\"a\":".utf8) + [UInt8](repeating: UInt8(ascii: "["), count: depth)
            + [UInt8](repeating: UInt8(ascii: "]"), count: depth) + Array("}}".utf8)
        let cases: [(String, Int32, String)] = [
            (try write("million.safetensors", header: million, dataBytes: 4_000_000), 0, "1,000,000"),
            (try write("limit.safetensors", header: huge), 0, "tensors           0"),
            (try write("over.safetensors", header: huge + [UInt8(ascii: " ")]), 1, "above the limit of 100000000 bytes"),
            (try write("nested.safetensors", header: nested), 1, "nesting deeper than 128 levels"),
        ]
        // Sanitized builds (Scripts/sanitizers.sh) run slower and carry shadow memory: 4 times the bounds.
        let me = dlopen(nil, RTLD_NOW)
        let sanitized = dlsym(me, "__asan_init") != nil || dlsym(me, "__tsan_init") != nil
        for (path, status, message) in cases {
            let start = Date()
            let r = try CLI.run(["inspect", path])
            let took = Date().timeIntervalSince(start)
            #expect(r.status == status, "\(path): \(r.stderr)")
            #expect((r.stdout + r.stderr).contains(message), "\(path): \(r.stdout.prefix(400)) \(r.stderr)")
            #expect(took < (sanitized ? 240 : 60), "\(path): \(took) s")
        }
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        #expect(usage.ru_maxrss < (sanitized ? 4 : 1) << 20, "a child process peaked at \(usage.ru_maxrss) KiB")  // KiB on Linux
    }

    @Test func planParametersOutOfRange() throws {
        let profile = Fixtures.path("profiles/readme.json")
        for args in [["--redundant-per-gpu", "9223372036854775807"], ["--slots", "4611686018427387904"], ["--nodes", "0"]] {
            let r = try CLI.run(["plan-experts", profile, "--gpus", "8"] + args)
            #expect(r.status == 2, "\(args): \(r.stderr)")
            #expect(r.stderr.contains("must be"), "\(args): \(r.stderr)")
        }
        // Each option within its bounds, but together 4 million slots per layer: refused, not run out of memory.
        let many = try CLI.run(["plan-experts", profile, "--gpus", "4096", "--redundant-per-gpu", "1024"])
        #expect(many.status == 1 && many.stderr.contains("more than moetool plans"), "\(many.stderr)")
        let manyGPUs = try CLI.run(["plan-experts", profile, "--gpus", "1048576"])
        #expect(manyGPUs.status == 2 && manyGPUs.stderr.contains("--gpus must be 1 to 4096"), "\(manyGPUs.stderr)")
        // Loads near the top of the accepted range give valid JSON (no "inf" from rounding); loads
        // whose totals pass it (1e303, where float32 arithmetic is already infinite) are refused.
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(FileManager.default.createFile(atPath: dir + "/large.json", contents: Data("{\"layers\": [[1e29, 2e29, 1, 5]]}".utf8)))
        let large = try CLI.run(["plan-experts", dir + "/large.json", "--gpus", "2", "--json"])
        #expect(large.status == 0, "\(large.stderr)")
        #expect((try? JSONParser.parse(large.stdout)) != nil, "\(large.stdout.prefix(600))")
        #expect(FileManager.default.createFile(atPath: dir + "/huge.json", contents: Data("{\"layers\": [[1e303, 2e303, 1, 5]]}".utf8)))
        let huge = try CLI.run(["plan-experts", dir + "/huge.json", "--gpus", "2", "--json"])
        #expect(huge.status == 1 && errorID(huge.stdout) == "layer_total_too_large", "\(huge.stdout.prefix(600))")
        #expect(huge.stderr.contains("huge.json: layer 0: the loads add up to 3.0000000000000003e+303"), "\(huge.stderr)")
    }
}

