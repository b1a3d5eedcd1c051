#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A POSIX extended regular expression over tensor names (`--filter`), matched
/// anywhere in the name. The C library's matcher is an order of magnitude faster
/// than Swift's Regex on the ~100k names of a large checkpoint.
public final class NameFilter: @unchecked Sendable {
    private var compiled = regex_t()
    public let pattern: String

    public struct InvalidPattern: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public init(_ pattern: String) throws(InvalidPattern) {
        self.pattern = pattern
        let status = regcomp(&compiled, pattern, REG_EXTENDED | REG_NOSUB)
        guard status == 0 else {
            var buffer = [CChar](repeating: 0, count: 256)
            regerror(status, &compiled, &buffer, buffer.count)
            let message = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw InvalidPattern(message: "invalid regular expression \"\(pattern)\": \(message)")
        }
    }

    deinit { regfree(&compiled) }

    public func matches(_ name: String) -> Bool {
        regexec(&compiled, name, 0, nil, 0) == 0
    }
}
