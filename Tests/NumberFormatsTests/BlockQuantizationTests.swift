import FixtureSupport
import NumberFormats
import SafetensorsFormat
import Testing

@Suite struct E4M3Rounding {
    /// Every positive code, its neighbours' midpoint (exact in float32) and the
    /// floats just around it: ties go to the even code, everything else to the nearer.
    @Test func roundsToNearestEvenAtEveryMidpoint() {
        let table = FloatDecoding.e4m3Table
        for code in 0..<0x7E {
            let lo = table[code]
            let hi = table[code + 1]
            #expect(FloatEncoding.e4m3(lo) == UInt8(code))
            #expect(FloatEncoding.e4m3(-lo) == UInt8(code) | 0x80)
            let mid = (lo + hi) / 2
            let even = UInt8(code % 2 == 0 ? code : code + 1)
            #expect(FloatEncoding.e4m3(mid) == even, "midpoint of 0x\(String(code, radix: 16))")
            #expect(FloatEncoding.e4m3(mid.nextDown) == UInt8(code))
            #expect(FloatEncoding.e4m3(mid.nextUp) == UInt8(code + 1))
        }
    }

    @Test func saturatesAndKeepsNaN() {
        #expect(FloatEncoding.e4m3(448) == 0x7E)
        #expect(FloatEncoding.e4m3(463.9) == 0x7E)
        #expect(FloatEncoding.e4m3(1e30) == 0x7E)
        #expect(FloatEncoding.e4m3(-.infinity) == 0xFE)
        #expect(FloatEncoding.e4m3(.nan) == 0x7F)
        #expect(FloatEncoding.e4m3(0x1p-10) == 0)  // half the smallest subnormal: tie to even (0)
        #expect(FloatEncoding.e4m3(0x1.8p-10) == 1)
    }

    @Test func bf16RoundsToNearestEven() {
        #expect(FloatEncoding.bf16(1) == 0x3F80)
        #expect(FloatEncoding.bf16(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie, even stays
        #expect(FloatEncoding.bf16(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie, odd rounds up
        #expect(FloatEncoding.bf16(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(FloatEncoding.bf16(.greatestFiniteMagnitude) == 0x7F80)  // rounds past the largest BF16
        #expect(FloatDecoding.bf16(FloatEncoding.bf16(.nan)).isNaN)
    }
}

/// FP8 block quantization equals the torch reference of DeepSeek-V3's formula
/// (Fixtures/quant, written by Fixtures/generate.py) to the bit: codes, scales and
/// the BF16 dequantization, for partial edge blocks, all-zero blocks, tiny values,
/// 576-row weights, with float32 and UE8M0 scales.
@Suite struct BlockQuantizationAgainstTorch {
    static let inputs = try! SafetensorsFile(path: Fixtures.path("quant/inputs_bf16.safetensors"))
    static let expected = try! SafetensorsFile(path: Fixtures.path("quant/expected.safetensors"))

    static var cases: [String] { inputs.tensors.map(\.name) }

    func floats(_ f: SafetensorsFile, _ t: TensorInfo) -> [Float] {
        let data = f.data(t)
        return (0..<Int(t.elementCount)).map { data.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
    }

    @Test(arguments: cases)
    func bitExact(_ name: String) throws {
        let input = try #require(Self.inputs.tensor(named: name))
        let rows = Int(input.shape[0])
        let cols = Int(input.shape[1])
        let data = Self.inputs.data(input)
        let values = (0..<rows * cols).map { FloatDecoding.bf16(data.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) }
        for (format, tag) in [(BlockQuantization.ScaleFormat.float32, "f32"), (.ue8m0, "ue8m0")] {
            let q = values.withUnsafeBufferPointer { BlockQuantization.quantize($0, rows: rows, cols: cols, format: format) }
            let weight = try #require(Self.expected.tensor(named: "\(name).\(tag).weight"))
            let scale = try #require(Self.expected.tensor(named: "\(name).\(tag).weight_scale_inv"))
            let deq = try #require(Self.expected.tensor(named: "\(name).\(tag).dequantized"))
            #expect(q.nonFinite == 0)
            #expect(scale.shape == [UInt64((rows + 127) / 128), UInt64((cols + 127) / 128)])
            #expect(q.scales.map(\.bitPattern) == floats(Self.expected, scale).map(\.bitPattern), "\(name) \(tag) scales")
            let expectedCodes = Array(Self.expected.data(weight))
            let mismatches = zip(q.codes, expectedCodes).filter { $0 != $1 }.count
            #expect(mismatches == 0, "\(name) \(tag): \(mismatches) codes differ")
            let ours = q.codes.withUnsafeBufferPointer { c in
                q.scales.withUnsafeBufferPointer { s in
                    BlockQuantization.dequantizeToBF16(codes: c, scales: s, rows: rows, cols: cols)
                }
            }
            let theirs = (0..<rows * cols).map { Self.expected.data(deq).loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) }
            #expect(ours == theirs, "\(name) \(tag) dequantized")
        }
    }

    @Test func nonFiniteBlocksAreCountedAndPoisoned() {
        var values = [Float](repeating: 0.5, count: 130 * 10)
        values[3] = .nan
        values[129 * 10 + 9] = .infinity
        let q = values.withUnsafeBufferPointer { BlockQuantization.quantize($0, rows: 130, cols: 10) }
        #expect(q.nonFinite == 2)
        #expect(q.scales.count == 2 && q.scales.allSatisfy(\.isNaN))
    }

    @Test func ue8m0ScalesArePowersOfTwo() {
        for amax: Float in [0, 1e-4, 0.02, 0.9, 448, 1000] {
            let s = BlockQuantization.scale(amax: amax, format: .ue8m0)
            #expect(s.significandBitPattern == 0)
            #expect(s >= BlockQuantization.scale(amax: amax, format: .float32))
        }
    }
}

/// Exhaustive over 16-bit inputs: every BF16 and every F16 code rounded to E4M3 equals
/// ml_dtypes (after the formula's ±448 clamp), and every BF16 code survives float32.
@Suite struct ExhaustiveCodecs {
    static let tables = try! SafetensorsFile(path: Fixtures.path("quant/codec_tables.safetensors"))

    @Test(arguments: ["bf16", "f16"])
    func everySixteenBitCodeToE4M3(_ source: String) throws {
        let t = try #require(Self.tables.tensor(named: "\(source)_to_e4m3"))
        let expected = Array(Self.tables.data(t))
        #expect(expected.count == 65536)
        var mismatches = 0
        for code in 0..<65536 {
            let x = source == "bf16" ? FloatDecoding.bf16(UInt16(code)) : FloatDecoding.f16Table[code]
            if FloatEncoding.e4m3(x) != expected[code] {
                mismatches += 1
                if mismatches <= 5 { Issue.record("\(source) 0x\(String(code, radix: 16)) = \(x): ours \(FloatEncoding.e4m3(x)), ml_dtypes \(expected[code])") }
            }
        }
        #expect(mismatches == 0)
    }

    @Test func everyBF16CodeRoundTripsThroughFloat32() {
        for code in 0..<65536 {
            let c = UInt16(code)
            let x = FloatDecoding.bf16(c)
            // NaNs come back quiet (0x0040 set) with their sign and payload otherwise kept.
            let expected = x.isNaN ? c | 0x0040 : c
            #expect(FloatEncoding.bf16(x) == expected, "0x\(String(code, radix: 16))")
            if FloatEncoding.bf16(x) != expected { return }
        }
    }
}

@Suite struct BF16InPlaceQuantization {
    /// Quantizing BF16 values read in place (the converter's path) gives the same codes, scales and
    /// non-finite count as converting them to float32 first and quantizing those: over random BF16
    /// bit patterns of every kind (NaN, infinities, subnormals, ±0, huge), partial edge blocks, and
    /// input at an odd address (safetensors data offsets need not be aligned).
    @Test(arguments: [(1, 1), (129, 130), (128, 7168 / 8), (300, 257)])
    func equalsTheFloat32Path(_ rows: Int, _ cols: Int) {
        var state = UInt64(rows * 31 + cols)
        var bits: [UInt16] = (0..<(rows * cols)).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let r = UInt16(truncatingIfNeeded: state >> 40)
            // Mostly N(0, 0.02)-like magnitudes, with every other kind sprinkled in.
            return state >> 61 == 0 ? r : (r & 0x8000) | (0x3C00 + (r & 0x03FF) - 0x0200)
        }
        if bits.count > 3 { bits[1] = 0x7F80; bits[2] = 0x0001; bits[3] = 0x8000 }
        for format in [BlockQuantization.ScaleFormat.float32, .ue8m0] {
            let floats = bits.map { FloatDecoding.bf16($0) }
            let gridCount = ((rows + 127) / 128) * ((cols + 127) / 128)
            var codesF = [UInt8](repeating: 0, count: rows * cols), scalesF = [Float](repeating: 0, count: gridCount)
            var codesB = codesF, scalesB = scalesF
            let badF = floats.withUnsafeBufferPointer { v in
                codesF.withUnsafeMutableBufferPointer { c in
                    scalesF.withUnsafeMutableBufferPointer { s in
                        BlockQuantization.quantize(v, rows: rows, cols: cols, format: format, codes: c, scales: s)
                    }
                }
            }
            // The BF16 bytes one byte into a buffer: misaligned on purpose.
            var raw = [UInt8](repeating: 0, count: bits.count * 2 + 1)
            for (i, b) in bits.enumerated() { raw[1 + 2 * i] = UInt8(b & 0xFF); raw[2 + 2 * i] = UInt8(b >> 8) }
            let badB = raw.withUnsafeBytes { r in
                codesB.withUnsafeMutableBufferPointer { c in
                    scalesB.withUnsafeMutableBufferPointer { s in
                        BlockQuantization.quantize(.bf16(r.baseAddress! + 1), rows: rows, cols: cols, format: format, codes: c, scales: s)
                    }
                }
            }
            #expect(badB == badF)
            #expect(badF > 0 || bits.count <= 3)
            #expect(codesB == codesF, "\(rows)x\(cols) \(format)")
            #expect(scalesB.map(\.bitPattern) == scalesF.map(\.bitPattern), "\(rows)x\(cols) \(format)")
        }
    }
}
