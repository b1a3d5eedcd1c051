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

extension FloatEncoding {
    /// Eight float32 -> E4M3FN at once, the same rounding as the scalar `e4m3`
    /// (nearest even, saturating at ±448, NaN to 0x7F with its sign).
    @inline(__always)
    public static func e4m3(_ v: SIMD8<Float>) -> SIMD8<UInt8> {
        let bits = unsafeBitCast(v, to: SIMD8<UInt32>.self)
        let sign = (bits &>> 24) & 0x80
        let abits = bits & 0x7FFF_FFFF
        // Normal range: round the mantissa to 3 bits at bit 20 (nearest even; a carry moves the exponent),
        // then rebias the exponent from 127 to 7.
        let rounded = abits &+ 0x7_FFFF &+ ((abits &>> 20) & 1)
        var code = (rounded &>> 20) &- 0x3C0
        // Subnormal range (|x| < 2^-6): multiples of 2^-9, rounded by the float adder (nearest even).
        let magic = SIMD8<Float>(repeating: 12_582_912)  // 1.5 * 2^23
        // Adding 1.5 * 2^23 puts the rounded integer in the low mantissa bits (the ulp there is 1).
        let shifted = unsafeBitCast(abits, to: SIMD8<Float>.self) * 512 + magic
        let subnormal = unsafeBitCast(shifted, to: SIMD8<UInt32>.self) & 0xF
        code.replace(with: subnormal, where: abits .< 0x3C80_0000)
        code.replace(with: 0x7E, where: abits .>= 0x43E0_0000)  // |x| >= 448, infinities included
        code.replace(with: 0x7F, where: abits .> 0x7F80_0000)  // NaN
        return SIMD8<UInt8>(truncatingIfNeeded: code | sign)
    }
}
