import Support
import Testing

@Suite struct TextFormatting {
    @Test func decimals() {
        #expect(decimalText(2.345, places: 2) == "2.35")
        #expect(decimalText(12, places: 1) == "12.0")
        #expect(decimalText(12, places: 2, trimZero: true) == "12")
        #expect(decimalText(0.1 + 0.2, places: 2) == "0.3")
        #expect(decimalText(-1.25, places: 1) == "-1.3")  // half away from zero
        #expect(decimalText(1234.5, places: 0, trimZero: true) == "1235")
    }

    @Test func printfForms() {
        #expect(fixedText(0.3, places: 2) == "0.30")
        #expect(fixedText(2.005, places: 0) == "2")
        #expect(significantText(0.0123456789, digits: 6) == "0.0123457")
        #expect(significantText(15_000_000, digits: 6) == "1.5e+07")
        #expect(significantText(-0.5, digits: 6) == "-0.5")
    }

    @Test func hex() {
        #expect(hexString([0x00, 0x0f, 0xa5, 0xff]) == "000fa5ff")
        #expect(hexString([UInt8]()) == "")
    }

    @Test func padding() {
        #expect("ab".rightAligned(4) == "  ab")
        #expect("7".rightAligned(2, pad: "0") == "07")
        #expect("abcdef".rightAligned(3) == "abcdef")
        #expect("ab".leftAligned(4) == "ab  ")
        #expect("abcdef".leftAligned(3) == "abcdef")
        #expect("abcdef".leftAligned(3, truncating: true) == "abc")
    }
}

@Suite struct Plurals {
    @Test func nouns() {
        #expect(counted(1, "file") == "1 file")
        #expect(counted(0, "file") == "0 files")
        #expect(counted(UInt64(2), "entry", plural: "entries") == "2 entries")
    }
}
