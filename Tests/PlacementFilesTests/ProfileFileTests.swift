import ExpertPlacement
import FixtureSupport
import PlacementFiles
import Testing

@Suite struct ProfileFileTests {
    static let tiny: [[Double]] = {
        // The generator's integer token counts, read straight from its JSON.
        let v = Fixtures.json("profiles/tiny_dsv3.json").objectValue!["layers"]!.arrayValue!
        return v.map { $0.arrayValue!.map { $0.doubleValue! } }
    }()

    /// Every accepted form of the same profile reads to the same loads.
    @Test(arguments: ["tiny_dsv3.json", "tiny_dsv3.sglang.json", "tiny_dsv3.csv", "tiny_dsv3.json.zst", "tiny_dsv3.csv.zst"])
    func sameLoadsInEveryForm(_ file: String) throws {
        let p = try LoadProfile.read(path: Fixtures.path("profiles/" + file))
        #expect(p.loads == Self.tiny)
        #expect(p.layers == 2 && p.experts == 16)
    }

    @Test func expertCountChecked() throws {
        let path = Fixtures.path("profiles/tiny_dsv3.json")
        #expect(throws: PlacementError(.expertCountMismatch, file: path, "the profile has 16 experts per layer but the config has 256")) {
            try LoadProfile.read(path: path, expectedExperts: 256)
        }
        // CSV: the config's count decides.
        let p = try LoadProfile.read(path: Fixtures.path("profiles/tiny_dsv3.csv"), expectedExperts: 16)
        #expect(p.experts == 16)
    }

    /// Each malformed profile is refused by its rule, with a message naming the file and what is wrong.
    @Test(arguments: [
        ("ragged.json", PlacementError.Rule.layersDiffer, "layers[1] has 2 experts"),
        ("negative.json", .invalidLoad, "layers[0][1]: load -2 is negative"),
        ("string-load.json", .invalidLoad, "expected a load (a number), found a string"),
        ("overflow.json", .invalidLoad, "out of range"),
        ("nan-literal.json", .invalidLoad, "found NaN or Infinity"),
        ("no-layers.json", .noLoads, "no \"layers\""),
        ("duplicate-key.json", .duplicateMember, "appears twice"),
        ("empty-layers.json", .noLoads, "no layers"),
        ("deep.json", .invalidLoad, "layers[0][0]: expected a load (a number), found an array"),
        ("ragged-passes.json", .layersDiffer, "logical_count[1] is 1x2"),
        ("truncated.json", .invalidJSON, "invalid JSON"),
        ("fields.csv", .invalidCSVRow, "expected 3 fields"),
        ("negative.csv", .invalidLoad, "load -4 is negative"),
        ("gap.csv", .layersDiffer, "layer 1 has no rows"),
        ("text-load.csv", .invalidLoad, "load \"many\" is not a number"),
        ("truncated.json.zst", .zstdInvalid, "zstd"),
        ("garbage.json.zst", .zstdInvalid, "zstd"),
        ("bomb.csv.zst", .fileTooLarge, "zstd: decompresses to more than \(LoadProfile.maxBytes) bytes"),
    ])
    func malformedRefused(_ file: String, _ rule: PlacementError.Rule, _ message: String) {
        do {
            _ = try LoadProfile.read(path: Fixtures.path("profiles/malformed/" + file))
            Issue.record("\(file) was accepted")
        } catch {
            #expect(error.rule == rule, "\(file): \(error.description)")
            #expect(error.message.contains(message), "\(file): \(error.description)")
            #expect(error.file?.hasPrefix(Fixtures.path("profiles/malformed/" + file)) == true, "\(file): the error names the file: \(error.description)")
            #expect(error.description.hasSuffix("[\(rule.rawValue)]; \(rule.hint)"), "\(error.description)")
        }
    }

    /// CSV errors name the line, as part of the file's location.
    @Test func csvErrorsNameTheLine() {
        let path = Fixtures.path("profiles/malformed/fields.csv")
        #expect(throws: PlacementError(.invalidCSVRow, file: path + ":3", "expected 3 fields (layer,expert,load), found 2")) {
            try LoadProfile.read(path: path)
        }
    }

    /// Not a regular file, or not there: refused as unreadable, naming the path.
    @Test func unreadableFiles() {
        let dir = Fixtures.temporaryDirectory()
        for path in [dir, dir + "/missing.json"] {
            do {
                _ = try LoadProfile.read(path: path)
                Issue.record("\(path) was read")
            } catch {
                #expect(error.rule == .unreadable && error.file == path, "\(error.description)")
            }
        }
    }

    /// A zstd bomb (90 KB that would expand to 1 GiB) is refused once its output passes the
    /// limit, in well under the time it would take to expand it all.
    @Test func zstdBombStopsAtTheLimit() throws {
        let start = ContinuousClock.now
        let path = Fixtures.path("profiles/malformed/bomb.csv.zst")
        #expect(throws: PlacementError(.fileTooLarge, file: path, "zstd: decompresses to more than \(LoadProfile.maxBytes) bytes, more than a load profile can be")) {
            try LoadProfile.read(path: path)
        }
        #expect(ContinuousClock.now - start < .seconds(20))
    }
}
