import FixtureSupport
import Foundation
import StrictJSON
import Testing

/// Commands that only read weights take moetool's compressed checkpoints as they are: the one weight reader
/// decompresses chunks as rows are asked for, and the results equal those on the original bit for bit.
@Suite struct CompressedInput {
    /// Every file of OUT, by name, with its bytes.
    func files(_ dir: String) throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) where !name.hasPrefix(".") {
            out[name] = Fixtures.readBytes(dir + "/" + name)
        }
        return out
    }

    @Test func convertFromACompressedCheckpointWritesTheSameFiles() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (source, to) in [("models/deepseek_v3-f32-sharded", "fp8"), ("quant/fp8_variants", "bf16")] {
            let packed = dir + "/packed-" + to
            #expect(try CLI.run(["compress", Fixtures.path(source), packed, "-q"]).status == 0)
            let a = try CLI.run(["convert", Fixtures.path(source), dir + "/from-plain-" + to, "--to", to, "-q"])
            let b = try CLI.run(["convert", packed, dir + "/from-packed-" + to, "--to", to, "--json"])
            #expect(a.status == 0 && b.status == 0, "\(a.stderr)\(b.stderr)")
            let plainFiles = try files(dir + "/from-plain-" + to)
            #expect(plainFiles.keys.contains { $0.hasSuffix(".safetensors") })
            #expect(try files(dir + "/from-packed-" + to) == plainFiles, "\(source) --to \(to)")
            // compress's record of the compressed shards is not carried into a plain output, and says so.
            let leftOut = try JSONParser.parse(b.stdout).objectValue?["left_out"]?.arrayValue ?? []
            #expect(leftOut.compactMap { $0.objectValue?["name"]?.stringValue } == ["moetool-compressed.json"], "\(b.stdout)")
        }
    }

    @Test func verifyReadsACompressedCheckpointAsTheOriginal() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = Fixtures.path("models/deepseek_v3-bf16")
        #expect(try CLI.run(["compress", original, dir + "/packed", "-q"]).status == 0)
        let whole = try CLI.run(["verify", original, dir + "/packed", "--json"])
        #expect(whole.status == 0, "\(whole.stdout)\(whole.stderr)")
        let model = try #require(try JSONParser.parse(whole.stdout).objectValue)
        #expect(model["logits"]?.objectValue?["kl_divergence"]?.doubleValue == 0, "\(whole.stdout)")
        let layers = try CLI.run(["verify", original, dir + "/packed", "--layers", "all", "--json"])
        #expect(layers.status == 0, "\(layers.stdout)\(layers.stderr)")
        let report = try #require(try JSONParser.parse(layers.stdout).objectValue?["layers"]?.arrayValue)
        #expect(report.count == 2)
        for l in report { #expect(l.objectValue?["relative_error"]?.doubleValue == 0, "\(l)") }
    }
}
