#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a document was refused.
public struct JSONError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// The bytes are not well-formed UTF-8.
        case invalidUTF8
        /// The text is not JSON as RFC 8259 defines it (no comments, BOM, trailing commas, ...).
        case syntax
        /// Arrays and objects nest deeper than the parser allows.
        case tooDeep
        /// A number where an exact unsigned 64-bit integer is required is not one.
        case invalidInteger
        /// An object repeats a key.
        case duplicateKey
    }

    public let kind: Kind
    /// Byte offset into the parsed buffer where the problem was found.
    public let offset: Int
    public let message: String

    public init(_ kind: Kind, at offset: Int, _ message: String) {
        self.kind = kind
        self.offset = offset
        self.message = message
    }

    public var description: String { "\(message) (at byte \(offset))" }
}

/// A strict, allocation-light JSON scanner over a byte buffer.
///
/// It is the building block of `JSONParser` and of the specialised safetensors
/// header parser, which walks the header without building a generic tree.
/// The caller keeps the buffer alive while the scanner is used.
public struct JSONScanner {
    public static let defaultMaxDepth = 128

    public let bytes: UnsafeRawBufferPointer
    public var position: Int
    public let maxDepth: Int

    public init(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = JSONScanner.defaultMaxDepth) {
        self.bytes = bytes
        self.position = 0
        self.maxDepth = maxDepth
    }

    @inline(__always) public var atEnd: Bool { position >= bytes.count }

    @inline(__always) public func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    /// Skips JSON whitespace (space, tab, LF, CR) and says whether there was any.
    @discardableResult @inline(__always)
    public mutating func skipWhitespace() -> Bool {
        let start = position
        while position < bytes.count {
            let c = bytes[position]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { position += 1 } else { break }
        }
        return position != start
    }

    public func syntaxError(_ message: String) -> JSONError {
        JSONError(.syntax, at: position, message)
    }

    public func describeHere() -> String {
        guard let c = peek() else { return "end of input" }
        if c >= 0x21 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        return "byte 0x" + String(c, radix: 16, uppercase: true)
    }

    @inline(__always)
    public mutating func expect(_ c: UInt8, _ what: @autoclosure () -> String) throws {
        guard position < bytes.count, bytes[position] == c else {
            throw syntaxError("expected \(what()), found \(describeHere())")
        }
        position += 1
    }

    /// Consumes `c` if it is next (after whitespace) and says whether it was.
    @inline(__always)
    public mutating func consume(_ c: UInt8) -> Bool {
        skipWhitespace()
        if position < bytes.count, bytes[position] == c {
            position += 1
            return true
        }
        return false
    }

    // MARK: Objects and arrays

    /// Walks an object's members, calling `member` with the scanner positioned at
    /// each value (which `member` must consume). Rejects trailing commas.
    public mutating func scanObject(depth: Int, _ member: (inout JSONScanner, String, Int) throws -> Void) throws {
        try scanObjectRawKeys(depth: depth) { s, key, offset in
            try member(&s, String(decoding: key, as: UTF8.self), offset)
        }
    }

    /// Like `scanObject`, but hands each member name over as its UTF-8 bytes
    /// (escapes decoded) without making a String: for hot paths that only compare names.
    public mutating func scanObjectRawKeys(
        depth: Int, _ member: (inout JSONScanner, UnsafeRawBufferPointer, Int) throws -> Void
    ) throws {
        guard depth <= maxDepth else {
            throw JSONError(.tooDeep, at: position, "nesting deeper than \(maxDepth) levels")
        }
        skipWhitespace()
        try expect(UInt8(ascii: "{"), "'{'")
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            position += 1
            return
        }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else {
                throw syntaxError("expected a member name in double quotes, found \(describeHere())")
            }
            let keyOffset = position
            // Plain names (no escapes) are passed straight from the buffer.
            if let end = plainStringEnd(from: position + 1) {
                let key = UnsafeRawBufferPointer(rebasing: bytes[(position + 1)..<end])
                position = end + 1
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "':' after member name")
                skipWhitespace()
                try member(&self, key, keyOffset)
            } else {
                var key = try parseString()
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "':' after member name")
                skipWhitespace()
                try key.withUTF8 { k in try member(&self, UnsafeRawBufferPointer(k), keyOffset) }
            }
            skipWhitespace()
            guard let c = peek() else { throw syntaxError("unterminated object") }
            position += 1
            if c == UInt8(ascii: "}") { return }
            guard c == UInt8(ascii: ",") else {
                position -= 1
                throw syntaxError("expected ',' or '}' in object, found \(describeHere())")
            }
        }
    }

    /// Walks an array's elements, calling `element` positioned at each one.
    public mutating func scanArray(depth: Int, _ element: (inout JSONScanner, Int) throws -> Void) throws {
        guard depth <= maxDepth else {
            throw JSONError(.tooDeep, at: position, "nesting deeper than \(maxDepth) levels")
        }
        skipWhitespace()
        try expect(UInt8(ascii: "["), "'['")
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            position += 1
            return
        }
        var index = 0
        while true {
            skipWhitespace()
            try element(&self, index)
            index += 1
            skipWhitespace()
            guard let c = peek() else { throw syntaxError("unterminated array") }
            position += 1
            if c == UInt8(ascii: "]") { return }
            guard c == UInt8(ascii: ",") else {
                position -= 1
                throw syntaxError("expected ',' or ']' in array, found \(describeHere())")
            }
        }
    }

    // MARK: Scalars

    /// From `start` (just after an opening quote), the offset of the closing quote
    /// when the string has no escapes and no control characters; nil otherwise.
    /// Tests eight bytes at a time (SWAR) for a quote, a backslash or a byte below 0x20.
    @inline(__always)
    public func plainStringEnd(from start: Int) -> Int? {
        var i = start
        let ones: UInt64 = 0x0101_0101_0101_0101
        let high: UInt64 = 0x8080_8080_8080_8080
        while i + 8 <= bytes.count {
            let w = bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let quote = w ^ (ones &* 0x22)
            let backslash = w ^ (ones &* 0x5C)
            let special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w)
            if special & high != 0 { break }
            i += 8
        }
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") { return i }
            if c == UInt8(ascii: "\\") || c < 0x20 { return nil }
            i += 1
        }
        return nil
    }

    /// Parses a string, returning `previous` itself (no new allocation) when the
    /// string has the same bytes: for documents that repeat a value many times.
    public mutating func parseString(reusing previous: String) throws -> String {
        var previous = previous
        let start = position + 1
        let same: Bool = previous.withUTF8 { p in
            // Only plain strings compare raw: an escape or quote in `previous` would not match its JSON form.
            guard !p.isEmpty, !p.contains(where: { $0 == 0x22 || $0 == 0x5C || $0 < 0x20 }) else { return false }
            let end = start + p.count
            guard end < bytes.count, bytes[end] == UInt8(ascii: "\""), bytes[position] == UInt8(ascii: "\"") else { return false }
            return memcmp(p.baseAddress!, bytes.baseAddress! + start, p.count) == 0
        }
        if same {
            position = start + previous.utf8.count + 1
            return previous
        }
        return try parseString()
    }

    /// Parses a string at the current position. The buffer must already be known
    /// to be valid UTF-8 (see `UTF8Validation`).
    public mutating func parseString() throws -> String {
        try expect(UInt8(ascii: "\""), "'\"'")
        let start = position
        if let end = plainStringEnd(from: start) {
            position = end + 1
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        }
        // Slow path: escapes (or an error) somewhere in the string.
        while position < bytes.count, bytes[position] != UInt8(ascii: "\\"), bytes[position] != UInt8(ascii: "\""),
              bytes[position] >= 0x20 {
            position += 1
        }
        var out = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<position]))
        while position < bytes.count {
            let c = bytes[position]
            if c == UInt8(ascii: "\"") {
                position += 1
                return String(decoding: out, as: UTF8.self)
            }
            if c < 0x20 { throw syntaxError("unescaped control character 0x\(String(c, radix: 16)) in string") }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                position += 1
                continue
            }
            position += 1
            guard let e = peek() else { break }
            position += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try parseHex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard position + 1 < bytes.count, bytes[position] == 0x5C, bytes[position + 1] == UInt8(ascii: "u")
                    else { throw syntaxError("unpaired surrogate \\u\(String(scalar, radix: 16)) in string") }
                    position += 2
                    let low = try parseHex4()
                    guard low >= 0xDC00 && low < 0xE000 else {
                        throw syntaxError("unpaired surrogate \\u\(String(scalar, radix: 16)) in string")
                    }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    throw syntaxError("unpaired surrogate \\u\(String(scalar, radix: 16)) in string")
                }
                appendUTF8(scalar, to: &out)
            default:
                position -= 1
                throw syntaxError("invalid escape '\\\(Character(Unicode.Scalar(e)))' in string")
            }
        }
        throw JSONError(.syntax, at: start - 1, "unterminated string")
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw syntaxError("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[position]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw syntaxError("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
            position += 1
        }
        return v
    }

    private func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
        switch scalar {
        case 0..<0x80:
            out.append(UInt8(scalar))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | scalar >> 6))
            out.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | scalar >> 12))
            out.append(UInt8(0x80 | (scalar >> 6) & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        default:
            out.append(UInt8(0xF0 | scalar >> 18))
            out.append(UInt8(0x80 | (scalar >> 12) & 0x3F))
            out.append(UInt8(0x80 | (scalar >> 6) & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// Scans the extent of a JSON number and checks its grammar; returns its byte range.
    public mutating func scanNumber() throws -> Range<Int> {
        let start = position
        if peek() == UInt8(ascii: "-") { position += 1 }
        guard let first = peek(), first >= 0x30, first <= 0x39 else {
            throw syntaxError("invalid number")
        }
        position += 1
        if first == 0x30, let next = peek(), next >= 0x30, next <= 0x39 {
            throw syntaxError("number with a leading zero")
        }
        skipDigits()
        if peek() == UInt8(ascii: ".") {
            position += 1
            guard skipDigits() > 0 else { throw syntaxError("invalid number: no digits after '.'") }
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            position += 1
            if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { position += 1 }
            guard skipDigits() > 0 else { throw syntaxError("invalid number: no digits in exponent") }
        }
        return start..<position
    }

    @discardableResult @inline(__always)
    private mutating func skipDigits() -> Int {
        let start = position
        while position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 { position += 1 }
        return position - start
    }

    /// Parses an exact unsigned 64-bit integer: digits only. A negative number,
    /// a fraction (`4.0`), an exponent (`2e0`) or a value above 2^64-1 is refused
    /// as `.invalidInteger`; anything that is not a number at all as `.syntax`.
    public mutating func parseUInt64(_ what: @autoclosure () -> String) throws -> UInt64 {
        let start = position
        // Fast path: plain digits (no leading zero) that fit, followed by a delimiter.
        if start < bytes.count, bytes[start] >= 0x31 && bytes[start] <= 0x39 || bytes[start] == 0x30 {
            var i = start
            var value: UInt64 = 0
            var fits = true
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39, i - start < 19 {
                value = value &* 10 &+ UInt64(bytes[i] &- 0x30)
                i += 1
            }
            if i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { fits = false }
            let leadingZero = bytes[start] == 0x30 && i - start > 1
            if fits && !leadingZero, i < bytes.count,
               bytes[i] != UInt8(ascii: "."), bytes[i] != UInt8(ascii: "e"), bytes[i] != UInt8(ascii: "E") {
                position = i
                return value
            }
        }
        guard let c = peek(), c == UInt8(ascii: "-") || (c >= 0x30 && c <= 0x39) else {
            throw syntaxError("\(what()) must be an unsigned integer, found \(describeHere())")
        }
        let range = try scanNumber()
        var value: UInt64 = 0
        var exact = bytes[start] != UInt8(ascii: "-")
        if exact {
            for i in range {
                let c = bytes[i]
                guard c >= 0x30 && c <= 0x39 else {
                    exact = false
                    break
                }
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(c - 0x30))
                if o1 || o2 {
                    throw JSONError(.invalidInteger, at: start, "\(what()) \(text(range)) is larger than 2^64-1")
                }
                value = a
            }
        }
        guard exact else {
            throw JSONError(
                .invalidInteger, at: start,
                "\(what()) must be an exact unsigned integer, found \(text(range))")
        }
        return value
    }

    public func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private mutating func expectLiteral(_ literal: StaticString) throws {
        let n = literal.utf8CodeUnitCount
        guard position + n <= bytes.count else { throw syntaxError("invalid literal, found \(describeHere())") }
        let lit = literal.utf8Start
        for i in 0..<n where bytes[position + i] != lit[i] {
            throw syntaxError("invalid literal, found \(describeHere())")
        }
        position += n
    }

    // MARK: Generic values

    /// Parses any value into a tree. `depth` is the nesting level of the value
    /// itself (the top-level value is at depth 1).
    public mutating func parseValue(depth: Int) throws -> JSONValue {
        skipWhitespace()
        guard let c = peek() else { throw syntaxError("expected a value, found end of input") }
        switch c {
        case UInt8(ascii: "{"):
            var object = JSONObject()
            var seen: Set<String>? = nil
            try scanObject(depth: depth) { scanner, key, keyOffset in
                if object.members.count >= 8 {
                    if seen == nil { seen = Set(object.members.map(\.key)) }
                    if !seen!.insert(key).inserted {
                        throw JSONError(.duplicateKey, at: keyOffset, "duplicate key \"\(key)\"")
                    }
                } else if object.members.contains(where: { $0.key == key }) {
                    throw JSONError(.duplicateKey, at: keyOffset, "duplicate key \"\(key)\"")
                }
                object.members.append((key, try scanner.parseValue(depth: depth + 1)))
            }
            return .object(object)
        case UInt8(ascii: "["):
            var array: [JSONValue] = []
            try scanArray(depth: depth) { scanner, _ in
                array.append(try scanner.parseValue(depth: depth + 1))
            }
            return .array(array)
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), 0x30...0x39:
            let range = try scanNumber()
            return .number(JSONNumber(text: text(range)))
        default:
            throw syntaxError("expected a value, found \(describeHere())")
        }
    }
}
