import ExpertPlacement
import FixtureSupport
import Foundation
import PlacementFiles
import Testing

/// SGLang's recorder dumps (torch.save files from Fixtures/sglang_dumps.py) as profile windows.
@Suite struct SGLangDumpTests {
    static let dir = Fixtures.path("profiles/sglang/")
    static let single = dir + "single/expert_distribution_recorder_1764756000.25.pt"
    static let ranks = [dir + "ranks/expert_distribution_recorder_1764756000.25_0.pt", dir + "ranks/expert_distribution_recorder_1764756000.25_1.pt"]
    static let windows = [dir + "windows/expert_distribution_recorder_1764756600.5.pt", dir + "windows/expert_distribution_recorder_1764757200.75.pt"]
    /// The tiny DeepSeek-V3: 3 decoder layers, layer 0 dense (first_k_dense_replace = 1).
    static let tinyLayers = DecoderLayers(isMoE: [false, true, true])

    /// The dump's passes summed, its dense row left out: the loads of tiny_dsv3.json.
    @Test func singleDumpIsTheJSONProfile() throws {
        let w = try LoadProfile.readWindows(paths: [Self.single], layers: Self.tinyLayers, expectedExperts: 16)
        #expect(w.windows.map(\.loads) == [ProfileFileTests.tiny])
        #expect(w.decoderLayers == [1, 2] && w.droppedLayers.isEmpty)
        // Without a config: the all-zero row is dropped and said so.
        let guessed = try LoadProfile.readWindows(paths: [Self.single])
        #expect(guessed.windows.map(\.loads) == [ProfileFileTests.tiny])
        #expect(guessed.droppedLayers == [0] && guessed.decoderLayers == [1, 2])
        #expect(try LoadProfile.read(path: Self.dir + "single.pt.zst").loads == ProfileFileTests.tiny)
    }

    /// Two ranks' files are one window, their sum.
    @Test func ranksSummed() throws {
        let w = try LoadProfile.readWindows(paths: Self.ranks, layers: Self.tinyLayers)
        #expect(w.windows.map(\.loads) == [ProfileFileTests.tiny])
    }

    /// Successive dumps are windows in the order given; the sum is what one plan uses.
    @Test func dumpsAreWindows() throws {
        let w = try LoadProfile.readWindows(paths: Self.windows, layers: Self.tinyLayers)
        #expect(w.windows.count == 2)
        #expect(w.windows[0].loads == ProfileFileTests.tiny)
        let rolled = ProfileFileTests.tiny.map { Array($0[5...] + $0[..<5]) }
        #expect(w.windows[1].loads == rolled)
        #expect(try w.total().loads == zip(ProfileFileTests.tiny, rolled).map { zip($0, $1).map(+) })
        let reversed = try LoadProfile.readWindows(paths: Self.windows.reversed(), layers: Self.tinyLayers)
        #expect(reversed.windows.map(\.loads) == w.windows.map(\.loads).reversed())
        // JSON and CSV files are windows too.
        let json = try LoadProfile.readWindows(paths: [Fixtures.path("profiles/tiny_dsv3.json"), Fixtures.path("profiles/tiny_dsv3.csv")])
        #expect(json.windows.count == 2 && json.decoderLayers == nil)
    }

    /// SGLang's logical_count converted to JSON keeps a row per decoder layer: with the config, the dense
    /// row is left out as from the dump; without it, the rows are MoE layers as written.
    @Test func jsonWithDecoderRows() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let rows = [[Double](repeating: 0, count: 16)] + ProfileFileTests.tiny
        let text = "{\"logical_count\": [" + rows.map { "[" + $0.map { String(Int($0)) }.joined(separator: ",") + "]" }.joined(separator: ",") + "]}"
        let path = dir + "/decoder_rows.json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let w = try LoadProfile.readWindows(paths: [path], layers: Self.tinyLayers)
        #expect(w.windows.map(\.loads) == [ProfileFileTests.tiny] && w.decoderLayers == [1, 2])
        #expect(try LoadProfile.readWindows(paths: [path]).windows.map(\.loads) == [rows])
        // tiny_dsv3.json's 2 rows are MoE layers: the config's 3 decoder layers do not apply.
        #expect(try LoadProfile.readWindows(paths: [Fixtures.path("profiles/tiny_dsv3.json")], layers: Self.tinyLayers).windows.map(\.loads) == [ProfileFileTests.tiny])
    }

    @Test func configMustFitTheDump() throws {
        #expect(throws: PlacementError(.expertCountMismatch, file: Self.single, "logical_count has a row for each of 3 decoder layers, but the config's num_hidden_layers is 4")) {
            try LoadProfile.readWindows(paths: [Self.single], layers: DecoderLayers(isMoE: [false, true, true, true]))
        }
        #expect(throws: PlacementError(.expertCountMismatch, file: Self.single, "decoder layer 1 is dense by the config, but tokens were routed to experts in it")) {
            try LoadProfile.readWindows(paths: [Self.single], layers: DecoderLayers(isMoE: [true, false, true]))
        }
        #expect(throws: PlacementError(.expertCountMismatch, file: Self.single, "logical_count has 16 experts per layer but the config has 8")) {
            try LoadProfile.readWindows(paths: [Self.single], layers: Self.tinyLayers, expectedExperts: 8)
        }
        #expect(throws: PlacementError(.unsupportedFormat, file: Self.single, "SGLang dumps (a row per decoder layer) and JSON or CSV profiles (a row per MoE layer) cannot be combined: give one kind")) {
            try LoadProfile.readWindows(paths: [Fixtures.path("profiles/tiny_dsv3.json"), Self.single])
        }
        #expect(throws: PlacementError(.ranksDiffer, file: Self.ranks[1], "rank 1 has 1 dump, rank 0 has 2")) {
            try LoadProfile.readWindows(paths: Self.ranks + [Self.single])
        }
    }

    @Test(arguments: [
        ("malicious.pt", PlacementError.Rule.invalidTorchFile, "global posix.system is not one torch.load(weights_only=True) allows; nothing was run (pickle_global_refused)"),
        ("unknown_global.pt", .invalidTorchFile, "global datetime.date is not one"),
        ("truncated.pt", .invalidTorchFile, "not a whole zip file (cut short?) (zip_invalid)"),
        ("storage_short.pt", .invalidTorchFile, "(tensor_invalid)"),
        ("size_past_storage.pt", .invalidTorchFile, "(tensor_invalid)"),
        ("legacy.pt", .unsupportedFormat, "this is a pickle stream without a zip around it"),
        ("expert_distribution_recorder_1764756000.25_0.pt", .notAnSGLangDump, "SGLang's per_pass or per_token dump"),
        ("tiny_dsv3.json.gz", .unsupportedFormat, "this is gzip-compressed data"),
        ("login.html", .unsupportedFormat, "this is an HTML page"),
    ])
    func refused(_ file: String, _ rule: PlacementError.Rule, _ words: String) {
        let marker = "/tmp/moetool-malicious-pickle-ran"
        unlink(marker)
        do {
            _ = try LoadProfile.read(path: Self.dir + "refused/" + file)
            Issue.record("\(file) was accepted")
        } catch {
            #expect(error.rule == rule && error.message.contains(words), "\(error)")
            #expect(error.file == Self.dir + "refused/" + file)
        }
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    /// Formats told by their first bytes, whatever the name.
    @Test func formatsRecognisedByContent() {
        func kind(_ bytes: [UInt8]) -> FileFormat { FileFormat.recognise(bytes) }
        #expect(kind(Array(" {\"layers\": []}".utf8)) == .json)
        #expect(kind(Array("layer,expert,load\n0,0,1\n".utf8)) == .csv)
        #expect(kind([0x28, 0xB5, 0x2F, 0xFD, 0]) == .zstd)
        #expect(kind([0x50, 0x4B, 0x03, 0x04, 0]) == .torchZip)
        for (bytes, words) in [
            ([0x1F, 0x8B, 8, 0], "gzip"), (Array("BZh91AY".utf8), "bzip2"), ([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00], "xz"),
            ([0x80, 0x02, 0x7D, 0x2E], "pickle stream"), (Array("  <!DOCTYPE HTML>".utf8), "HTML"), (Array("[[1, 2]]".utf8), "JSON array"),
            ([4, 0, 0, 0, 0, 0, 0, 0] + Array("{}  ".utf8), "safetensors"), ([0x93] + Array("NUMPY".utf8), "NumPy"),
            ([0, 1, 2, 3], "binary"), ([0xC3, 0x28, 0x41], "binary"),
        ] as [([UInt8], String)] {
            guard case .other(let what) = kind(bytes) else { Issue.record("\(bytes) taken as \(kind(bytes))"); continue }
            #expect(what.contains(words), "\(what)")
        }
        // A UTF-8 character cut at the 4 KiB boundary is still text.
        #expect(kind(Array(("0,0,1 #" + String(repeating: "é", count: 3000)).utf8)) == .csv)
    }
}
