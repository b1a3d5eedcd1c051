import FixtureSupport
import Foundation
import Testing
@testable import TorchArchive

/// torch.save files written by torch itself (Fixtures/sglang_dumps.py) read without torch.
@Suite struct TorchArchiveTests {
    static let dir = "profiles/sglang/"

    /// tiny_dsv3.sglang.json's passes ([pass][MoE layer][expert]), which the dumps hold after a dense layer 0.
    static let passes: [[[Double]]] = Fixtures.json("profiles/tiny_dsv3.sglang.json").objectValue!["logical_count"]!.arrayValue!
        .map { $0.arrayValue!.map { $0.arrayValue!.map { $0.doubleValue! } } }

    func read(_ relative: String) throws -> PickleValue {
        let path = Fixtures.path(Self.dir + relative)
        return try TorchArchive.read(Fixtures.readBytes(path), file: path)
    }

    /// SGLang's dict, member for member: rank, the int32 logical_count [passes, layers, experts] with
    /// the values torch wrote, and the utilization rate (None, or a float).
    @Test func sglangDumpAsTorchWroteIt() throws {
        let d = try read("single/expert_distribution_recorder_1764756000.25.pt")
        guard case .dict(let entries) = d else { Issue.record("not a dict: \(d.kind)"); return }
        #expect(entries.map(\.key) == [.string("rank"), .string("logical_count"), .string("average_utilization_rate_over_window")])
        #expect(d["rank"] == .int(0))
        #expect(d["average_utilization_rate_over_window"] == PickleValue.none)
        guard case .tensor(let t)? = d["logical_count"] else { Issue.record("logical_count is not a tensor"); return }
        #expect(t.dtype == .int32 && t.shape == [3, 3, 16] && t.strides == [48, 16, 1])
        let expected = Self.passes.flatMap { [[Double](repeating: 0, count: 16)] + $0 }.flatMap { $0 }
        #expect(t.values() == expected)
        let later = try read("windows/expert_distribution_recorder_1764757200.75.pt")
        #expect(later["average_utilization_rate_over_window"] == .float(0.625))
    }

    /// The pickle names posix.system through GLOBAL: refused at that opcode, and the command never ran.
    @Test func maliciousPickleRunsNothing() throws {
        let marker = "/tmp/moetool-malicious-pickle-ran"
        unlink(marker)
        let path = Fixtures.path(Self.dir + "refused/malicious.pt")
        #expect(throws: TorchArchiveError(.globalRefused, file: path,
                                          "data.pkl byte 39: global posix.system is not one torch.load(weights_only=True) allows; nothing was run")) {
            try TorchArchive.read(Fixtures.readBytes(path), file: path)
        }
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test(arguments: [
        ("refused/unknown_global.pt", TorchArchiveError.Rule.globalRefused, "global datetime.date is not one"),
        ("refused/truncated.pt", .zipInvalid, "no end of central directory"),
        ("refused/storage_short.pt", .tensorInvalid, "data/0: 568 bytes, but 144 int32 elements need 576"),
        ("refused/size_past_storage.pt", .tensorInvalid, "size [3, 9, 16], stride [48, 16, 1] reach element 239, but the storage holds 144"),
        ("refused/legacy.pt", .zipInvalid, "no end of central directory"),
    ])
    func refused(_ file: String, _ rule: TorchArchiveError.Rule, _ words: String) throws {
        do {
            _ = try read(file)
            Issue.record("\(file) was accepted")
        } catch let e as TorchArchiveError {
            #expect(e.rule == rule, "\(e)")
            #expect(e.message.contains(words), "\(e)")
        }
    }

    /// Hand-made pickles: each opcode that builds objects, and each damage, refused by name.
    @Test func opcodesOutsideWeightsOnlyRefused() throws {
        func run(_ code: [UInt8]) throws -> PickleValue {
            try PickleMachine(code: code[...], file: "p") { _, _, _, _ throws(TorchArchiveError) in
                throw TorchArchiveError(.tensorInvalid, file: "p", "no storage")
            }.run()
        }
        #expect(try run([0x80, 2, 0x5D, 0x4B, 7, 0x61, 0x4E, 0x61, 0x2E]) == .list([.int(7), .none]))  // [7, None]
        #expect(try run([0x80, 2, 0x8A, 2, 0x00, 0x80, 0x2E]) == .int(-32768))  // LONG1, negative
        #expect(try run([0x80, 2, 0x47, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0, 0x2E]) == .float(1.5))  // BINFLOAT
        for (code, words) in [
            ([0x80, 2, 0x7D, 0x62, 0x2E], "BUILD"),  // BUILD
            ([0x80, 2, 0x81, 0x2E], "NEWOBJ"),
            ([0x80, 2, 0x69, 0x2E], "INST"),
            ([0x80, 2, 0x53, 0x2E], "STRING"),
        ] as [([UInt8], String)] {
            #expect(throws: TorchArchiveError.self) { try run(code) }
            do { _ = try run(code) } catch let e as TorchArchiveError {
                #expect(e.rule == .opcodeRefused && e.message.contains(words), "\(e)")
            } catch {}
        }
        // builtins.eval through STACK_GLOBAL, then REDUCE: refused at the global, before any call.
        let evil: [UInt8] = [0x80, 4, 0x8C, 8] + Array("builtins".utf8) + [0x8C, 4] + Array("eval".utf8) + [0x93, 0x8C, 1, 0x31, 0x85, 0x52, 0x2E]
        do { _ = try run(evil); Issue.record("accepted") } catch let e as TorchArchiveError {
            #expect(e.rule == .globalRefused && e.message.contains("builtins.eval"), "\(e)")
        } catch {}
        // A list that contains itself: refused by depth, not a hang.
        let cycle: [UInt8] = [0x80, 2, 0x5D, 0x71, 0, 0x68, 0, 0x61, 0x2E]
        do { _ = try run(cycle); Issue.record("accepted") } catch let e as TorchArchiveError {
            #expect(e.rule == .tooLarge && e.message.contains("contains itself"), "\(e)")
        } catch {}
        // Tuples nested 40 deep, each holding the one below twice (by memo): 2^40 values once expanded.
        var laughs: [UInt8] = [0x80, 2, 0x4E, 0x71, 0, 0x30]  // None, put 0, pop
        for _ in 0..<40 { laughs += [0x68, 0, 0x68, 0, 0x86, 0x71, 0, 0x30] }  // (get 0, get 0), put 0, pop
        laughs += [0x68, 0, 0x2E]
        do { _ = try run(laughs); Issue.record("accepted") } catch let e as TorchArchiveError {
            #expect(e.rule == .tooLarge && e.message.contains("counting shared ones"), "\(e)")
        } catch {}
        // The two are kept as the pt fuzz target's regressions (Fixtures/README.md has their recipe).
        #expect(Fixtures.readBytes(Fixtures.path("fuzz-regressions/pt/nested-shared-tuples.pkl")) == laughs)
        #expect(Fixtures.readBytes(Fixtures.path("fuzz-regressions/pt/self-containing-list.pkl")) == cycle)
        // Damage: no STOP, a GET of nothing, a string past the end.
        for (code, words) in [([0x80, 2, 0x4E], "no STOP"), ([0x80, 2, 0x68, 5, 0x2E], "memo entry 5"),
                              ([0x80, 2, 0x58, 0xFF, 0xFF, 0, 0, 0x2E], "runs past the end")] as [([UInt8], String)] {
            do { _ = try run(code); Issue.record("accepted") } catch let e as TorchArchiveError {
                #expect(e.rule == .pickleInvalid && e.message.contains(words), "\(e)")
            } catch {}
        }
    }

    /// Views are checked against the storage without overflow.
    @Test func viewBounds() {
        func check(_ offset: Int, _ shape: [Int], _ strides: [Int], _ count: Int) -> Bool {
            (try? TorchArchive.check(offset: offset, shape: shape, strides: strides, storageCount: count) { TorchArchiveError(.tensorInvalid, file: "t", $0) }) != nil
        }
        #expect(check(0, [3, 4], [4, 1], 12))
        #expect(!check(1, [3, 4], [4, 1], 12))
        #expect(check(11, [1], [1], 12))
        #expect(check(0, [0, 5], [5, 1], 0))  // empty: reaches nothing
        #expect(!check(0, [2, Int.max], [1, 1], 100))
        #expect(!check(0, [2, 2], [Int.max, 1], 100))
        #expect(!check(-1, [1], [1], 100))
    }

    @Test func crc32() {
        #expect(CRC32.of(Array("123456789".utf8)[...]) == 0xCBF4_3926)
    }
}
