import FixtureSupport
import Foundation
import StrictJSON
import Testing

/// What every command shares: --json, -q and --threads spelled and checked the same, a schema key in every
/// --json document, errors as JSON documents with --json, and no option silently ignored.
@Suite struct CommonOptionsCLI {
    static let model = Fixtures.path("models/mixtral-bf16")

    /// A failing command with --json: exit status as without, a moetool.error/1 document on stdout naming
    /// the command, the id and a hint, and the same message as an `error:` line on stderr.
    @Test(arguments: [
        (["inspect", "--filter", "w1", model, "--json"], "inspect", "usage", Int32(2)),
        (["inspect", "--threads", "-1", model, "--json"], "inspect", "usage", Int32(2)),
        (["convert", "/no/such/dir", "/tmp/never", "--to", "fp8", "--json"], "convert", "invalid_input", Int32(1)),
        (["convert", model, "/tmp/never", "--to", "fp8", "--dry-run", "--resume", "--json"], "convert", "usage", Int32(2)),
        (["compress", "/no/such/dir", "/tmp/never", "--json"], "compress", "input_missing", Int32(1)),
        (["decompress", model + "/model.safetensors", "/tmp/never", "--json"], "decompress", "not_compressed", Int32(1)),
    ])
    func errorsAreJSONWithJSON(_ arguments: [String], _ command: String, _ id: String, _ status: Int32) throws {
        let r = try CLI.run(arguments)
        #expect(r.status == status, "\(r.stderr)")
        let document = try #require(try JSONParser.parse(r.stdout).objectValue, "\(r.stdout)")
        #expect(document["schema"]?.stringValue == "moetool.error/1")
        #expect(document["command"]?.stringValue == command)
        let error = try #require(document["error"]?.objectValue)
        #expect(error["id"]?.stringValue == id, "\(r.stdout)")
        let message = try #require(error["message"]?.stringValue)
        #expect(error["hint"]?.stringValue?.isEmpty == false, "\(r.stdout)")
        #expect(r.stderr.hasPrefix("error: "), "\(r.stderr)")
        #expect(r.stderr.contains(message), "\(r.stderr)")
        // Without --json: the same exit status, nothing on stdout.
        let text = try CLI.run(arguments.filter { $0 != "--json" })
        #expect(text.status == status && text.stdout.isEmpty, "\(text.stdout)")
        #expect(text.stderr.hasPrefix("error: "), "\(text.stderr)")
    }

    /// An invalid checkpoint given to convert: every problem is a detail of the one error.
    @Test func convertListsEveryProblemOfAnInvalidInput() throws {
        let r = try CLI.run(["convert", Fixtures.path("malformed/checkpoints/shard_missing"), "/tmp/never", "--to", "fp8", "--json"])
        #expect(r.status == 1)
        let error = try #require(try JSONParser.parse(r.stdout).objectValue?["error"]?.objectValue, "\(r.stdout)")
        #expect(error["id"]?.stringValue == "invalid_input")
        let details = error["details"]?.arrayValue ?? []
        #expect(details.count >= 1 && details.allSatisfy { $0.stringValue?.contains("[shard_missing]") == true }, "\(r.stdout)")
        #expect(error["message"]?.stringValue?.contains("invalid input (\(details.count) problem") == true, "\(r.stdout)")
        #expect(r.stderr.components(separatedBy: "\n").filter { $0.hasPrefix("error: ") }.count == details.count + 1, "\(r.stderr)")
    }

    /// --filter chooses what --tensors lists or --scan reads; alone it did nothing. --no-collapse likewise, and
    /// convert's --include/--exclude with --to bf16.
    @Test func optionsThatWouldBeIgnoredAreRefused() throws {
        let filter = try CLI.run(["inspect", "--filter", "w1", Self.model])
        #expect(filter.status == 2 && filter.stderr.contains("--filter chooses the tensors --tensors lists or --scan reads"), "\(filter.stderr)")
        #expect(try CLI.run(["inspect", "--filter", "w1", "--scan", "-q", Self.model]).status == 0)
        let collapse = try CLI.run(["inspect", "--no-collapse", Self.model])
        #expect(collapse.status == 2 && collapse.stderr.contains("--no-collapse applies to --tensors"), "\(collapse.stderr)")
        let selection = try CLI.run(["convert", Self.model, "/tmp/never", "--to", "bf16", "--exclude", "w1"])
        #expect(selection.status == 2 && selection.stderr.contains("--include and --exclude choose what --to fp8 quantizes"), "\(selection.stderr)")
    }

    /// -q, --threads and --json parse the same on every command that has them (CommonOptions).
    @Test(arguments: [
        ["inspect", model], ["convert", model, "/tmp/never", "--to", "fp8", "--dry-run"],
        ["compress", model, "/tmp/never"], ["decompress", model, "/tmp/never"],
    ])
    func threadsAreCheckedTheSameEverywhere(_ arguments: [String]) throws {
        let r = try CLI.run(arguments + ["--threads", "-3"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("--threads must be 0 (all cores) or more, not -3"), "\(r.stderr)")
    }

    /// Every --json document a command prints on success has a schema key naming its version.
    @Test func everyJSONDocumentHasASchema() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let runs: [([String], String)] = [
            (["inspect", Self.model, "--json"], "moetool.inspect/1"),
            (["convert", Self.model, dir + "/fp8", "--to", "fp8", "--dry-run", "--json"], "moetool.convert-plan/1"),
            (["convert", Self.model, dir + "/fp8", "--to", "fp8", "--json"], "moetool.convert/1"),
            (["compress", Self.model, dir + "/packed", "--json"], "moetool.compress/1"),
            (["decompress", dir + "/packed", dir + "/restored", "--json"], "moetool.compress/1"),
        ]
        for (arguments, schema) in runs {
            let r = try CLI.run(arguments)
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
            #expect(try JSONParser.parse(r.stdout).objectValue?["schema"]?.stringValue == schema, "\(arguments)")
        }
        let plan = try JSONParser.parse(try CLI.run(runs[1].0).stdout).objectValue
        #expect(plan?["tensors"]?.arrayValue?.contains { $0.objectValue?["action"]?.stringValue == "quantize" } == true)
    }

    /// The help texts are wrapped by the parser: no line continuation backslash leaks into them.
    @Test(arguments: ["inspect", "convert", "compress", "decompress"])
    func helpHasNoStrayBackslashes(_ command: String) throws {
        let r = try CLI.run([command, "--help"])
        #expect(r.status == 0)
        #expect(!r.stdout.contains("\\"), "\(r.stdout)")
    }
}

@Suite struct ConvertWorkers {
    /// Each `--shards i/n` worker reports the tensors of its own shards: over all workers the counts add up
    /// to the whole checkpoint's, and no worker reports them all.
    @Test func workersReportTheirOwnCounts() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = Fixtures.path("models/deepseek_v3-f32-sharded")
        let plan = try JSONParser.parse(try CLI.run(["convert", input, dir + "/plan", "--to", "fp8", "--dry-run", "--json"]).stdout)
        let quantize = plan.objectValue?["tensors"]?.arrayValue?.filter { $0.objectValue?["action"]?.stringValue == "quantize" }.count ?? 0
        #expect(quantize > 0)
        var sum = 0
        for i in 1...3 {
            let r = try CLI.run(["convert", input, dir + "/out", "--to", "fp8", "--shards", "\(i)/3", "--json", "-q"])
            #expect(r.status == 0, "\(r.stderr)")
            let n = Int(try JSONParser.parse(r.stdout).objectValue?["quantized"]?.uint64Value ?? 0)
            #expect(n < quantize, "worker \(i)/3 reported \(n) of \(quantize)")
            sum += n
        }
        #expect(sum == quantize)
        let finalize = try CLI.run(["convert", input, dir + "/out", "--to", "fp8", "--finalize", "-q"])
        #expect(finalize.status == 0, "\(finalize.stderr)")
    }
}
