/// Rounding float32 into narrow formats, bit-exact with the reference math
/// (round to nearest, ties to even).
public enum FloatEncoding {
    /// float32 -> BF16, round to nearest even. NaN stays NaN (quiet, sign kept);
    /// infinities stay infinite; values that round past the largest BF16 become infinity.
    @inline(__always)
    public static func bf16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// float32 -> F8_E4M3 (E4M3FN), round to nearest even, saturating at ±448.
    /// Finite input never yields NaN; NaN gives 0x7F (or 0xFF when negative), ±Inf saturates.
    @inline(__always)
    public static func e4m3(_ x: Float) -> UInt8 {
        let bits = x.bitPattern
        let sign = UInt8(truncatingIfNeeded: bits >> 24) & 0x80
        if x.isNaN { return sign | 0x7F }
        let a = abs(x)
        if a >= 448 { return sign | 0x7E }
        if a < 0x1p-6 {
            // Subnormal range: multiples of 2^-9; scaling by 512 is exact, so only the rounding rounds.
            let m = UInt8((a * 512).rounded(.toNearestOrEven))  // 0...8; 8 is the smallest normal, code 0x08
            return sign | m
        }
        let exponent = Int((bits >> 23) & 0xFF) - 127  // -6...8
        let mantissa = bits & 0x7F_FFFF
        var top = mantissa >> 20  // the 3 bits kept
        let rest = mantissa & 0xF_FFFF
        if rest > 0x8_0000 || (rest == 0x8_0000 && top & 1 == 1) { top += 1 }
        var biased = exponent + 7
        if top == 8 {
            top = 0
            biased += 1
        }
        let code = UInt8(biased << 3) | UInt8(top)
        return sign | min(code, 0x7E)
    }
}
