import CKernels

/// Weight-only 4-bit quantization as compressed-tensors computes it for llm-compressor's data-free schemes
/// (W4A16, NVFP4A16, MXFP4A16), bit for bit. Rows in, packed codes and scales out; no I/O.
///
/// The reference does its qparam arithmetic in the weight's dtype: torch computes a BF16 or F16 operation in
/// float32 and rounds the result to the dtype (`Precision.round`). Per row, groups of consecutive columns:
/// - int4 (pack-quantized, symmetric): `s = round(amax / 7.5)` (0 becomes the dtype's eps),
///   `q = clamp(roundEven(round(x / s)), -8, 7)`, stored as the nibble `q + 8`, element j at bits 4(j % 8) of
///   I32 word j / 8; scales in the weight's dtype.
/// - NVFP4 (nvfp4-pack-quantized, groups of 16): a per-tensor float32 global scale
///   `g = round(2688 x round(1 / max(amax_tensor, tiny)))` (1 when that is not finite; 2688 = 448 x 6), shared by the
///   projections an engine fuses (`FusedProjections`); group scales `e4m3(clamp(g x round(amax / 6), ±448))`
///   (0 becomes 0.125); `q = fp4(clamp(x / (s / g), ±6))` in float32.
/// - MXFP4 (mxfp4-pack-quantized, groups of 32): amax rounded to a power of two `p` (up when its mantissa is at
///   least 0.75: compressed-tensors adds 1 << (m - 2) to the bit pattern and keeps sign and exponent), exponent
///   `e = clamp(127 + log2(p) - 2, 0, 255)` stored as E8M0, `q = fp4(clamp(round(x / 2^(e - 127)), ±6))`.
/// FP4 codes (E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6) are rounded to nearest with ties to the even code, a negative
/// value that rounds to zero keeps its sign bit (code 8), element 2j in the low nibble of byte j.
public enum FourBitQuantization {
    /// The dtype the reference computes in.
    public enum Precision: Sendable {
        case bf16, f16, f32

        @inline(__always)
        public func round(_ x: Float) -> Float {
            switch self {
            case .bf16: return FloatDecoding.bf16(FloatEncoding.bf16(x))
            case .f16: return Float(Float16(x))
            case .f32: return x
            }
        }

        /// torch.finfo(dtype).eps: what a zero int4 scale becomes.
        public var eps: Float {
            switch self {
            case .bf16: return 0x1p-7
            case .f16: return 0x1p-10
            case .f32: return 0x1p-23
            }
        }

        /// torch.finfo(dtype).tiny: the smallest amax a global scale is computed from.
        public var tiny: Float {
            switch self {
            case .bf16, .f32: return 0x1p-126
            case .f16: return 0x1p-14
            }
        }
    }

    public enum Scheme: Sendable, Equatable {
        case int4(groupSize: Int)
        case nvfp4
        case mxfp4

        /// Columns sharing one scale.
        public var groupSize: Int {
            switch self {
            case .int4(let g): return g
            case .nvfp4: return 16
            case .mxfp4: return 32
            }
        }
    }

    /// Group sizes the int4 scheme takes (what vLLM's W4A16 kernels run).
    public static let int4GroupSizes = [32, 64, 128]
    /// 448 (E4M3's largest) x 6 (E2M1's largest): what an NVFP4 global scale maps a tensor's amax to.
    public static let nvfp4GlobalNumerator: Float = BlockQuantization.e4m3Max * 6
    /// What a zero NVFP4 group scale becomes (compressed-tensors' eps for E4M3).
    public static let nvfp4ZeroScale: Float = 0.125

    /// Largest |x| of `count` values (0 for none); NaN if any value is not finite.
    @inline(__always)
    public static func amax(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
        var m: Float = 0
        for i in 0..<count {
            let a = abs(x[i])
            if !a.isFinite { return .nan }
            m = Swift.max(m, a)
        }
        return m
    }

    /// The NVFP4 global scale of a tensor (or of the fused projections sharing one) whose largest |x| is `amax`.
    public static func nvfp4GlobalScale(amax: Float, precision: Precision) -> Float {
        // torch evaluates `scalar / tensor` as `tensor.reciprocal() * scalar`, each step rounded to the dtype
        let reciprocal = precision.round(1 / Swift.max(amax, precision.tiny))
        let g = precision.round(nvfp4GlobalNumerator * reciprocal)
        return g.isFinite ? g : 1
    }

    // MARK: int4

    /// One row of `cols` values into `cols / 8` words and `cols / groupSize` scales (as values of the dtype).
    /// `cols` must be a multiple of `groupSize`, itself a multiple of 8. Returns false if a value is not finite.
    public static func int4Row(_ x: UnsafePointer<Float>, cols: Int, groupSize: Int, precision: Precision,
                               words: UnsafeMutablePointer<UInt32>, scales: UnsafeMutablePointer<Float>) -> Bool {
        for g in 0..<(cols / groupSize) {
            let v = x + g * groupSize
            let a = amax(v, groupSize)
            guard !a.isNaN else { return false }
            var s = precision.round(a / 7.5)
            if s == 0 { s = precision.eps }
            scales[g] = s
            let words = words + (g * groupSize) / 8
            switch precision {
            case .bf16: moe_int4_pack(v, groupSize, s, 1, words)
            case .f32: moe_int4_pack(v, groupSize, s, 0, words)
            case .f16:
                // Quotients rounded to F16 here, then packed as they are (dividing by 1 is exact).
                var q = [Float](repeating: 0, count: groupSize)
                for k in 0..<groupSize { q[k] = precision.round(v[k] / s) }
                moe_int4_pack(q, groupSize, 1, 0, words)
            }
        }
        return true
    }

    // MARK: FP4

    /// E2M1 codes of `q` (the kernel the encoders use, with nothing to divide by), one per value: clamped to ±6,
    /// nearest value, ties to the even code; the sign bit set for any value below zero, also when it rounds to
    /// zero (compressed-tensors multiplies the rounded magnitude by sign(q); sign(-0.0) is 0).
    public static func fp4Codes(_ q: [Float]) -> [UInt8] {
        let padded = q + (q.count % 2 == 1 ? [0] : [])
        var packed = [UInt8](repeating: 0, count: padded.count / 2)
        moe_fp4_pack_multiplied(padded, padded.count, 1, 0, &packed)
        return (0..<q.count).map { i in i % 2 == 0 ? packed[i / 2] & 0xF : packed[i / 2] >> 4 }
    }

    /// One NVFP4 row: `cols / 2` bytes and `cols / 16` E4M3 scale codes. Returns false if a value is not finite.
    public static func nvfp4Row(_ x: UnsafePointer<Float>, cols: Int, globalScale: Float, precision: Precision,
                                packed: UnsafeMutablePointer<UInt8>, scaleCodes: UnsafeMutablePointer<UInt8>) -> Bool {
        let groupSize = Scheme.nvfp4.groupSize
        for g in 0..<(cols / groupSize) {
            let v = x + g * groupSize
            let a = amax(v, groupSize)
            guard !a.isNaN else { return false }
            let local = precision.round(a / 6)
            let e4m3 = Swift.min(Swift.max(globalScale * local, -BlockQuantization.e4m3Max), BlockQuantization.e4m3Max)
            var code = FloatEncoding.e4m3(e4m3)
            var scale = FloatDecoding.e4m3Table[Int(code)]
            if scale == 0 {
                scale = nvfp4ZeroScale
                code = FloatEncoding.e4m3(scale)
            }
            scaleCodes[g] = code
            moe_fp4_pack_divided(v, groupSize, scale / globalScale, packed + g * groupSize / 2)
        }
        return true
    }

    /// One MXFP4 row: `cols / 2` bytes and `cols / 32` E8M0 exponents. Returns false if a value is not finite.
    public static func mxfp4Row(_ x: UnsafePointer<Float>, cols: Int, precision: Precision,
                                packed: UnsafeMutablePointer<UInt8>, exponents: UnsafeMutablePointer<UInt8>) -> Bool {
        let groupSize = Scheme.mxfp4.groupSize
        for g in 0..<(cols / groupSize) {
            let v = x + g * groupSize
            let a = amax(v, groupSize)
            guard !a.isNaN else { return false }
            let (exponent, scale) = mxScale(amax: a, precision: precision)
            exponents[g] = exponent
            // Dividing by a power of two is multiplying by its (exact) inverse.
            let out = packed + g * groupSize / 2
            switch precision {
            case .bf16: moe_fp4_pack_multiplied(v, groupSize, 1 / scale, 1, out)
            case .f32: moe_fp4_pack_multiplied(v, groupSize, 1 / scale, 0, out)
            case .f16:
                var q = [Float](repeating: 0, count: groupSize)
                for k in 0..<groupSize { q[k] = precision.round(v[k] / scale) }
                moe_fp4_pack_multiplied(q, groupSize, 1, 0, out)
            }
        }
        return true
    }

    /// One row of gpt-oss's MXFP4 as OpenAI's triton_kernels writes it (`downcast_to_mxfp`, scale rounding
    /// ROUND_UP, whose torch reference is `downcast_to_mxfp_torch`): per 32 values, `d = amax / 6` in float32
    /// rounded **up** to a power of two on its bit pattern (`(bits + 0x7FFFFF) & 0x7F800000`), stored as its biased
    /// exponent; codes of `x * (1 / d)` (0 for a zero group), nearest E2M1 with ties to even, saturating at 6, the
    /// sign from the sign bit. `cols` a multiple of 32; returns false if a value is not finite.
    public static func gptOssMXFP4Row(_ x: UnsafePointer<Float>, cols: Int, packed: UnsafeMutablePointer<UInt8>,
                                      exponents: UnsafeMutablePointer<UInt8>) -> Bool {
        let groupSize = Scheme.mxfp4.groupSize
        for g in 0..<(cols / groupSize) {
            let v = x + g * groupSize
            let a = amax(v, groupSize)
            guard !a.isNaN else { return false }
            let d = Float(bitPattern: ((a / 6).bitPattern &+ 0x7F_FFFF) & 0x7F80_0000)
            exponents[g] = UInt8(truncatingIfNeeded: d.bitPattern >> 23)
            moe_fp4_pack_ocp(v, groupSize, d == 0 ? 0 : 1 / d, packed + g * groupSize / 2)
        }
        return true
    }

    /// compressed-tensors' MX scale of a group with largest |x| `amax` (a value of the dtype): its E8M0 byte
    /// and the scale value divided by.
    public static func mxScale(amax: Float, precision: Precision) -> (UInt8, Float) {
        // round_to_power_2 on the dtype's bit pattern: add half of the element format's (E2M1: 1 mantissa
        // bit) step below the dtype's mantissa, keep sign and exponent.
        let power: Float
        switch precision {
        case .bf16:
            let bits = FloatEncoding.bf16(amax)
            power = FloatDecoding.bf16((bits &+ (1 << 5)) & 0xFF80)
        case .f16:
            let bits = Float16(amax).bitPattern
            power = Float(Float16(bitPattern: (bits &+ (1 << 8)) & 0xFC00))
        case .f32:
            power = Float(bitPattern: (amax.bitPattern &+ (1 << 21)) & 0xFF80_0000)
        }
        // 127 + floor(log2(p)) - 2, clamped to a byte (log2(0) is -inf: exponent 0)
        let unbiased: Float = power == 0 ? -.infinity : (power.isFinite ? Float(power.exponent) : .infinity)
        let e = Swift.min(Swift.max(127 + unbiased - 2, 0), 255)
        var scale = precision.round(Float(sign: .plus, exponent: Int(e) - 127, significand: 1))
        if scale == 0 { scale = 1 }  // the reference's eps for a uint8 scale dtype
        // What is stored is the scale's own exponent (the same byte unless the dtype flushed it).
        return (UInt8(127 + scale.exponent), scale)
    }

    // MARK: Decoding what was just encoded (the loss of a re-quantization)

    /// The values one encoded row stands for, as the producing library dequantizes them (the rules of
    /// WeightReading's decoders, restated here for rows still in memory): int4 `round(q x s)`, NVFP4
    /// `round(f32(e2m1 x f32(s / g)))`, MXFP4 `round(e2m1 x 2^(e - 127))`, rounded to `precision`. `scales`: the
    /// row's stored scale bytes (int4: values of the dtype, little-endian; NVFP4: E4M3 codes; MXFP4: E8M0).
    public static func decodeRow(_ scheme: Scheme, precision: Precision, packed: UnsafeRawPointer, scales: UnsafeRawPointer,
                                 globalScale: Float, cols: Int, into out: UnsafeMutablePointer<Float>) {
        let g = scheme.groupSize
        switch scheme {
        case .int4:
            let words = packed.assumingMemoryBound(to: UInt32.self)
            for c in 0..<cols {
                let q = Float(Int((words[c / 8] >> UInt32(4 * (c % 8))) & 0xF) - 8)
                let s: Float
                switch precision {
                case .f32: s = Float(bitPattern: scales.loadUnaligned(fromByteOffset: 4 * (c / g), as: UInt32.self))
                case .f16: s = Float(Float16(bitPattern: scales.loadUnaligned(fromByteOffset: 2 * (c / g), as: UInt16.self)))
                case .bf16: s = FloatDecoding.bf16(scales.loadUnaligned(fromByteOffset: 2 * (c / g), as: UInt16.self))
                }
                out[c] = precision.round(q * s)
            }
        case .nvfp4, .mxfp4:
            let bytes = packed.assumingMemoryBound(to: UInt8.self)
            let scaleBytes = scales.assumingMemoryBound(to: UInt8.self)
            for c in 0..<cols {
                let code = (bytes[c / 2] >> (c % 2 == 0 ? 0 : 4)) & 0xF
                let magnitude = e2m1Magnitudes[Int(code & 7)]
                let value = code & 8 != 0 ? -magnitude : magnitude
                if scheme == .nvfp4 {
                    out[c] = precision.round(value * (FloatDecoding.e4m3Table[Int(scaleBytes[c / g])] / globalScale))
                } else {
                    let scale = precision.round(Float(sign: .plus, exponent: Int(scaleBytes[c / g]) - 127, significand: 1))
                    out[c] = precision.round(value * scale)
                }
            }
        }
    }

    static let e2m1Magnitudes: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
}
