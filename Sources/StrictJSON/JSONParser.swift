/// Parses whole JSON documents strictly: exactly one value with only JSON
/// whitespace around it, well-formed UTF-8, no byte order mark, no comments, no
/// trailing commas, no duplicate keys, nesting bounded by `maxDepth`.
public enum JSONParser {
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = JSONScanner.defaultMaxDepth) throws
        -> JSONValue
    {
        try checkEncoding(bytes)
        var scanner = JSONScanner(bytes, maxDepth: maxDepth)
        let value = try scanner.parseValue(depth: 1)
        try scanner.expectEndOfDocument()
        return value
    }

    public static func parse(_ bytes: [UInt8], maxDepth: Int = JSONScanner.defaultMaxDepth) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0, maxDepth: maxDepth) }
    }

    public static func parse(_ text: String, maxDepth: Int = JSONScanner.defaultMaxDepth) throws -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }

    /// Refuses a byte order mark and malformed UTF-8 with errors that say which.
    public static func checkEncoding(_ bytes: UnsafeRawBufferPointer) throws {
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
            throw JSONError(.syntax, at: 0, "starts with a UTF-8 byte order mark, which JSON does not allow")
        }
        if let bad = UTF8Validation.firstInvalidOffset(bytes) {
            throw JSONError(.invalidUTF8, at: bad, "invalid UTF-8 (byte 0x\(String(bytes[bad], radix: 16, uppercase: true)))")
        }
    }
}

extension JSONScanner {
    /// After the document's value: only whitespace may follow.
    public mutating func expectEndOfDocument() throws {
        skipWhitespace()
        guard atEnd else {
            if peek() == 0 { throw syntaxError("NUL byte after the JSON value (pad with spaces, not NUL)") }
            throw syntaxError("unexpected \(describeHere()) after the JSON value")
        }
    }
}
