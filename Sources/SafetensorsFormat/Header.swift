#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import StrictJSON

/// The format's fixed facts.
public enum SafetensorsLimits {
    /// Bytes of the little-endian header length that opens every file.
    public static let prefixBytes: UInt64 = 8
    /// Largest header the reference reader accepts (and so do we).
    public static let maxHeaderBytes: UInt64 = 100_000_000
    /// Deepest nesting of arrays and objects accepted in a header (the top-level object is level 1).
    public static let maxNesting = 128
    /// The header key that holds string-to-string metadata rather than a tensor.
    public static let metadataKey = "__metadata__"
}

/// One tensor as the header describes it. Offsets are relative to the start of the data section.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: Dtype
    public let shape: [UInt64]
    public let begin: UInt64
    public let end: UInt64

    public init(name: String, dtype: Dtype, shape: [UInt64], begin: UInt64, end: UInt64) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.begin = begin
        self.end = end
    }

    /// Logical elements (for packed types, not bytes). Valid once the header is validated.
    public var elementCount: UInt64 { SafetensorsFormat.elementCount(shape) ?? 0 }
    public var byteCount: UInt64 { end - begin }
}

/// A validated header: metadata in document order (nil when absent or null) and
/// the tensors sorted by their data offsets.
public struct SafetensorsHeader: Sendable {
    public let headerLength: UInt64
    public let metadata: [(key: String, value: String)]?
    public let tensors: [TensorInfo]
    public let warnings: [Warning]

    /// Offset of the data section from the start of the file.
    public var dataStart: UInt64 { SafetensorsLimits.prefixBytes + headerLength }
    /// Size of the data section: the end of the last tensor.
    public var dataBytes: UInt64 { tensors.last?.end ?? 0 }

    public func metadataValue(_ key: String) -> String? {
        metadata?.first(where: { $0.key == key })?.value
    }
}

/// Parses and validates safetensors headers. Everything about a header is checked
/// here, once; code that receives a `SafetensorsHeader` can trust it.
public enum HeaderParser {
    /// Validates the 8-byte prefix against the file size and returns the header length.
    public static func headerLength(prefix: UInt64, fileSize: UInt64, file: String) throws(InvalidInput) -> UInt64 {
        guard prefix <= SafetensorsLimits.maxHeaderBytes else {
            throw InvalidInput(Problem(file: file, rule: .headerTooLarge,
                "header length \(prefix) is above the limit of \(SafetensorsLimits.maxHeaderBytes) bytes"))
        }
        // prefix <= 1e8, so adding 8 cannot overflow.
        guard prefix + SafetensorsLimits.prefixBytes <= fileSize else {
            throw InvalidInput(Problem(file: file, rule: .headerOutOfBounds,
                "header length \(prefix) runs past the end of the \(fileSize)-byte file"))
        }
        return prefix
    }

    /// Parses the header JSON (`json` holds exactly the N header bytes) and checks
    /// it against a file of `fileSize` bytes.
    public static func parse(_ json: UnsafeRawBufferPointer, fileSize: UInt64, file: String) throws(InvalidInput)
        -> SafetensorsHeader
    {
        let headerLength = UInt64(json.count)
        var warnings: [Warning] = []
        var metadata: [(key: String, value: String)]? = nil
        var sawMetadata = false
        var entries: [TensorInfo] = []
        var names = NameTable<Void>(minimumCapacity: json.count / 128)
        var shapeCache: [[UInt64]] = Array(repeating: [], count: 8)
        var shapeCacheNext = 0

        do {
            try JSONParser.checkEncoding(json)
        } catch {
            throw InvalidInput(problem(from: error, file: file, tensor: nil))
        }
        var scanner = JSONScanner(json, maxDepth: SafetensorsLimits.maxNesting)
        if scanner.skipWhitespace() {
            warnings.append(Warning(file: file, kind: .leadingWhitespace,
                "header starts with whitespace before '{' (accepted; the reference writer never does this)"))
        }
        guard scanner.peek() == UInt8(ascii: "{") else {
            let found = scanner.describeHere()
            throw InvalidInput(Problem(file: file, rule: .headerInvalidJSON, "header must be a JSON object, found \(found)"))
        }

        var currentTensor: String? = nil
        do {
            try scanner.scanObject(depth: 1) { s, key, keyOffset in
                if key == SafetensorsLimits.metadataKey {
                    currentTensor = nil
                    guard !sawMetadata else {
                        throw Problem(file: file, rule: .duplicateMetadataKey, "\"__metadata__\" appears twice")
                    }
                    sawMetadata = true
                    metadata = try parseMetadata(&s, file: file)
                    return
                }
                currentTensor = key
                guard names.insert(key, ()).inserted else {
                    throw Problem(file: file, tensor: key, rule: .duplicateTensor,
                        "tensor name appears twice in the header (the reference reader would silently keep the last)")
                }
                entries.append(try parseEntry(&s, name: key, file: file, warnings: &warnings,
                                              shapeCache: &shapeCache, shapeCacheNext: &shapeCacheNext))
            }
            try scanner.expectEndOfDocument()
        } catch let p as Problem {
            throw InvalidInput(p)
        } catch let e as JSONError {
            throw InvalidInput(problem(from: e, file: file, tensor: currentTensor))
        } catch {
            throw InvalidInput(Problem(file: file, rule: .headerInvalidJSON, "\(error)"))
        }

        let problems = validateLayout(&entries, dataBytesInFile: fileSize - SafetensorsLimits.prefixBytes - headerLength,
                                      file: file)
        guard problems.isEmpty else { throw InvalidInput(problems) }
        return SafetensorsHeader(headerLength: headerLength, metadata: metadata, tensors: entries, warnings: warnings)
    }

    private static func problem(from e: Error, file: String, tensor: String?) -> Problem {
        guard let e = e as? JSONError else {
            return Problem(file: file, tensor: tensor, rule: .headerInvalidJSON, "\(e)")
        }
        let rule: Rule
        switch e.kind {
        case .invalidUTF8: rule = .headerNotUTF8
        case .syntax: rule = .headerInvalidJSON
        case .tooDeep: rule = .headerTooDeep
        case .invalidInteger: rule = .invalidInteger
        case .duplicateKey: rule = .invalidField
        }
        return Problem(file: file, tensor: tensor, rule: rule, "header byte \(e.offset): \(e.message)")
    }

    private static func parseMetadata(_ s: inout JSONScanner, file: String) throws -> [(key: String, value: String)]? {
        switch s.peek() {
        case UInt8(ascii: "n"):
            let v = try s.parseValue(depth: 2)
            guard v == .null else { throw s.syntaxError("invalid literal") }
            return nil
        case UInt8(ascii: "{"):
            var pairs: [(key: String, value: String)] = []
            var keys = Set<String>()
            try s.scanObject(depth: 2) { s, key, _ in
                guard keys.insert(key).inserted else {
                    throw Problem(file: file, rule: .duplicateMetadataKey,
                        "__metadata__ key \"\(key)\" appears twice (the reference reader would silently keep the last)")
                }
                guard s.peek() == UInt8(ascii: "\"") else {
                    let found = try s.parseValue(depth: 3)
                    throw Problem(file: file, rule: .invalidMetadata,
                        "__metadata__ value of \"\(key)\" must be a string, found \(found.kindName)")
                }
                pairs.append((key, try s.parseString()))
            }
            return pairs
        default:
            let found = try s.parseValue(depth: 2)
            throw Problem(file: file, rule: .invalidMetadata,
                "__metadata__ must be an object of strings or null, found \(found.kindName)")
        }
    }

    private static func parseEntry(_ s: inout JSONScanner, name: String, file: String, warnings: inout [Warning],
                                   shapeCache: inout [[UInt64]], shapeCacheNext: inout Int) throws
        -> TensorInfo
    {
        guard s.peek() == UInt8(ascii: "{") else {
            let found = try s.parseValue(depth: 2)
            throw Problem(file: file, tensor: name, rule: .invalidField, "entry must be an object, found \(found.kindName)")
        }
        var dtype: Dtype? = nil
        var shape: [UInt64]? = nil
        var offsets: (UInt64, UInt64)? = nil
        try s.scanObjectRawKeys(depth: 2) { s, rawKey, _ in
            switch MemberName(rawKey) {
            case .dtype:
                guard dtype == nil else { throw Problem(file: file, tensor: name, rule: .invalidField, "\"dtype\" appears twice") }
                guard s.peek() == UInt8(ascii: "\"") else {
                    let found = try s.parseValue(depth: 3)
                    throw Problem(file: file, tensor: name, rule: .invalidField, "\"dtype\" must be a string, found \(found.kindName)")
                }
                let start = s.position
                if let d = s.matchDtype() {
                    dtype = d
                    return
                }
                s.position = start
                let text = try s.parseString()
                guard let d = Dtype(rawValue: text) else {
                    throw Problem(file: file, tensor: name, rule: .unknownDtype,
                        "unknown dtype \"\(text)\" (names are case-sensitive: \(Dtype.allCases.map(\.rawValue).joined(separator: " ")))")
                }
                dtype = d
            case .shape, .dataOffsets:
                let isShape = MemberName(rawKey) == .shape
                let key = isShape ? "shape" : "data_offsets"
                guard isShape ? shape == nil : offsets == nil else {
                    throw Problem(file: file, tensor: name, rule: .invalidField, "\"\(key)\" appears twice")
                }
                guard s.peek() == UInt8(ascii: "[") else {
                    let found = try s.parseValue(depth: 3)
                    throw Problem(file: file, tensor: name, rule: .invalidField, "\"\(key)\" must be an array, found \(found.kindName)")
                }
                var values: [UInt64] = []
                var pair: (UInt64, UInt64) = (0, 0)
                var count = 0
                try s.scanArray(depth: 3) { s, i in
                    let v = try s.parseUInt64("\"\(key)\" element")
                    if isShape {
                        values.append(v)
                    } else if i == 0 {
                        pair.0 = v
                    } else if i == 1 {
                        pair.1 = v
                    }
                    count += 1
                }
                if isShape {
                    // Checkpoints repeat a few shapes many times: share one array per shape.
                    if let same = shapeCache.first(where: { $0 == values }) {
                        shape = same
                    } else {
                        shapeCache[shapeCacheNext] = values
                        shapeCacheNext = (shapeCacheNext + 1) % shapeCache.count
                        shape = values
                    }
                } else {
                    guard count == 2 else {
                        throw Problem(file: file, tensor: name, rule: .invalidField,
                            "\"data_offsets\" must hold exactly two integers [begin, end], found \(count)")
                    }
                    offsets = pair
                }
            case .other:
                _ = try s.parseValue(depth: 3)
                let key = String(decoding: rawKey, as: UTF8.self)
                warnings.append(Warning(file: file, tensor: name, kind: .unknownMember,
                    "unknown member \"\(key)\" ignored"))
            }
        }
        guard let dtype else { throw Problem(file: file, tensor: name, rule: .missingField, "entry has no \"dtype\"") }
        guard let shape else { throw Problem(file: file, tensor: name, rule: .missingField, "entry has no \"shape\"") }
        guard let offsets else { throw Problem(file: file, tensor: name, rule: .missingField, "entry has no \"data_offsets\"") }
        return TensorInfo(name: name, dtype: dtype, shape: shape, begin: offsets.0, end: offsets.1)
    }

    /// Checks sizes and that the tensors tile the data section exactly, sorting
    /// `entries` by offset. Returns every problem found.
    static func validateLayout(_ entries: inout [TensorInfo], dataBytesInFile: UInt64, file: String) -> [Problem] {
        var problems: [Problem] = []
        for t in entries {
            guard t.end >= t.begin else {
                problems.append(Problem(file: file, tensor: t.name, rule: .invalidOffsets,
                    "data_offsets [\(t.begin), \(t.end)] end before they begin"))
                continue
            }
            guard let n = elementCount(t.shape) else {
                problems.append(Problem(file: file, tensor: t.name, rule: .sizeOverflow,
                    "shape \(formatShape(t.shape)) has more elements than 2^64-1"))
                continue
            }
            let bytes: UInt64
            switch t.dtype.byteSize(elements: n) {
            case .success(let b):
                bytes = b
            case .failure(.overflow):
                problems.append(Problem(file: file, tensor: t.name, rule: .sizeOverflow,
                    "\(t.dtype.rawValue) \(formatShape(t.shape)) takes more than 2^64-1 bytes"))
                continue
            case .failure(.notByteAligned(let bits)):
                problems.append(Problem(file: file, tensor: t.name, rule: .packedSizeNotByteAligned,
                    "\(n) elements of \(t.dtype.rawValue) take \(bits) bits, which does not end on a byte"))
                continue
            }
            if t.end - t.begin != bytes {
                problems.append(Problem(file: file, tensor: t.name, rule: .sizeMismatch,
                    "data_offsets [\(t.begin), \(t.end)] span \(t.end - t.begin) bytes but \(t.dtype.rawValue) \(formatShape(t.shape)) needs \(bytes)"))
            }
        }
        // Writers emit entries in data order; sort only when they are not.
        let inOrder = zip(entries, entries.dropFirst()).allSatisfy { ($0.begin, $0.end) <= ($1.begin, $1.end) }
        if !inOrder { entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) } }
        var expected: UInt64 = 0
        for t in entries {
            if t.begin != expected {
                let what = t.begin > expected
                    ? "leaves a hole: it begins at \(t.begin) but the previous tensor ends at \(expected)"
                    : "overlaps the previous tensor: it begins at \(t.begin) but the previous tensor ends at \(expected)"
                problems.append(Problem(file: file, tensor: t.name, rule: .offsetsNotContiguous, what))
            }
            expected = max(expected, t.end)
        }
        if problems.isEmpty {
            if expected > dataBytesInFile {
                problems.append(Problem(file: file, rule: .dataTruncated,
                    "the header describes \(expected) bytes of data but the file holds only \(dataBytesInFile)"))
            } else if expected < dataBytesInFile {
                problems.append(Problem(file: file, rule: .trailingBytes,
                    "\(dataBytesInFile - expected) bytes follow the last tensor's data"))
            }
        }
        return problems
    }
}

public func formatShape(_ shape: [UInt64]) -> String {
    "[" + shape.map(String.init).joined(separator: ",") + "]"
}

/// The members of a tensor entry, recognised from their bytes.
enum MemberName {
    case dtype, shape, dataOffsets, other

    init(_ raw: UnsafeRawBufferPointer) {
        func equals(_ literal: StaticString) -> Bool {
            raw.count == literal.utf8CodeUnitCount && memcmp(raw.baseAddress!, literal.utf8Start, raw.count) == 0
        }
        if raw.isEmpty {
            self = .other
        } else if equals("dtype") {
            self = .dtype
        } else if equals("shape") {
            self = .shape
        } else if equals("data_offsets") {
            self = .dataOffsets
        } else {
            self = .other
        }
    }
}

extension Dtype {
    /// Each dtype's name as bytes, for matching without making Strings.
    static let utf8Names: [([UInt8], Dtype)] = Dtype.allCases.map { (Array($0.rawValue.utf8), $0) }
}

extension JSONScanner {
    /// Matches a plain quoted dtype name (no escapes) against the 22 names without
    /// allocating a String; nil when it is anything else (the caller then parses it fully).
    mutating func matchDtype() -> Dtype? {
        guard peek() == UInt8(ascii: "\"") else { return nil }
        let start = position + 1
        var end = start
        while end < bytes.count, end - start <= 12 {
            let c = bytes[end]
            if c == UInt8(ascii: "\"") { break }
            if c == UInt8(ascii: "\\") || c < 0x20 { return nil }
            end += 1
        }
        guard end < bytes.count, bytes[end] == UInt8(ascii: "\"") else { return nil }
        let length = end - start
        for (name, d) in Dtype.utf8Names where name.count == length {
            if name.withUnsafeBytes({ memcmp($0.baseAddress!, bytes.baseAddress! + start, length) }) == 0 {
                position = end + 1
                return d
            }
        }
        return nil
    }
}
