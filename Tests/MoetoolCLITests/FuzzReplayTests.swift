import FixtureSupport
import Foundation
import Testing

/// The fuzz targets (Sources/moetool-fuzz) replayed on their seed inputs and on every input a fuzzing
/// run ever crashed on (Fixtures/fuzz-regressions/<target>/): each must run to the end.
@Suite struct FuzzReplay {
    static let binary = URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().appendingPathComponent("moetool-fuzz").path

    func replay(_ target: String, _ files: [String]) throws {
        guard !files.isEmpty else { return }
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

    func files(_ dir: String, _ suffixes: [String] = []) -> [String] {
        let path = Fixtures.path(dir)
        return ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
            .filter { name in suffixes.isEmpty || suffixes.contains { name.hasSuffix($0) } }
            .map { path + "/" + $0 }
    }

    @Test(arguments: ["header", "profile", "compressed", "config", "index"])
    func seedsAndRegressions(_ target: String) throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "\(Self.binary)")
        switch target {
        case "header": try replay(target, files("malformed", [".safetensors"]) + files("valid", [".safetensors"]))
        case "profile": try replay(target, files("profiles", [".json", ".csv", ".zst"]) + files("profiles/malformed"))
        case "config": try replay(target, ["deepseek_v3-bf16", "mixtral-bf16", "qwen2_moe-bf16"].map { Fixtures.path("models/\($0)/config.json") })
        case "index":
            let indexes = ["models", "malformed/checkpoints"].flatMap { dir in
                files(dir).map { $0 + "/model.safetensors.index.json" }.filter { FileManager.default.fileExists(atPath: $0) }
            }
            #expect(indexes.count >= 8)
            try replay(target, indexes)
        default: break
        }
        try replay(target, files("fuzz-regressions/" + target))
    }
}
