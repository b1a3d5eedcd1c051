import Checkpoint
import SafetensorsFormat
import StrictJSON
import Support

/// The `--tensors` listing: every tensor, or names collapsed into patterns.
public struct TensorListing: Sendable {
    public struct Row: Sendable {
        public let name: String
        public let dtype: Dtype
        public let shape: [UInt64]
        public let count: Int
        /// Set for single tensors: which file and where in it.
        public let file: String?
        public let offsets: (UInt64, UInt64)?
    }

    public let rows: [Row]
    public let collapsed: Bool

    /// `include` filters names (nil: all); `collapse` merges numbered names into patterns.
    public init(checkpoint: Checkpoint, include: ((String) -> Bool)?, collapse: Bool) {
        let selected = checkpoint.allTensors.filter { include?($0.tensor.name) ?? true }
        collapsed = collapse
        if collapse {
            rows = NamePatterns.collapse(selected.map(\.tensor)).map {
                Row(name: $0.pattern, dtype: $0.dtype, shape: $0.shape, count: $0.count, file: nil, offsets: nil)
            }
        } else {
            rows = selected.sorted { naturalLess($0.tensor.name, $1.tensor.name) }.map {
                Row(name: $0.tensor.name, dtype: $0.tensor.dtype, shape: $0.tensor.shape, count: 1,
                    file: checkpoint.fileNames[$0.file], offsets: ($0.tensor.begin, $0.tensor.end))
            }
        }
    }

    public func text(offsets: Bool) -> String {
        let nameWidth = min(100, rows.map { escapeForDisplay($0.name).count }.max() ?? 0)
        var out = ""
        for r in rows {
            var line = escapeForDisplay(r.name).leftAligned(max(nameWidth, 1), truncating: true)
            line += "  " + r.dtype.rawValue.leftAligned(11, truncating: true) + " " + formatShape(r.shape)
            if r.count > 1 { line += "  x\(r.count)" }
            if offsets, let file = r.file, let o = r.offsets { line += "  \(escapeForDisplay(file)) [\(o.0), \(o.1))" }
            out += line + "\n"
        }
        return out
    }

    public func json(offsets: Bool) -> JSONValue {
        .array(rows.map { r in
            var o = JSONObject()
            o.append(collapsed ? "pattern" : "name", .string(r.name))
            o.append("dtype", .string(r.dtype.rawValue))
            o.append("shape", .array(r.shape.map { .uint($0) }))
            o.append("count", .int(r.count))
            if let file = r.file { o.append("file", .string(file)) }
            if offsets, let off = r.offsets { o.append("data_offsets", .array([.uint(off.0), .uint(off.1)])) }
            return .object(o)
        })
    }
}
