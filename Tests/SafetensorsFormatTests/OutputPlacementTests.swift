import FixtureSupport
import Foundation
import SafetensorsFormat
import Testing

/// No command may write onto an input or inside an input directory, however the path is spelled.
@Suite final class OutputPlacementTests {
    let dir = Fixtures.temporaryDirectory()

    /// Swift Testing makes an instance per test and releases it after: the directory goes with it.
    deinit { Fixtures.removeTemporary(dir) }

    init() throws {
        try FileManager.default.createDirectory(atPath: dir + "/in/sub", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/in/model.safetensors", contents: Data([1, 2, 3]))
        _ = FileManager.default.createFile(atPath: dir + "/profile.json", contents: Data("{}".utf8))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/in")
        try FileManager.default.linkItem(atPath: dir + "/profile.json", toPath: dir + "/hardlink.json")
        try FileManager.default.createDirectory(atPath: dir + "/elsewhere", withIntermediateDirectories: true)
    }

    @Test(arguments: [
        ("in/model.safetensors", "is inside the input"), // a file of the input directory
        ("in/new.safetensors", "is inside the input"),  // a new file in the input directory
        ("in/sub/deeper/x", "is inside the input"),     // below directories that do not exist yet
        ("link/x", "is inside the input"),              // through a symlink to the input
        ("elsewhere/../in/x", "is inside the input"),   // through ..
        ("in", "is the input"),
    ])
    func refusesOutputsInsideADirectoryInput(_ output: String, _ expected: String) {
        let reason = OutputPlacement.conflict(output: dir + "/" + output, inputs: [dir + "/in"])
        #expect(reason?.hasPrefix(expected) == true, "\(output): \(reason ?? "accepted")")
    }

    @Test func refusesAHardLinkToAnInputFile() {
        let reason = OutputPlacement.conflict(output: dir + "/hardlink.json", inputs: [dir + "/profile.json"])
        #expect(reason?.hasPrefix("is the input") == true, "\(reason ?? "accepted")")
    }

    @Test func acceptsOutputsApartFromTheInputs() {
        for output in ["elsewhere/x", "out", "elsewhere", "in-other"] {
            #expect(OutputPlacement.conflict(output: dir + "/" + output, inputs: [dir + "/in", dir + "/profile.json"]) == nil,
                    "\(output) refused")
        }
    }

    @Test func aDirectoryOutputMayNotHoldAnInput() {
        #expect(OutputPlacement.conflict(output: dir, inputs: [dir + "/in"], outputIsDirectory: true)?.hasPrefix("holds the input") == true)
        // A file output beside the input is fine: only directories that would be filled are checked that way.
        #expect(OutputPlacement.conflict(output: dir + "/elsewhere", inputs: [dir + "/in"], outputIsDirectory: true) == nil)
    }
}
