import FixtureSupport
import Foundation
import Testing

/// The fuzz targets (Sources/moetool-fuzz) replayed on their seed inputs and on every input a fuzzing
/// run ever crashed on (Fixtures/fuzz-regressions/<target>/): each must run to the end.
@Suite struct FuzzReplay {
    static let binary = URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().appendingPathComponent("moetool-fuzz").path

    func replay(_ target: String, _ files: [String]) throws {
        try #require(!files.isEmpty, "\(target): no input to replay")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = [target] + files
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(target): \(text.suffix(2000))")
        #expect(text.components(separatedBy: ": ok").count - 1 == files.count, "\(target): \(text.suffix(2000))")
    }

    /// The files of a fixture folder; a folder that is missing or empty fails the test (a replay of nothing
    /// would pass while checking nothing).
    func files(_ dir: String, _ suffixes: [String] = []) throws -> [String] {
        let path = Fixtures.path(dir)
        let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            .filter { name in suffixes.isEmpty || suffixes.contains { name.hasSuffix($0) } }
        try #require(!names.isEmpty, "\(dir): no input to replay")
        return names.map { path + "/" + $0 }
    }

    /// The targets that have crashed on something: Fixtures/fuzz-regressions/<target>/ holds those inputs.
    static let targetsWithRegressions: Set<String> = ["compressed", "index", "pt"]

    @Test(arguments: ["header", "profile", "compressed", "config", "index", "pt"])
    func seedsAndRegressions(_ target: String) throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "\(Self.binary)")
        switch target {
        case "header": try replay(target, try files("malformed", [".safetensors"]) + files("valid", [".safetensors"]))
        case "profile": try replay(target, try files("profiles", [".json", ".csv", ".zst"]) + files("profiles/malformed"))
        case "pt": try replay(target, try ["single", "windows", "ranks", "refused"].flatMap { try files("profiles/sglang/" + $0) } + files("profiles/sglang", [".zst"]))
        case "config": try replay(target, ["deepseek_v3-bf16", "mixtral-bf16", "qwen2_moe-bf16"].map { Fixtures.path("models/\($0)/config.json") })
        case "index":
            let indexes = try ["models", "malformed/checkpoints"].flatMap { dir in
                try files(dir).map { $0 + "/model.safetensors.index.json" }.filter { FileManager.default.fileExists(atPath: $0) }
            }
            #expect(indexes.count >= 8)
            try replay(target, indexes)
        default: break
        }
        // A target that crashed before must find its folder (missing or empty fails); a folder for any other
        // target means the list above is out of date and its inputs would never be replayed.
        if Self.targetsWithRegressions.contains(target) { try replay(target, try files("fuzz-regressions/" + target)) }
        #expect(FileManager.default.fileExists(atPath: Fixtures.path("fuzz-regressions/" + target)) == Self.targetsWithRegressions.contains(target), "\(target)")
    }
}

/// The hand-made regressions are what their recipe in Fixtures/README.md makes: `moetool compress` of
/// valid/all_dtypes.safetensors (4515 bytes: chunk table at 1635, 64-byte tail at 4451), then one 8-byte
/// little-endian field overwritten with a value near 2^64.
@Suite struct FuzzRegressionRecipes {
    static let patches: [(file: String, offset: Int, value: UInt64)] = [
        ("chunk-offset-overflow.stz", 1635, 0xFFFF_FFFF_FFFF_FFF0),  // chunk 0: its offset in the original data
        ("plane-offset-overflow.stz", 1667, 0xFFFF_FFFF_FFFF_FFFF),  // chunk 0, plane 0: its file offset
        ("table-offset-overflow.stz", 4459, 0xFFFF_FFFF_FFFF_FF00),  // tail: the table offset
        ("data-bytes-overflow.stz", 4467, 0xFFFF_FFFF_FFFF_FFF0),    // tail: the original data bytes
    ]

    @Test func theRecipesRemakeTheFiles() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let c = try CLI.run(["compress", Fixtures.path("valid/all_dtypes.safetensors"), dir + "/base.stz", "-q"])
        #expect(c.status == 0, "\(c.stderr)")
        let base = Fixtures.readBytes(dir + "/base.stz")
        #expect(base.count == 4515)
        for p in Self.patches {
            var bytes = base
            withUnsafeBytes(of: p.value.littleEndian) { bytes.replaceSubrange(p.offset..<(p.offset + 8), with: $0) }
            #expect(bytes == Fixtures.readBytes(Fixtures.path("fuzz-regressions/compressed/" + p.file)), "\(p.file)")
        }
    }
}
