/// Writes JSON text. Compact output escapes strings exactly as serde_json does
/// (the safetensors reference writer): `\"`, `\\`, `\b \f \n \r \t`, other control
/// characters as `\u00xx` with lowercase hex; everything else, non-ASCII
/// included, is written as is.
public enum JSONSerializer {
    public static func appendEscaped(_ string: String, to out: inout [UInt8]) {
        out.append(0x22)
        for c in string.utf8 {
            switch c {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x08: out.append(0x5C); out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(0x5C); out.append(UInt8(ascii: "f"))
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(c >> 4)])
                out.append(hex[Int(c & 0xF)])
            default: out.append(c)
            }
        }
        out.append(0x22)
    }

    public static func compact(_ value: JSONValue) -> [UInt8] {
        var out: [UInt8] = []
        write(value, to: &out, indent: nil, level: 0)
        return out
    }

    /// Two-space indented output for people and pipelines (`--json`), ending in a newline.
    public static func pretty(_ value: JSONValue) -> String {
        var out: [UInt8] = []
        write(value, to: &out, indent: 2, level: 0)
        out.append(0x0A)
        return String(decoding: out, as: UTF8.self)
    }

    private static func newline(_ out: inout [UInt8], _ indent: Int?, _ level: Int) {
        guard let indent else { return }
        out.append(0x0A)
        out.append(contentsOf: repeatElement(0x20, count: indent * level))
    }

    private static func write(_ value: JSONValue, to out: inout [UInt8], indent: Int?, level: Int) {
        switch value {
        case .null: out.append(contentsOf: Array("null".utf8))
        case .bool(let b): out.append(contentsOf: Array((b ? "true" : "false").utf8))
        case .number(let n): out.append(contentsOf: Array(n.text.utf8))
        case .string(let s): appendEscaped(s, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            // Arrays of scalars stay on one line even when pretty: shapes read better.
            let inline = items.allSatisfy { if case .array = $0 { return false }; if case .object = $0 { return false }; return true }
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")); if inline && indent != nil { out.append(0x20) } }
                if !inline { newline(&out, indent, level + 1) }
                write(item, to: &out, indent: indent, level: level + 1)
            }
            if !inline && !items.isEmpty { newline(&out, indent, level) }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            for (i, member) in object.members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(&out, indent, level + 1)
                appendEscaped(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                if indent != nil { out.append(0x20) }
                write(member.value, to: &out, indent: indent, level: level + 1)
            }
            if !object.members.isEmpty { newline(&out, indent, level) }
            out.append(UInt8(ascii: "}"))
        }
    }
}
