import StrictJSON
import Support
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

    /// The largest profile read, after decompression (a DeepSeek-V3 profile of 58 x 256 loads is
    /// about 150 KB; SGLang's per-pass dumps are larger). A zstd stream is refused as soon as
    /// its output passes this, before more is decompressed.
    public static let maxBytes = 256 << 20
    /// The most MoE layers and experts per layer a profile may have, and loads in all.
    public static let maxLayers = 4096
    public static let maxExperts = 1 << 16
    public static let maxLoads = 1 << 24
    /// The most tokens one layer's loads may add up to. Far above any real count, and far enough
    /// below float32's range (EPLB's arithmetic) that no sum, product or ratio the planners
    /// form can overflow to infinity or NaN.
    public static let maxLayerTotal = 1e30

    /// Parses a JSON or CSV profile (already decompressed: `LoadProfile.read` in PlacementFiles
    /// opens files) and checks it: numbers only, finite, not negative, every layer the same
    /// length, within the limits above. `name` is the file named in errors.
    public static func parse(_ bytes: [UInt8], name: String, expectedExperts: Int? = nil) throws(PlacementError) -> LoadProfile {
        let first = bytes.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
        let profile: LoadProfile
        if first == UInt8(ascii: "{") {
            profile = try parseJSON(bytes, name: name)
        } else {
            profile = try parseCSV(bytes, name: name, experts: expectedExperts)
        }
        guard profile.layers > 0 else { throw PlacementError(.noLoads, file: name, "the profile has no layers") }
        guard profile.experts > 0 else { throw PlacementError(.noLoads, file: name, "the profile's layers have no experts") }
        if let expectedExperts, profile.experts != expectedExperts {
            throw PlacementError(.expertCountMismatch, file: name, "the profile has \(profile.experts) experts per layer but the config has \(expectedExperts)")
        }
        try check(profile.loads, file: name)
        return profile
    }

    /// The checks every plan relies on: a rectangle within the limits, every load finite and not
    /// negative, every layer's total at most `maxLayerTotal` (sums of passes or CSV rows can
    /// overflow even when each value is in range). `name`: the file the loads came from, if any.
    public static func check(_ loads: [[Double]], file name: String?) throws(PlacementError) {
        guard let experts = loads.first?.count, experts > 0 else { throw PlacementError(.noLoads, file: name, "no loads") }
        guard loads.count <= maxLayers else {
            throw PlacementError(.profileTooLarge, file: name, "\(loads.count) layers is more than moetool plans (\(maxLayers))")
        }
        guard experts <= maxExperts, loads.count * experts <= maxLoads else {
            throw PlacementError(.profileTooLarge, file: name, "\(counted(loads.count, "layer")) x \(counted(experts, "expert")) is more than moetool plans (\(maxExperts) experts per layer, \(maxLoads) loads in all)")
        }
        for (i, layer) in loads.enumerated() {
            guard layer.count == experts else {
                throw PlacementError(.layersDiffer, file: name, "layer \(i) has \(counted(layer.count, "expert")) but layer 0 has \(experts)")
            }
            var total = 0.0
            for (j, w) in layer.enumerated() {
                guard !(w < 0) else { throw PlacementError(.invalidLoad, file: name, "layer \(i) expert \(j): load \(w) is negative") }
                total += w  // a load that is not finite here is a sum of passes or rows that overflowed
            }
            guard total.isFinite, total <= maxLayerTotal else {
                throw PlacementError(.layerTotalTooLarge, file: name, "layer \(i): the loads add up to \(total.isFinite ? "\(total)" : "more than the largest float"), above the most moetool plans (\(maxLayerTotal))")
            }
        }
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
                        throw PlacementError(.duplicateMember, file: name, "member \"\(key)\" appears twice (at byte \(offset))")
                    }
                    switch key {
                    case "layers":
                        layers = try readMatrix(&s, name: name, what: "layers", depth: 2)
                    case "logical_count":
                        layers = try readLogicalCount(&s, name: name)
                    default:
                        try s.skipValue(depth: 2)
                    }
                }
                scanner.skipWhitespace()
                guard scanner.atEnd else { throw scanner.syntaxError("trailing data after the JSON document") }
                guard let layers else {
                    throw PlacementError(.noLoads, file: name, "no \"layers\" or \"logical_count\" member")
                }
                return LoadProfile(loads: layers)
            }
        } catch let e as PlacementError {
            throw e
        } catch {
            throw PlacementError(.invalidJSON, file: name, "invalid JSON: \(error)")
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
            throw PlacementError(.invalidLoad, file: name, "\(where_()): expected a load (a number), found \(found)")
        }
        let range = try s.scanNumber()
        let value = decimal(s.bytes, range)
        guard value.isFinite else {
            throw PlacementError(.invalidLoad, file: name, "\(where_()): load \(s.text(range)) is out of range")
        }
        guard value >= 0 else {
            throw PlacementError(.invalidLoad, file: name, "\(where_()): load \(s.text(range)) is negative")
        }
        return value
    }

    /// `[[load, ...], ...]`, refused as soon as it passes a limit or a row's length differs.
    static func readMatrix(_ s: inout JSONScanner, name: String, what: String, depth: Int) throws -> [[Double]] {
        var rows: [[Double]] = []
        try s.scanArray(depth: depth) { s, i in
            guard i < maxLayers else {
                throw PlacementError(.profileTooLarge, file: name, "\(what) has more than \(maxLayers) layers, more than moetool plans")
            }
            let width = rows.first?.count
            var row: [Double] = []
            row.reserveCapacity(width ?? 0)
            try s.scanArray(depth: depth + 1) { s, j in
                guard j < (width ?? maxExperts), (i + 1) * (j + 1) <= maxLoads else {
                    if let width, j >= width {
                        throw PlacementError(.layersDiffer, file: name, "\(what)[\(i)] has more than \(width) experts but \(what)[0] has \(width)")
                    }
                    throw PlacementError(.profileTooLarge, file: name, "\(what)[\(i)] has more than \(min(maxExperts, maxLoads / (i + 1))) experts, more than moetool plans")
                }
                row.append(try readNumber(&s, name: name) { "\(what)[\(i)][\(j)]" })
            }
            if let width, width != row.count {
                throw PlacementError(.layersDiffer, file: name, "\(what)[\(i)] has \(counted(row.count, "expert")) but \(what)[0] has \(width)")
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
            return try readMatrix(&s, name: name, what: "logical_count", depth: 2)
        }
        var sum: [[Double]]? = nil
        try s.scanArray(depth: 2) { s, pass in
            let rows = try readMatrix(&s, name: name, what: "logical_count[\(pass)]", depth: 3)
            if let current = sum {
                guard current.count == rows.count, current.first?.count == rows.first?.count else {
                    throw PlacementError(.layersDiffer, file: name, "logical_count[\(pass)] is \(rows.count)x\(rows.first?.count ?? 0) but logical_count[0] is \(current.count)x\(current.first?.count ?? 0)")
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
    /// the same layer and expert add up; an expert without a row has load 0. Rows are added in
    /// place as they are read, so memory follows the layers x experts seen, not the rows; a row
    /// past the limits is refused when it is read.
    static func parseCSV(_ bytes: [UInt8], name: String, experts: Int?) throws(PlacementError) -> LoadProfile {
        do {
            return try bytes.withUnsafeBufferPointer { try parseCSV($0, name: name, experts: experts) }
        } catch let e as PlacementError {
            throw e
        } catch {
            throw PlacementError(.invalidCSVRow, file: name, "\(error)")
        }
    }

    static func parseCSV(_ bytes: UnsafeBufferPointer<UInt8>, name: String, experts: Int?) throws(PlacementError) -> LoadProfile {
        var rows: [[Double]] = []
        var present: [Bool] = []
        var width = 0  // experts seen so far
        var lineNumber = 0
        var start = 0
        let expertLimit = min(experts ?? maxExperts, maxExperts)
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            lineNumber += 1
            let row = CSVRow(bytes, start..<end)
            start = end + 1
            if row.count == 0 || bytes[row[0].lowerBound] == UInt8(ascii: "#") { continue }
            func text(_ i: Int) -> String { String(decoding: UnsafeBufferPointer(rebasing: bytes[row[i]]), as: UTF8.self) }
            if rows.isEmpty && row.count == 3 && (0..<3).map({ text($0).lowercased() }) == ["layer", "expert", "load"] { continue }
            guard row.count == 3 else {
                throw PlacementError(.invalidCSVRow, file: "\(name):\(lineNumber)", "expected 3 fields (layer,expert,load), found \(row.count)")
            }
            guard let layer = index(bytes, row[0]), layer < maxLayers else {
                throw PlacementError(.invalidCSVRow, file: "\(name):\(lineNumber)", "layer \"\(text(0))\" is not an index below \(maxLayers) (0, 1, 2, ...)")
            }
            guard let expert = index(bytes, row[1]), expert < expertLimit else {
                throw PlacementError(.invalidCSVRow, file: "\(name):\(lineNumber)", "expert \"\(text(1))\" is not an index below \(expertLimit)\(experts == nil ? "" : ", the config's expert count") (0, 1, 2, ...)")
            }
            // Plain integers (token counts) without making a String; anything else as Swift reads it.
            guard let load = index(bytes, row[2]).map(Double.init) ?? Double(text(2)) else {
                throw PlacementError(.invalidLoad, file: "\(name):\(lineNumber)", "load \"\(text(2))\" is not a number")
            }
            guard load.isFinite else { throw PlacementError(.invalidLoad, file: "\(name):\(lineNumber)", "load \(text(2)) is not finite") }
            guard load >= 0 else { throw PlacementError(.invalidLoad, file: "\(name):\(lineNumber)", "load \(text(2)) is negative") }
            let layers = max(rows.count, layer + 1)
            width = max(width, expert + 1)
            guard layers * width <= maxLoads else {
                throw PlacementError(.profileTooLarge, file: "\(name):\(lineNumber)", "\(counted(layers, "layer")) x \(counted(width, "expert")) is more than moetool plans (\(maxLoads) loads in all)")
            }
            while rows.count < layers { rows.append([]); present.append(false) }
            if rows[layer].count <= expert { rows[layer].append(contentsOf: repeatElement(0, count: expert + 1 - rows[layer].count)) }
            rows[layer][expert] += load
            present[layer] = true
        }
        guard !rows.isEmpty else { throw PlacementError(.noLoads, file: name, "no rows") }
        if let missing = present.firstIndex(of: false) {
            throw PlacementError(.layersDiffer, file: name, "layer \(missing) has no rows but layer \(rows.count - 1) does")
        }
        let expertCount = experts ?? width
        guard rows.count * expertCount <= maxLoads else {
            throw PlacementError(.profileTooLarge, file: name, "\(counted(rows.count, "layer")) x \(counted(expertCount, "expert")) is more than moetool plans (\(maxLoads) loads in all)")
        }
        for i in rows.indices { rows[i].append(contentsOf: repeatElement(0, count: expertCount - rows[i].count)) }
        return LoadProfile(loads: rows)
    }

    /// A CSV line's first three fields (byte ranges) without surrounding spaces, tabs or a
    /// carriage return, and how many fields it has (0 for a blank line), found without allocating.
    struct CSVRow {
        var count = 0
        var fields: (Range<Int>, Range<Int>, Range<Int>) = (0..<0, 0..<0, 0..<0)

        init(_ bytes: UnsafeBufferPointer<UInt8>, _ line: Range<Int>) {
            func trimmed(_ r: Range<Int>) -> Range<Int> {
                var (lo, hi) = (r.lowerBound, r.upperBound)
                func space(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0D }
                while lo < hi && space(bytes[lo]) { lo += 1 }
                while hi > lo && space(bytes[hi - 1]) { hi -= 1 }
                return lo..<hi
            }
            guard !trimmed(line).isEmpty else { return }
            var start = line.lowerBound
            while true {
                var comma = start
                while comma < line.upperBound && bytes[comma] != UInt8(ascii: ",") { comma += 1 }
                let field = trimmed(start..<comma)
                switch count {
                case 0: fields.0 = field
                case 1: fields.1 = field
                case 2: fields.2 = field
                default: break
                }
                count += 1
                guard comma < line.upperBound else { return }
                start = comma + 1
            }
        }

        subscript(_ i: Int) -> Range<Int> { i == 0 ? fields.0 : i == 1 ? fields.1 : fields.2 }
    }

    /// A non-negative decimal index of at most 9 digits (so it always fits an Int), or nil.
    static func index(_ bytes: UnsafeBufferPointer<UInt8>, _ field: Range<Int>) -> Int? {
        guard !field.isEmpty, field.count <= 9 else { return nil }
        var v = 0
        for i in field {
            let c = bytes[i]
            guard c >= 0x30 && c <= 0x39 else { return nil }
            v = v * 10 + Int(c - 0x30)
        }
        return v
    }
}

extension JSONScanner {
    /// Walks past a value without building it: the members moetool does not use, in a profile
    /// or a placement, may be as large as the file.
    mutating func skipValue(depth: Int) throws {
        skipWhitespace()
        switch peek() {
        case UInt8(ascii: "{"): try scanObjectRawKeys(depth: depth) { s, _, _ in try s.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["): try scanArray(depth: depth) { s, _ in try s.skipValue(depth: depth + 1) }
        default: _ = try parseValue(depth: depth)
        }
    }
}
