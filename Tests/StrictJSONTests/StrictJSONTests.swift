import StrictJSON
import Testing

@Suite struct StrictJSONParsing {
    func kind(_ text: String, maxDepth: Int = 128) -> JSONError.Kind? {
        do {
            _ = try JSONParser.parse(text, maxDepth: maxDepth)
            return nil
        } catch let e as JSONError {
            return e.kind
        } catch {
            return nil
        }
    }

    @Test func parsesOrderedObjects() throws {
        let v = try JSONParser.parse(#" {"b": [1, 2.5, -3e2, true, false, null], "a": {"x": "y"}} "#)
        let o = try #require(v.objectValue)
        #expect(o.keys == ["b", "a"])
        #expect(o["b"]?.arrayValue?.count == 6)
        #expect(o["b"]?.arrayValue?[1].doubleValue == 2.5)
        #expect(o["b"]?.arrayValue?[2].doubleValue == -300)
        #expect(o["a"]?.objectValue?["x"]?.stringValue == "y")
    }

    @Test(arguments: [
        "{\"a\":1,}", "[1,2,]", "{\"a\":1} x", "{\"a\":1}\0", "// c\n{}", "{'a':1}", "{\"a\":01}",
        "{\"a\":NaN}", "{\"a\":Infinity}", "{\"a\":\"\\x\"}", "{\"a\":\"\u{01}\"}", "{\"a\" 1}", "{a:1}", "",
        "{\"a\":1.}", "{\"a\":1e}", "{\"a\":-}", "\u{FEFF}{}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00x\"}",
        "{\"a\":tru}",
    ])
    func refusesNonJSON(_ text: String) {
        #expect(kind(text) == .syntax, "\(text.debugDescription)")
    }

    @Test func refusesDuplicateKeysAtAnySize() {
        #expect(kind(#"{"a":1,"a":2}"#) == .duplicateKey)
        let many = (0..<20).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        #expect(kind("{\(many)}") == nil)
        #expect(kind("{\(many),\"k3\":0}") == .duplicateKey)
        #expect(kind(#"{"o":{"a":1},"p":{"a":1}}"#) == nil)
    }

    @Test func boundsNesting() {
        let ok = String(repeating: "[", count: 128) + String(repeating: "]", count: 128)
        let deep = String(repeating: "[", count: 129) + String(repeating: "]", count: 129)
        #expect(kind(ok) == nil)
        #expect(kind(deep) == .tooDeep)
        // Bounded: a million levels is refused without exhausting the stack.
        #expect(kind(String(repeating: "[", count: 1_000_000)) == .tooDeep)
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        let v = try JSONParser.parse(#"["a\"b\\c\/\b\f\n\r\t", "\u00e9\ud83d\ude00"]"#)
        #expect(v.arrayValue?[0].stringValue == "a\"b\\c/\u{08}\u{0C}\n\r\t")
        #expect(v.arrayValue?[1].stringValue == "é😀")
    }

    @Test func exactUnsignedIntegers() throws {
        func u64(_ text: String) throws -> UInt64 {
            let bytes = Array(text.utf8)
            return try bytes.withUnsafeBytes { buf in
                var s = JSONScanner(buf)
                return try s.parseUInt64("n")
            }
        }
        #expect(try u64("0") == 0)
        #expect(try u64("18446744073709551615") == UInt64.max)
        for bad in ["18446744073709551616", "-1", "-0", "4.0", "2e0", "1E3", "99999999999999999999999"] {
            #expect(throws: JSONError.self) { try u64(bad) }
            do { _ = try u64(bad) } catch let e as JSONError { #expect(e.kind == .invalidInteger, "\(bad)") } catch {}
        }
        #expect(JSONValue.number(JSONNumber(text: "4.0")).uint64Value == nil)
    }
}

@Suite struct UTF8Strictness {
    func invalid(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { UTF8Validation.firstInvalidOffset($0) }
    }

    @Test func acceptsWellFormed() {
        #expect(invalid(Array("plain ascii text of some length".utf8)) == nil)
        #expect(invalid(Array("é ñ € 😀 \u{10FFFF}".utf8)) == nil)
    }

    @Test func refusesMalformed() {
        #expect(invalid([0x61, 0xFF]) == 1)
        #expect(invalid([0xC0, 0xAF]) == 0)  // overlong '/'
        #expect(invalid([0xE0, 0x80, 0xAF]) == 0)  // overlong
        #expect(invalid([0xED, 0xA0, 0x80]) == 0)  // surrogate
        #expect(invalid([0xF4, 0x90, 0x80, 0x80]) == 0)  // above U+10FFFF
        #expect(invalid([0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0xE2, 0x82]) == 8)  // truncated after ASCII run
        #expect(invalid([0x80]) == 0)  // lone continuation
    }
}

@Suite struct Serialization {
    @Test func escapesLikeTheReferenceWriter() {
        var out: [UInt8] = []
        JSONSerializer.appendEscaped("q\"b\\n\nt\t\u{01}\u{1F}\u{08}\u{0C}\r/é😀\u{7F}", to: &out)
        #expect(String(decoding: out, as: UTF8.self) == #""q\"b\\n\nt\t\u0001\u001f\b\f\r/é😀"# + "\u{7F}\"")
    }

    @Test func roundTripsThroughTheParser() throws {
        let value: JSONValue = .object(JSONObject([
            ("a", [1, 2, 3]), ("b", .string("x\ny")), ("c", .null), ("d", .object(JSONObject([("e", true)]))),
        ]))
        #expect(try JSONParser.parse(JSONSerializer.compact(value)) == value)
        #expect(try JSONParser.parse(JSONSerializer.pretty(value)) == value)
    }
}
