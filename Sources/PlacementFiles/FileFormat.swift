import ExpertPlacement
import TorchArchive

/// What a profile file holds, told from its first bytes (never its name): the forms moetool
/// reads, and the common ones it does not, so that a wrong file is named for what it is rather
/// than failing as CSV.
public enum FileFormat: Equatable, Sendable {
    case json, csv, zstd, torchZip
    /// A format moetool does not read as a profile, by name ("gzip", "an HTML page", ...).
    case other(String)

    public static func recognise(_ bytes: [UInt8]) -> FileFormat {
        func starts(_ magic: [UInt8]) -> Bool { bytes.starts(with: magic) }
        func startsText(_ text: String) -> Bool {
            let t = Array(text.utf8)
            guard let first = bytes.firstIndex(where: { !" \t\r\n".utf8.contains($0) }), bytes.count - first >= t.count else { return false }
            return bytes[first..<(first + t.count)].map { $0 | 0x20 } == t.map { $0 | 0x20 }  // ASCII letters, any case
        }
        if starts(LoadProfile.zstdMagic) { return .zstd }
        if starts(TorchArchive.zipMagic) { return .torchZip }
        if starts([0x50, 0x4B, 0x05, 0x06]) { return .other("an empty zip archive") }
        if starts([0x1F, 0x8B]) { return .other("gzip-compressed data (gunzip it first, or use zstd)") }
        if starts(Array("BZh".utf8)) { return .other("bzip2-compressed data") }
        if starts([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .other("xz-compressed data") }
        if starts([0x93]) && starts([0x93] + Array("NUMPY".utf8)) { return .other("a NumPy .npy array") }
        if bytes.count >= 2, bytes[0] == 0x80, (2...5).contains(bytes[1]) {
            return .other("a pickle stream without a zip around it (torch.save's format before torch 1.6, or pickle.dump); moetool reads torch.save's zip format only")
        }
        if starts(Array("%PDF".utf8)) { return .other("a PDF document") }
        if startsText("<!doctype html") || startsText("<html") || startsText("<head") || startsText("<body") { return .other("an HTML page (a login or error page saved instead of the file?)") }
        if startsText("<?xml") { return .other("an XML document") }
        if isSafetensors(bytes) { return .other("a safetensors file (weights, not expert loads)") }
        let first = bytes.first { !" \t\r\n".utf8.contains($0) }
        if first == UInt8(ascii: "{") { return .json }
        if first == UInt8(ascii: "[") { return .other("a JSON array (a profile is a JSON object: {\"layers\": [...]} or {\"logical_count\": [...]})") }
        // Text: no NUL and valid UTF-8 in the first 4 KiB (cut at a character boundary).
        let head = bytes.prefix(4096)
        if head.contains(0) { return .other("binary data (not JSON, CSV or a torch.save file)") }
        var end = head.count
        while end > 0 && end > head.count - 4 && head[end - 1] & 0xC0 == 0x80 { end -= 1 }
        if end > 0 && head[end - 1] >= 0xC0 { end -= 1 }
        if String(validating: head.prefix(end), as: UTF8.self) == nil { return .other("binary data (not JSON, CSV or a torch.save file)") }
        return .csv
    }

    /// An 8-byte little-endian header length followed by a JSON object that fits the file.
    static func isSafetensors(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 10 else { return false }
        var n: UInt64 = 0
        for k in 0..<8 { n |= UInt64(bytes[k]) << (8 * UInt64(k)) }
        return n >= 2 && n <= UInt64(bytes.count - 8) && bytes[8] == UInt8(ascii: "{")
    }
}
