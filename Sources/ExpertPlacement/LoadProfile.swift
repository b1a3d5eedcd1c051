import CZstd
import StrictJSON
#if canImport(Glibc)
import Glibc
#endif

/// Observed expert loads: tokens routed to each logical expert, [MoE layer][expert].
public struct LoadProfile: Sendable, Equatable {
    public var loads: [[Double]]
    public var layers: Int { loads.count }
    public var experts: Int { loads.first?.count ?? 0 }

    public init(loads: [[Double]]) {
        self.loads = loads
    }

    /// The largest input read (after decompression): a profile is a few numbers per expert.
    public static let maxBytes = 1 << 31

    /// Reads a JSON or CSV profile, zstd-compressed or not (recognised by its magic number),
    /// and checks it: numbers only, finite, not negative, every layer the same length.
    public static func read(path: String, expectedExperts: Int? = nil) throws(PlacementError) -> LoadProfile {
        var bytes = try readFile(path)
        if bytes.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { bytes = try decompress(bytes, path: path) }
        return try parse(bytes, name: path, expectedExperts: expectedExperts)
    }

    public static func parse(_ bytes: [UInt8], name: String, expectedExperts: Int? = nil) throws(PlacementError) -> LoadProfile {
        let first = bytes.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
        let profile: LoadProfile
        if first == UInt8(ascii: "{") {
            profile = try parseJSON(bytes, name: name)
        } else {
            profile = try parseCSV(bytes, name: name, experts: expectedExperts)
        }
        guard profile.layers > 0 else { throw .badInput("\(name): the profile has no layers") }
        guard profile.experts > 0 else { throw .badInput("\(name): the profile's layers have no experts") }
        if let expectedExperts, profile.experts != expectedExperts {
            throw .badInput("\(name): the profile has \(profile.experts) experts per layer but the config has \(expectedExperts)")
        }
        return profile
    }

    // MARK: JSON

    /// `{"layers": [[load, ...], ...]}` or SGLang's `{"logical_count": [pass][layer][expert]}`
    /// (passes summed; a 2-D `logical_count` is one pass). Other members are ignored.
    static func parseJSON(_ bytes: [UInt8], name: String) throws(PlacementError) -> LoadProfile {
        do {
            return try bytes.withUnsafeBytes { raw in
                try JSONParser.checkEncoding(raw)
                var scanner = JSONScanner(raw, maxDepth: 16)
                var layers: [[Double]]? = nil
                var seen = Set<String>()
                try scanner.scanObject(depth: 1) { s, key, offset in
                    guard seen.insert(key).inserted else {
                        throw PlacementError.badInput("\(name): member \"\(key)\" appears twice (at byte \(offset))")
                    }
                    switch key {
                    case "layers":
                        layers = try readMatrix(&s, name: name, what: "layers")
                    case "logical_count":
                        layers = try readLogicalCount(&s, name: name)
                    default:
                        _ = try s.parseValue(depth: 2)
                    }
                }
                scanner.skipWhitespace()
                guard scanner.atEnd else { throw scanner.syntaxError("trailing data after the JSON document") }
                guard let layers else {
                    throw PlacementError.badInput("\(name): no \"layers\" or \"logical_count\" member: a profile is {\"layers\": [[load per expert], ...]}")
                }
                return LoadProfile(loads: layers)
            }
        } catch let e as PlacementError {
            throw e
        } catch {
            throw .badInput("\(name): invalid JSON: \(error)")
        }
    }

    static func readNumber(_ s: inout JSONScanner, name: String, at where_: () -> String) throws -> Double {
        guard let c = s.peek(), c == UInt8(ascii: "-") || (c >= 0x30 && c <= 0x39) else {
            let found: String
            switch s.peek() {
            case UInt8(ascii: "["): found = "an array"
            case UInt8(ascii: "{"): found = "an object"
            case UInt8(ascii: "\""): found = "a string"
            case UInt8(ascii: "t"), UInt8(ascii: "f"): found = "a boolean"
            case UInt8(ascii: "n"): found = "null"
            case UInt8(ascii: "N"), UInt8(ascii: "I"): found = "NaN or Infinity, which JSON does not have"
            case nil: found = "the end of the file"
            default: found = "'\(String(decoding: [s.peek()!], as: UTF8.self))', which is not JSON"
            }
            throw PlacementError.badInput("\(name): \(where_()): expected a load (a number), found \(found)")
        }
        let range = try s.scanNumber()
        let value = decimal(s.bytes, range)
        guard value.isFinite else {
            throw PlacementError.badInput("\(name): \(where_()): load \(s.text(range)) is out of range")
        }
        guard value >= 0 else {
            throw PlacementError.badInput("\(name): \(where_()): load \(s.text(range)) is negative; loads count tokens")
        }
        return value
    }

    static func readMatrix(_ s: inout JSONScanner, name: String, what: String) throws -> [[Double]] {
        var rows: [[Double]] = []
        try s.scanArray(depth: 2) { s, i in
            var row: [Double] = []
            row.reserveCapacity(rows.first?.count ?? 0)
            try s.scanArray(depth: 3) { s, j in
                row.append(try readNumber(&s, name: name) { "\(what)[\(i)][\(j)]" })
            }
            if let first = rows.first, first.count != row.count {
                throw PlacementError.badInput("\(name): \(what)[\(i)] has \(row.count) experts but \(what)[0] has \(first.count): every layer needs one load per expert")
            }
            rows.append(row)
        }
        return rows
    }

    static func readLogicalCount(_ s: inout JSONScanner, name: String) throws -> [[Double]] {
        // [pass][layer][expert] or [layer][expert]: look at the nesting of the first element.
        var probe = s
        try probe.expect(UInt8(ascii: "["), "'['")
        probe.skipWhitespace()
        try probe.expect(UInt8(ascii: "["), "an array of layers")
        probe.skipWhitespace()
        guard probe.peek() == UInt8(ascii: "[") else {
            return try readMatrix(&s, name: name, what: "logical_count")
        }
        var sum: [[Double]]? = nil
        try s.scanArray(depth: 2) { s, pass in
            var rows: [[Double]] = []
            try s.scanArray(depth: 3) { s, i in
                var row: [Double] = []
                try s.scanArray(depth: 4) { s, j in
                    row.append(try readNumber(&s, name: name) { "logical_count[\(pass)][\(i)][\(j)]" })
                }
                if let first = rows.first, first.count != row.count {
                    throw PlacementError.badInput("\(name): logical_count[\(pass)][\(i)] has \(row.count) experts but logical_count[\(pass)][0] has \(first.count)")
                }
                rows.append(row)
            }
            if let current = sum {
                guard current.count == rows.count, current.first?.count == rows.first?.count else {
                    throw PlacementError.badInput("\(name): logical_count[\(pass)] is \(rows.count)x\(rows.first?.count ?? 0) but logical_count[0] is \(current.count)x\(current.first?.count ?? 0)")
                }
                for i in rows.indices { for j in rows[i].indices { sum![i][j] += rows[i][j] } }
            } else {
                sum = rows
            }
        }
        return sum ?? []
    }

    /// A JSON number's value: exact for integers of up to 15 digits, strtod otherwise.
    static func decimal(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Double {
        if range.count <= 15 {
            var v: Int64 = 0
            var plain = true
            var negative = false
            for i in range {
                let c = bytes[i]
                if c == UInt8(ascii: "-") { negative = true; continue }
                guard c >= 0x30, c <= 0x39 else { plain = false; break }
                v = v * 10 + Int64(c - 0x30)
            }
            if plain { return negative ? -Double(v) : Double(v) }
        }
        var buffer = [CChar](repeating: 0, count: range.count + 1)
        for (k, i) in range.enumerated() { buffer[k] = CChar(bitPattern: bytes[i]) }
        return strtod(buffer, nil)
    }

    // MARK: CSV

    /// `layer,expert,load` rows (a header line is optional; `#` lines are comments). Rows for
    /// the same layer and expert add up; an expert without a row has load 0.
    static func parseCSV(_ bytes: [UInt8], name: String, experts: Int?) throws(PlacementError) -> LoadProfile {
        var cells: [(layer: Int, expert: Int, load: Double)] = []
        var lineNumber = 0
        var maxLayer = -1
        var maxExpert = -1
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            lineNumber += 1
            var line = String(decoding: bytes[start..<end], as: UTF8.self)
            start = end + 1
            if line.hasSuffix("\r") { line.removeLast() }
            let trimmed = line.trimmingSpaces
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let fields = trimmed.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingSpaces }
            if lineNumber == 1 || (cells.isEmpty && Int(fields.first ?? "") == nil) {
                if fields.map({ $0.lowercased() }) == ["layer", "expert", "load"] { continue }
            }
            guard fields.count == 3 else {
                throw .badInput("\(name):\(lineNumber): expected 3 fields (layer,expert,load), found \(fields.count)")
            }
            guard let layer = Int(fields[0]), layer >= 0, layer < 1 << 20 else {
                throw .badInput("\(name):\(lineNumber): layer \"\(fields[0])\" is not an index (0, 1, 2, ...)")
            }
            guard let expert = Int(fields[1]), expert >= 0, expert < 1 << 20 else {
                throw .badInput("\(name):\(lineNumber): expert \"\(fields[1])\" is not an index (0, 1, 2, ...)")
            }
            guard let load = Double(fields[2]) else {
                throw .badInput("\(name):\(lineNumber): load \"\(fields[2])\" is not a number")
            }
            guard load.isFinite else { throw .badInput("\(name):\(lineNumber): load \(fields[2]) is not finite") }
            guard load >= 0 else { throw .badInput("\(name):\(lineNumber): load \(fields[2]) is negative; loads count tokens") }
            cells.append((layer, expert, load))
            maxLayer = max(maxLayer, layer)
            maxExpert = max(maxExpert, expert)
        }
        let expertCount = experts ?? (maxExpert + 1)
        if maxExpert >= expertCount {
            throw .badInput("\(name): expert \(maxExpert) appears but the config has \(expertCount) experts")
        }
        guard maxLayer >= 0, maxLayer < 1 << 16, Double(maxLayer + 1) * Double(expertCount) <= 1e8 else {
            throw .badInput(maxLayer < 0 ? "\(name): no rows" : "\(name): \(maxLayer + 1) layers x \(expertCount) experts is too large for a profile")
        }
        var loads = [[Double]](repeating: [Double](repeating: 0, count: expertCount), count: maxLayer + 1)
        var present = [Bool](repeating: false, count: maxLayer + 1)
        for c in cells {
            loads[c.layer][c.expert] += c.load
            present[c.layer] = true
        }
        if let missing = present.firstIndex(of: false) {
            throw .badInput("\(name): layer \(missing) has no rows but layer \(maxLayer) does: layers are numbered 0, 1, 2, ... without gaps")
        }
        return LoadProfile(loads: loads)
    }

    // MARK: Files

    static func readFile(_ path: String) throws(PlacementError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .badInput("\(path): cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .badInput("\(path): cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .badInput("\(path): not a regular file") }
        guard st.st_size <= maxBytes else { throw .badInput("\(path): \(st.st_size) bytes is larger than a load profile can be (\(maxBytes))") }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw .badInput("\(path): read failed after \(done) bytes: \(n < 0 ? String(cString: strerror(errno)) : "the file shrank")")
            }
            done += n
        }
        return out
    }

    /// Streams a zstd frame (or several) through libzstd, refusing output beyond `maxBytes`.
    public static func decompress(_ input: [UInt8], path: String) throws(PlacementError) -> [UInt8] {
        guard let stream = ZSTD_createDStream() else { throw .badInput("\(path): zstd: out of memory") }
        defer { ZSTD_freeDStream(stream) }
        ZSTD_initDStream(stream)
        var out: [UInt8] = []
        let chunk = ZSTD_DStreamOutSize()
        var buffer = [UInt8](repeating: 0, count: chunk)
        var lastResult = 0
        let failure: String? = input.withUnsafeBytes { src -> String? in
            var inBuf = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
            while true {
                let (result, produced) = buffer.withUnsafeMutableBytes { dst -> (Int, Int) in
                    var outBuf = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
                    let r = ZSTD_decompressStream(stream, &outBuf, &inBuf)
                    return (r, outBuf.pos)
                }
                if ZSTD_isError(result) != 0 { return String(cString: ZSTD_getErrorName(result)) }
                out.append(contentsOf: buffer[0..<produced])
                if out.count > maxBytes { return "decompresses to more than \(maxBytes) bytes" }
                lastResult = result
                if inBuf.pos == inBuf.size && produced < chunk { return nil }
            }
        }
        if let failure { throw .badInput("\(path): zstd: \(failure)") }
        guard lastResult == 0 else { throw .badInput("\(path): zstd: truncated (the last frame is incomplete)") }
        return out
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
