import Checkpoint
import SafetensorsFormat

/// How many of the model's parameters a stored tensor holds, from its name, dtype and quantization_config alone
/// (headers only): packed 4-bit codes count as the values they hold, and the bookkeeping of quantized formats
/// (scales, zero points, global scales, shape tensors, activation scales) counts apart, as overhead.
public struct ParameterCounting: Sendable {
    /// Values held by each I32 element of a compressed-tensors `weight_packed` (32 / num_bits).
    public let valuesPerPackedInt32: UInt64
    /// DeepSeek-V4's FP4 experts (config.json's expert_dtype "fp4", at the top or in quantization_config): their I8
    /// `.weight` tensors hold two values a byte.
    public let fp4ByteWeights: Bool

    public init(config: ModelConfig?) {
        valuesPerPackedInt32 = UInt64(32 / ParameterCounting.packedBits(config))
        fp4ByteWeights = (config?.string("expert_dtype") ?? config?.quantizationConfig?["expert_dtype"]?.stringValue) == "fp4"
    }

    /// The bits of pack-quantized integer weights: quantization_config's config_groups agree on one num_bits
    /// in every checkpoint seen (W4A16, W8A16); 4 when none is given.
    static func packedBits(_ config: ModelConfig?) -> Int {
        let groups = config?.quantizationConfig?["config_groups"]?.objectValue?.members.map(\.value) ?? []
        let bits = groups.compactMap { $0.objectValue?["weights"]?.objectValue?["num_bits"]?.uint64Value }
        guard let first = bits.first, bits.allSatisfy({ $0 == first }), [2, 4, 8, 16].contains(first) else { return 4 }
        return Int(first)
    }

    public enum Kind: Sendable, Equatable {
        /// Values of the model, `elements` many (packed ones unpacked).
        case parameters(UInt64)
        /// Scales, zero points, global scales, shapes and activation scales of a quantized format.
        case overhead
    }

    /// Last name parts of quantization bookkeeping: compressed-tensors (`weight_scale`, `weight_zero_point`,
    /// `weight_global_scale`, `weight_shape`, `weight_g_idx`, `input_scale`, `input_global_scale`), DeepSeek
    /// (`weight_scale_inv`), ModelOpt (`weight_scale_2`), attention KV-cache scales (`k_scale`, `v_scale`).
    static let overheadParts: [[UInt8]] = [
        "weight_scale", "weight_scale_inv", "weight_scale_2", "weight_zero_point", "weight_global_scale",
        "weight_shape", "weight_g_idx", "input_scale", "input_global_scale", "k_scale", "v_scale",
    ].map { Array($0.utf8) }
    static let weightPart = Array("weight".utf8)
    static let packedPart = Array("weight_packed".utf8)
    static let scalePart = Array("scale".utf8)

    public func kind(_ t: TensorInfo) -> Kind {
        let n = t.elementCount
        var name = t.name
        let verdict: Kind? = name.withUTF8 { bytes in
            // The last dot-separated part decides; most names end in `.weight`, checked first.
            var dot = bytes.count
            while dot > 0 && bytes[dot - 1] != UInt8(ascii: ".") { dot -= 1 }
            guard dot > 0 else { return nil }
            let last = UnsafeBufferPointer(rebasing: bytes[dot...])
            if last.elementsEqual(ParameterCounting.weightPart) {
                // ModelOpt NVFP4 (and DeepSeek-V4's FP4 experts, I8) keep two FP4 codes per byte under the weight's own name.
                return .parameters(t.dtype == .U8 || (t.dtype == .I8 && fp4ByteWeights) ? n &* 2 : n)
            }
            if last.elementsEqual(ParameterCounting.packedPart) {
                // I32: integers packed 32 / num_bits to an element; U8: two FP4 (NVFP4, MXFP4) to a byte.
                if t.dtype == .I32 { return .parameters(n &* valuesPerPackedInt32) }
                if t.dtype == .U8 { return .parameters(n &* 2) }
            }
            if ParameterCounting.overheadParts.contains(where: { last.elementsEqual($0) }) { return .overhead }
            // DeepSeek-V4's `<module>.scale`: UE8M0 block scales (FP8) and E8M0 group exponents (FP4).
            if t.dtype == .F8_E8M0 && last.elementsEqual(ParameterCounting.scalePart) { return .overhead }
            return nil
        }
        if let verdict { return verdict }
        // gpt-oss MXFP4 experts: `*_blocks` U8 [E, rows, cols/32, 16] (two FP4 a byte), `*_scales` U8 (E8M0).
        if t.dtype == .U8 {
            if name.hasSuffix("_blocks") { return .parameters(n &* 2) }
            if name.hasSuffix("_scales") { return .overhead }
        }
        return .parameters(n)
    }
}
