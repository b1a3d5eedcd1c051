import FixtureSupport
import Foundation
import StrictJSON
import Testing

/// No verify option is silently ignored: an option of the other mode is refused with exit 2, naming it and
/// pointing at verify's own help.
@Suite struct VerifyOptions {
    @Test(arguments: [
        (["--layers", "1", "--max-kl", "0.1"], "--max-kl judges the logits of whole-model mode"),
        (["--layers", "1", "--min-top1-agreement", "0.9"], "--min-top1-agreement judges the logits"),
        (["--experts", "2"], "--experts applies to layer mode"),
        (["--layers", "1", "--token-ids", "1,2"], "--token-ids applies to whole-model mode"),
        (["--min-cosine", "2"], "--min-cosine must be a number from -1 to 1, not 2.0"),
    ])
    func optionsOfTheOtherModeAreRefused(_ options: [String], _ message: String) throws {
        let r = try CLI.run(["verify", Fixtures.path("models/deepseek_v3-bf16")] + options)
        #expect(r.status == 2, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.hasPrefix("error: " + message), "\(r.stderr)")
        #expect(r.stderr.contains("'moetool verify --help'"), "\(r.stderr)")
    }

    /// verify's help names every architecture it runs, each fixture's model_type among them, and the aliases.
    @Test func helpNamesTheArchitectures() throws {
        let r = try CLI.run(["verify", "--help"])
        #expect(r.status == 0)
        let help = r.stdout.replacingOccurrences(of: "\n", with: " ")
        for fixture in ["deepseek_v32", "deepseek_v4", "glm4_moe", "glm_moe_dsa", "gpt_oss", "llama4", "minimax_m2", "qwen3_5_moe", "qwen3_next"] {
            let config = try JSONParser.parse(Fixtures.readBytes(Fixtures.path("verify/\(fixture)/config.json")))
            let type = try #require(config.objectValue?["model_type"]?.stringValue)
            #expect(help.contains(" \(type),") || help.contains(" \(type) "), "\(type) not in: \(help)")
        }
        #expect(help.contains("kimi_k2 as deepseek_v3"), "\(help)")
    }

    /// The whole-model limits apply when given in whole-model mode.
    @Test func wholeModelLimitsAreUsed() throws {
        let model = Fixtures.path("models/deepseek_v3-bf16")
        let r = try CLI.run(["verify", model, model, "--max-kl", "0.5", "--min-top1-agreement", "0.25", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\"max_kl\": 0.5") && r.stdout.contains("\"min_top1_agreement\": 0.25"), "\(r.stdout)")
    }
}

@Suite struct VerifySharedOptions {
    /// --threads changes how rows are shared out, never a number (each output row is one core's dot products).
    @Test func threadsChangeNoNumber() throws {
        let model = Fixtures.path("models/deepseek_v3-bf16")
        let all = try CLI.run(["verify", model, model, "--layers", "1,2", "--json"])
        let one = try CLI.run(["verify", model, model, "--layers", "1,2", "--json", "--threads", "1"])
        #expect(all.status == 0 && one.status == 0, "\(all.stderr)\(one.stderr)")
        #expect(one.stdout == all.stdout)
        let negative = try CLI.run(["verify", model, "--threads", "-1"])
        #expect(negative.status == 2 && negative.stderr.contains("--threads must be 0"), "\(negative.stderr)")
    }

    /// With --json, a failure is a moetool.error/1 document on stdout too, with the reader's stable id.
    @Test func errorsAreJSONWithJSON() throws {
        let r = try CLI.run(["verify", Fixtures.path("models/deepseek_v3-bf16"), "--layers", "0", "--json"])
        #expect(r.status == 1)
        #expect(errorID(r.stdout) == "not_an_moe_layer", "\(r.stdout)")
        #expect(r.stderr.hasPrefix("error: "), "\(r.stderr)")
    }
}

/// A config.json size no model has (10^18 heads, head dimensions, indexer heads, streams, layers) is refused by verify,
/// in both modes, and made a problem by inspect, naming the field: before, products of such sizes overflowed (a trap),
/// were allocated (an abort) or were looped over (10^18 layers looked for by name).
@Suite struct OversizedConfigSizes {
    @Test(arguments: [("glm4_moe", "num_attention_heads"), ("glm4_moe", "head_dim"), ("llama4", "head_dim"),
                      ("qwen3_next", "linear_num_value_heads"), ("deepseek_v32", "index_n_heads"), ("deepseek_v4", "hc_mult"),
                      ("qwen3_next", "num_hidden_layers")])
    func refusedByName(_ fixture: String, _ key: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let source = Fixtures.path("verify/" + fixture)
        for name in try FileManager.default.contentsOfDirectory(atPath: source) {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: dir + "/" + name)
        }
        let text = String(decoding: Fixtures.readBytes(dir + "/config.json"), as: UTF8.self)
        let edited = text.replacing(try Regex("\"\(key)\": *[0-9]+"), with: "\"\(key)\": 1000000000000000000")
        #expect(edited != text, "\(key) is in \(fixture)'s config.json")
        try FileManager.default.removeItem(atPath: dir + "/config.json")
        try edited.write(toFile: dir + "/config.json", atomically: false, encoding: .utf8)
        let message = "\(key) is 1000000000000000000"
        for mode in [[], ["--layers", "all"]] {
            let r = try CLI.run(["verify", dir] + mode)
            #expect(r.status == 1, "\(mode): \(r.stderr)")
            #expect(r.stderr.contains(message), "\(mode): \(r.stderr)")
        }
        let inspect = try CLI.run(["inspect", dir])
        #expect(inspect.status == 1 && inspect.stderr.contains(message) && inspect.stderr.contains("[config_invalid]"), "\(inspect.stderr)")
    }
}
