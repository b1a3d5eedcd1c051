import FixtureSupport
import Foundation
import Testing

@Suite struct ConvertNothingToDo {
    /// A conversion that would change no tensor says so, exits 1 and writes nothing (not a silent full copy).
    @Test func aConversionThatChangesNothingIsRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let f32 = try CLI.run(["convert", Fixtures.path("models/mixtral-f32-sharded"), dir + "/bf16", "--to", "bf16"])
        #expect(f32.status == 1)
        #expect(f32.stderr.contains("nothing to convert") && f32.stderr.contains("does not cast F32"), "\(f32.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/bf16"))
        let first = try CLI.run(["convert", Fixtures.path("models/mixtral-bf16"), dir + "/fp8", "--to", "fp8", "-q"])
        #expect(first.status == 0, "\(first.stderr)")
        let again = try CLI.run(["convert", dir + "/fp8", dir + "/fp8-again", "--to", "fp8"])
        #expect(again.status == 1)
        #expect(again.stderr.contains("already FP8"), "\(again.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/fp8-again"))
        // --dry-run shows the plan and the same note, exit 0.
        let dry = try CLI.run(["convert", dir + "/fp8", dir + "/fp8-again", "--to", "fp8", "--dry-run"])
        #expect(dry.status == 0 && dry.stderr.contains("note: nothing to convert"), "\(dry.stderr)")
    }
}
