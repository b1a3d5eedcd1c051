#if canImport(Glibc)
import Glibc
#endif

// The one place numbers become text for people: decimals, significant digits, hex, column padding.
// Every command and report uses these, so 0.5 is written the same way everywhere.

/// `value` rounded half away from zero to `places` decimals, written as Swift writes that Double
/// (shortest round-trip digits: 2.5, 0.33, 12.0). With `trimZero`, a ".0" left by rounding to a whole
/// number goes ("12"). Rounding first means the digits past `places` never show (0.1 + 0.2 -> 0.3).
public func decimalText(_ value: Double, places: Int, trimZero: Bool = false) -> String {
    var scale = 1.0
    for _ in 0..<places { scale *= 10 }
    var text = "\((value * scale).rounded() / scale)"
    if trimZero, text.hasSuffix(".0") { text.removeLast(2) }
    return text
}

/// Exactly `places` decimals, zero-filled: printf's `%.Nf` (0.30, 12.00).
public func fixedText(_ value: Double, places: Int) -> String {
    printfText("%.\(places)f", value)
}

/// `digits` significant digits, exponent when large or small: printf's `%.Ng` (0.0123457, 1.5e+07).
public func significantText(_ value: Double, digits: Int) -> String {
    printfText("%.\(digits)g", value)
}

private func printfText(_ format: String, _ value: Double) -> String {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
        let n = withVaList([value]) { vsnprintf(buffer.baseAddress!, buffer.count, format, $0) }
        return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: Int(max(0, min(n, 63)))), as: UTF8.self)
    }
}

/// "1 file", "2 files", "0 files"; `plural` for nouns that do not just add an s ("1 entry", "2 entries").
public func counted(_ n: some BinaryInteger, _ noun: String, plural: String? = nil) -> String {
    "\(n) " + (n == 1 ? noun : plural ?? noun + "s")
}

/// Two lowercase hex digits per byte, in order (digests, magic numbers).
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in bytes { out += [digits[Int(b >> 4)], digits[Int(b & 0xF)]] }
    return String(decoding: out, as: UTF8.self)
}

extension String {
    /// Padded on the left with `pad` (spaces: numbers in a column; "0": clock digits) to `width`
    /// characters; never cut.
    public func rightAligned(_ width: Int, pad: Character = " ") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }

    /// Padded with spaces on the right to `width` characters (names in a column); cut to `width` only
    /// when `truncating` (a column that must stay that wide whatever a name's length).
    public func leftAligned(_ width: Int, truncating: Bool = false) -> String {
        if count >= width { return truncating ? String(prefix(width)) : self }
        return self + String(repeating: " ", count: width - count)
    }
}
