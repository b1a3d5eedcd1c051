/// Bit-exact decoding of the narrow float formats found in checkpoints into Float.
///
/// Formats (sign, exponent bits, mantissa bits, bias):
/// - BF16: 1,8,7,127 (the top half of a float32). F16: IEEE binary16, 1,5,10,15.
/// - F8_E4M3 (E4M3FN): 1,4,3,7; no infinities; NaN only S.1111.111 (0x7F, 0xFF); max 448.
/// - F8_E5M2: 1,5,2,15; IEEE-like with infinities (0x7C, 0xFC) and NaNs; max 57344.
/// - F8_E4M3FNUZ: 1,4,3,8 and F8_E5M2FNUZ: 1,5,2,16; no infinities, no negative zero, NaN only 0x80.
/// - F8_E8M0: an exponent only, 2^(e-127); 0xFF is NaN.
public enum FloatDecoding {
    @inline(__always)
    public static func bf16(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    public static func f16(_ bits: UInt16) -> Float {
        let sign: Float = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10) & 0x1F
        let mantissa = Float(bits & 0x3FF)
        switch exponent {
        case 0: return sign * mantissa * 0x1p-24
        case 0x1F: return mantissa == 0 ? sign * .infinity : (sign < 0 ? -.nan : .nan)  // NaN keeps its sign
        default: return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
        }
    }

    /// A generic small-float decoder: `exponentBits`/`mantissaBits` with `bias`.
    /// `ieeeSpecials`: an all-ones exponent means Inf/NaN (E5M2). `fnNaN`: only
    /// all-ones exponent and mantissa is NaN (E4M3FN). `fnuz`: 0x80 is NaN, no -0.
    static func small(_ byte: UInt8, exponentBits: Int, mantissaBits: Int, bias: Int,
                      ieeeSpecials: Bool, fnNaN: Bool, fnuz: Bool) -> Float {
        if fnuz && byte == 0x80 { return .nan }
        let sign: Float = byte & 0x80 != 0 ? -1 : 1
        let exponent = Int(byte >> mantissaBits) & ((1 << exponentBits) - 1)
        let mantissa = Int(byte) & ((1 << mantissaBits) - 1)
        let maxExponent = (1 << exponentBits) - 1
        if ieeeSpecials && exponent == maxExponent {
            return mantissa == 0 ? sign * .infinity : (sign < 0 ? -.nan : .nan)
        }
        if fnNaN && exponent == maxExponent && mantissa == (1 << mantissaBits) - 1 { return sign < 0 ? -.nan : .nan }
        let scale = Float(1 << mantissaBits)
        if exponent == 0 {
            return sign * Float(mantissa) / scale * Float(sign: .plus, exponent: 1 - bias, significand: 1)
        }
        return sign * (1 + Float(mantissa) / scale) * Float(sign: .plus, exponent: exponent - bias, significand: 1)
    }

    public static let e4m3Table: [Float] = (0..<256).map {
        small(UInt8($0), exponentBits: 4, mantissaBits: 3, bias: 7, ieeeSpecials: false, fnNaN: true, fnuz: false)
    }
    public static let e5m2Table: [Float] = (0..<256).map {
        small(UInt8($0), exponentBits: 5, mantissaBits: 2, bias: 15, ieeeSpecials: true, fnNaN: false, fnuz: false)
    }
    public static let e4m3fnuzTable: [Float] = (0..<256).map {
        small(UInt8($0), exponentBits: 4, mantissaBits: 3, bias: 8, ieeeSpecials: false, fnNaN: false, fnuz: true)
    }
    public static let e5m2fnuzTable: [Float] = (0..<256).map {
        small(UInt8($0), exponentBits: 5, mantissaBits: 2, bias: 16, ieeeSpecials: false, fnNaN: false, fnuz: true)
    }
    public static let e8m0Table: [Float] = (0..<256).map {
        $0 == 0xFF ? .nan : Float(sign: .plus, exponent: $0 - 127, significand: 1)
    }
    public static let f16Table: [Float] = (0..<65536).map { f16(UInt16($0)) }
}
