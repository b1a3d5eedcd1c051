import FixtureSupport
import NumberFormats
import StrictJSON
import Testing

/// Every 8-bit float code, and a spread of 16-bit codes, decoded as ml_dtypes decodes
/// them (Fixtures/numbers/float_tables.json, written by Fixtures/generate.py).
@Suite struct FloatDecodingAgainstMLDtypes {
    let tables = Fixtures.json("numbers/float_tables.json").objectValue!

    func expected(_ key: String) -> [Double] {
        tables[key]!.arrayValue!.map { v in
            switch v.stringValue! {
            case "nan": return .nan
            case "inf": return .infinity
            case "-inf": return -.infinity
            case let s: return Double(s)!
            }
        }
    }

    func same(_ a: Float, _ b: Double) -> Bool {
        a.isNaN ? b.isNaN : (Double(a) == b && a.sign == b.sign)
    }

    @Test(arguments: ["F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0"])
    func eightBitTables(_ name: String) {
        let ours: [Float] = switch name {
        case "F8_E4M3": FloatDecoding.e4m3Table
        case "F8_E5M2": FloatDecoding.e5m2Table
        case "F8_E4M3FNUZ": FloatDecoding.e4m3fnuzTable
        case "F8_E5M2FNUZ": FloatDecoding.e5m2fnuzTable
        default: FloatDecoding.e8m0Table
        }
        let reference = expected(name)
        #expect(reference.count == 256)
        for code in 0..<256 {
            #expect(same(ours[code], reference[code]), "\(name) code 0x\(String(code, radix: 16)): \(ours[code]) vs \(reference[code])")
        }
    }

    @Test func e4m3Facts() {
        #expect(FloatDecoding.e4m3Table[0x7E] == BlockQuantization.e4m3Max)
        #expect(FloatDecoding.e4m3Table[0x7F].isNaN && FloatDecoding.e4m3Table[0xFF].isNaN)
        #expect(FloatDecoding.e4m3Table[0x01] == 0x1p-9)
        #expect(FloatDecoding.e5m2Table[0x7B] == 57344)
        #expect(FloatDecoding.e5m2Table[0x7C] == .infinity)
    }

    @Test func sixteenBit() {
        let codes = tables["BF16_codes"]!.arrayValue!.map { UInt16($0.uint64Value!) }
        let bf16 = expected("BF16")
        let f16 = expected("F16")
        #expect(codes.count > 600)
        for (i, c) in codes.enumerated() {
            #expect(same(FloatDecoding.bf16(c), bf16[i]), "BF16 0x\(String(c, radix: 16))")
            #expect(same(FloatDecoding.f16Table[Int(c)], f16[i]), "F16 0x\(String(c, radix: 16))")
        }
    }
}
