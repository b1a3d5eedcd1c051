import FixtureSupport
import Foundation
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

    /// The whole-model limits apply when given in whole-model mode.
    @Test func wholeModelLimitsAreUsed() throws {
        let model = Fixtures.path("models/deepseek_v3-bf16")
        let r = try CLI.run(["verify", model, model, "--max-kl", "0.5", "--min-top1-agreement", "0.25", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\"max_kl\": 0.5") && r.stdout.contains("\"min_top1_agreement\": 0.25"), "\(r.stdout)")
    }
}
