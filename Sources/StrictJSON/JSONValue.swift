/// A JSON document as parsed by `JSONParser`: objects keep their member order,
/// numbers keep their exact text so that integers are never rounded through a double.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The value as an exact unsigned 64-bit integer, or nil when it is not one
    /// (negative, fractional, written with an exponent, or too large).
    public var uint64Value: UInt64? {
        if case .number(let n) = self { return n.uint64Value }
        return nil
    }

    public var doubleValue: Double? {
        if case .number(let n) = self { return Double(n.text) }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// A short name for the kind of value, for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON number kept as the text it was written with.
public struct JSONNumber: Equatable, Sendable, CustomStringConvertible {
    public let text: String

    public init(text: String) { self.text = text }
    public init(_ value: UInt64) { self.text = String(value) }
    public init(_ value: Int) { self.text = String(value) }
    public init(_ value: Double) {
        if value.isFinite, value == value.rounded(), abs(value) < 1e15 {
            self.text = String(Int64(value))
        } else {
            self.text = "\(value)"
        }
    }

    /// Exact unsigned integer: only plain digits, no sign, fraction or exponent.
    public var uint64Value: UInt64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return UInt64(text)
    }

    public var description: String { text }
}

/// A JSON object with its members in document order. Keys are unique: the parser
/// rejects a document that repeats one.
public struct JSONObject: Equatable, Sendable {
    public var members: [(key: String, value: JSONValue)]

    public init(_ members: [(key: String, value: JSONValue)] = []) {
        self.members = members
    }

    public subscript(key: String) -> JSONValue? {
        for member in members where member.key == key { return member.value }
        return nil
    }

    public var keys: [String] { members.map(\.key) }

    public mutating func append(_ key: String, _ value: JSONValue) {
        members.append((key, value))
    }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        lhs.members.count == rhs.members.count
            && zip(lhs.members, rhs.members).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(JSONNumber(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(nilLiteral: ()) { self = .null }
}

extension JSONValue {
    public static func uint(_ v: UInt64) -> JSONValue { .number(JSONNumber(v)) }
    public static func int(_ v: Int) -> JSONValue { .number(JSONNumber(v)) }
    public static func double(_ v: Double) -> JSONValue {
        v.isFinite ? .number(JSONNumber(v)) : .null
    }
}
