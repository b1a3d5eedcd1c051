/// What a file that is not safetensors looks like, from its first bytes, so that the message says "this is
/// an HTML page" rather than "header length 2338328219631577204 is above the limit".
public enum FileSniffing {
    /// A short description ("a zip archive (...)"), or nil when the bytes say nothing recognisable.
    public static func describe(_ head: UnsafeRawBufferPointer) -> String? {
        let b = Array(head.prefix(512))
        func starts(_ s: [UInt8]) -> Bool { b.count >= s.count && Array(b.prefix(s.count)) == s }
        if starts([0x50, 0x4B, 0x03, 0x04]) { return "a zip archive (torch.save writes .bin/.pt checkpoints this way): convert it to safetensors first" }
        if b.count >= 2, b[0] == 0x80, (2...5).contains(b[1]) { return "a Python pickle (an old torch.save checkpoint): convert it to safetensors first" }
        if starts(Array("GGUF".utf8)) { return "a GGUF file (llama.cpp's format), not safetensors" }
        if starts([0x1F, 0x8B]) { return "gzip-compressed data: decompress it first" }
        if starts([0x28, 0xB5, 0x2F, 0xFD]) { return "zstd-compressed data (not a moetool compressed shard): decompress it first" }
        if starts(Array("version https://git-lfs".utf8)) {
            return "a Git LFS pointer, not the file's content: fetch it (git lfs pull) or download it with hf download"
        }
        let text = String(decoding: b, as: UTF8.self)
        let trimmed = text.drop { $0.isWhitespace }.lowercased()
        if trimmed.hasPrefix("<!doctype html") || trimmed.hasPrefix("<html") || trimmed.hasPrefix("<?xml") || trimmed.hasPrefix("<") && trimmed.contains("<html") {
            return "an HTML or XML page (a failed download saves the server's error page): download the file again"
        }
        if trimmed.hasPrefix("{") || trimmed.hasPrefix("[") { return "JSON text, not a safetensors file (is this an index or a config?)" }
        // Printable text throughout: no control byte but whitespace, valid UTF-8.
        let printable = !b.isEmpty && b.allSatisfy { $0 >= 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        if printable && !text.unicodeScalars.contains("\u{FFFD}") { return "a text file, not a safetensors file" }
        return nil
    }
}
