import Foundation
import FixtureSupport
import SafetensorsFormat
import StrictJSON
import Testing

/// Every malformed file under Fixtures/malformed (one or more per rule, written
/// byte by byte by Fixtures/generate.py) is refused with its rule, naming the file
/// and, when one is at fault, the tensor.
@Suite struct MalformedFiles {
    static let cases = Fixtures.manifest("malformed/manifest.json")

    @Test func manifestCoversEveryFileRule() {
        let rules = Set(Self.cases.compactMap { $0["rule"]?.stringValue })
        let fileRules: [Rule] = [
            .fileTooSmall, .headerTooLarge, .headerOutOfBounds, .headerNotUTF8, .headerInvalidJSON, .headerTooDeep,
            .invalidInteger, .invalidMetadata, .duplicateMetadataKey, .missingField, .invalidField, .unknownDtype,
            .duplicateTensor, .invalidOffsets, .offsetsNotContiguous, .sizeOverflow, .packedSizeNotByteAligned,
            .sizeMismatch, .trailingBytes, .dataTruncated,
        ]
        for r in fileRules { #expect(rules.contains(r.rawValue), "no malformed fixture for \(r.rawValue)") }
        #expect(Self.cases.count >= 40)
    }

    @Test(arguments: cases)
    func refusedWithItsRule(_ entry: JSONObject) throws {
        let file = try #require(entry["file"]?.stringValue)
        let rule = try #require(entry["rule"]?.stringValue)
        let path = Fixtures.path("malformed/" + file)
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("\(file) was accepted; expected \(rule)")
        } catch {
            let first = try #require(error.problems.first)
            #expect(first.rule.rawValue == rule, "\(file): got \(first)")
            #expect(first.file == path)
            if let tensor = entry["tensor"]?.stringValue {
                #expect(first.tensor == tensor, "\(file): \(first)")
            }
            #expect(first.description.contains(rule))
            #expect(!first.rule.hint.isEmpty)
        }
    }
}

@Suite struct ValidEdgeCases {
    static let cases = Fixtures.manifest("valid/manifest.json")

    @Test(arguments: cases)
    func acceptedWithTheRecordedHeader(_ entry: JSONObject) throws {
        let file = try #require(entry["file"]?.stringValue)
        let f = try SafetensorsFile(path: Fixtures.path("valid/" + file))
        let warnings = Set(f.header.warnings.map(\.kind.rawValue))
        let expectedWarnings = Set(entry["warnings"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        #expect(warnings == expectedWarnings, "\(file)")

        let tensors = try #require(entry["tensors"]?.objectValue)
        #expect(f.tensors.count == tensors.members.count, "\(file)")
        for (name, value) in tensors.members {
            let t = try #require(f.tensor(named: name), "\(file): \(name) missing")
            let info = try #require(value.objectValue)
            #expect(t.dtype.rawValue == info["dtype"]?.stringValue)
            #expect(t.shape == info["shape"]?.arrayValue?.compactMap(\.uint64Value))
            #expect([t.begin, t.end] == info["data_offsets"]?.arrayValue?.compactMap(\.uint64Value))
        }
        if let metadata = entry["metadata"]?.objectValue {
            #expect(f.header.metadata?.map(\.key) == metadata.keys)
            for (k, v) in metadata.members { #expect(f.header.metadataValue(k) == v.stringValue) }
        } else {
            #expect(f.header.metadata == nil || f.header.metadata?.isEmpty == true)
        }
    }

    /// Values read through the (possibly unaligned) map equal what numpy wrote.
    @Test func valuesReadUnaligned() throws {
        let entry = try #require(Self.cases.first { $0["file"]?.stringValue == "all_dtypes.safetensors" })
        let f = try SafetensorsFile(path: Fixtures.path("valid/all_dtypes.safetensors"))
        let values = try #require(entry["values"]?.objectValue)
        let u64 = try #require(f.tensor(named: "u64"))
        let data = f.data(u64)
        let expected = values["u64"]!.arrayValue!.map { $0.uint64Value! }
        #expect((0..<expected.count).map { data.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } == expected)
        let f64 = try #require(f.tensor(named: "f64"))
        let expectedF64 = values["f64"]!.arrayValue!.map { $0.doubleValue! }
        let got = (0..<expectedF64.count).map { f.data(f64).loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
        #expect(got == expectedF64)
    }

    @Test func packedTypesTakeWholeBytes() throws {
        #expect(try Dtype.F4.byteSize(elements: 4).get() == 2)
        #expect(try Dtype.F6_E2M3.byteSize(elements: 4).get() == 3)
        #expect(throws: Dtype.SizeError.self) { try Dtype.F6_E3M2.byteSize(elements: 3).get() }
        #expect(throws: Dtype.SizeError.self) { try Dtype.C64.byteSize(elements: UInt64.max / 2).get() }
        #expect(Dtype.allCases.count == 22)
    }

    @Test func displayEscapesControlCharacters() {
        #expect(escapeForDisplay("a\u{1B}[2Jb") == "a\\u{1b}[2Jb")
        #expect(escapeForDisplay("x\ny\\") == "x\\ny\\\\")
        #expect(escapeForDisplay("plain.name") == "plain.name")
        #expect(escapeForDisplay("rtl\u{202E}x") == "rtl\\u{202e}x")
    }
}

/// A file that is plainly something else is called what it is, not a header of absurd length.
@Suite struct NotSafetensors {
    @Test(arguments: [
        ("<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML"),
        ("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
        ("just some notes\n", "a text file"),
        ("GGUF\u{3}\u{0}\u{0}\u{0}", "GGUF"),
        ("{\"weight_map\": {}}", "JSON text"),
        ("hi", "a text file"),
    ])
    func isNamedForWhatItIs(_ content: String, _ expected: String) throws {
        let path = Fixtures.temporaryDirectory() + "/x.safetensors"
        defer { Fixtures.removeTemporary(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(content.utf8)))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("accepted")
        } catch {
            #expect(error.problems.first?.rule == .notSafetensors)
            #expect(error.description.contains(expected), "\(error)")
        }
    }

    @Test(arguments: [([0x50, 0x4B, 0x03, 0x04, 0, 0, 0, 0, 0, 0], "zip archive"), ([0x80, 0x02, 0x7D, 0x71, 0, 0, 0, 0, 0], "pickle")])
    func binaryFormatsAreRecognised(_ bytes: [UInt8], _ expected: String) throws {
        let path = Fixtures.temporaryDirectory() + "/x.safetensors"
        defer { Fixtures.removeTemporary(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains(expected), "\(error)")
        }
    }
}
