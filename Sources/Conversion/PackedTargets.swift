import CKernels
import Checkpoint
import NumberFormats
import SafetensorsFormat
import StrictJSON
import Support
import WeightReading

/// A 4-bit target (`--to int4|nvfp4|mxfp4`) in compressed-tensors' layout: the tensors it writes for one quantized
/// `<module>.weight`, and the quantization_config that describes them (what transformers and vLLM load).
public struct PackedTarget: Sendable, Equatable {
    public let scheme: FourBitQuantization.Scheme

    /// The 4-bit scheme of a conversion, or nil for fp8 and bf16.
    public init?(_ options: ConversionOptions) {
        switch options.target {
        case .int4: scheme = .int4(groupSize: options.groupSize)
        case .nvfp4: scheme = .nvfp4
        case .mxfp4: scheme = .mxfp4
        case .fp8, .bf16: return nil
        }
    }

    /// The tensors of one quantized module, by their suffix after `<module>.`.
    public enum Part: String, Sendable, CaseIterable {
        case packed = "weight_packed"
        case scale = "weight_scale"
        case shape = "weight_shape"
        case globalScale = "weight_global_scale"
    }

    /// compressed-tensors' `format` for the scheme.
    public var format: String {
        switch scheme {
        case .int4: return "pack-quantized"
        case .nvfp4: return "nvfp4-pack-quantized"
        case .mxfp4: return "mxfp4-pack-quantized"
        }
    }

    /// `<module>` of `<module>.weight`.
    public static func module(of weightName: String) -> String { String(weightName.dropLast(".weight".count)) }

    /// The output tensors of a [rows, cols] weight of `dtype` (cols a multiple of the group size).
    public func outputs(weightName: String, dtype: Dtype, rows: UInt64, cols: UInt64) -> [(part: Part, spec: TensorSpec)] {
        let module = PackedTarget.module(of: weightName)
        let groups = cols / UInt64(scheme.groupSize)
        func spec(_ part: Part, _ dtype: Dtype, _ shape: [UInt64]) -> (part: Part, spec: TensorSpec) {
            (part, TensorSpec(name: module + "." + part.rawValue, dtype: dtype, shape: shape))
        }
        switch scheme {
        case .int4:
            return [spec(.packed, .I32, [rows, cols / 8]), spec(.scale, dtype, [rows, groups]), spec(.shape, .I64, [2])]
        case .nvfp4:
            return [spec(.packed, .U8, [rows, cols / 2]), spec(.scale, .F8_E4M3, [rows, groups]), spec(.globalScale, .F32, [1])]
        case .mxfp4:
            return [spec(.packed, .U8, [rows, cols / 2]), spec(.scale, .U8, [rows, groups])]
        }
    }

    /// The compressed-tensors version whose config this writes (the fields its 0.20 releases write; loaders
    /// read `version` only to report it).
    public static let compressedTensorsVersion = "0.20.1"

    /// quantization_config for the scheme: one config group targeting every Linear, the modules not quantized
    /// listed by name in `ignore` (sorted, as compressed-tensors lists them).
    public func quantizationConfig(ignore: [String]) -> JSONObject {
        var weights = JSONObject([("dynamic", .bool(false)), ("group_size", .int(scheme.groupSize)), ("num_bits", 4)])
        switch scheme {
        case .int4:
            weights.append("strategy", "group")
            weights.append("symmetric", .bool(true))
            weights.append("type", "int")
        case .nvfp4:
            weights.append("scale_dtype", "torch.float8_e4m3fn")
            weights.append("strategy", "tensor_group")
            weights.append("symmetric", .bool(true))
            weights.append("type", "float")
        case .mxfp4:
            weights.append("scale_dtype", "torch.uint8")
            weights.append("strategy", "group")
            weights.append("symmetric", .bool(true))
            weights.append("type", "float")
        }
        let group = JSONObject([
            ("format", .string(format)), ("input_activations", .null), ("output_activations", .null),
            ("targets", .array(["Linear"])), ("weights", .object(weights)),
        ])
        return JSONObject([
            ("config_groups", .object(JSONObject([("group_0", .object(group))]))),
            ("format", .string(format)), ("global_compression_ratio", .null),
            ("ignore", .array(ignore.sorted().map { .string($0) })), ("kv_cache_scheme", .null),
            ("moe_sparsity_config", .null), ("quant_method", "compressed-tensors"), ("quantization_status", "compressed"),
            ("sparsity_config", .object(JSONObject([]))), ("transform_config", .object(JSONObject([]))),
            ("version", .string(PackedTarget.compressedTensorsVersion)),
        ])
    }
}

/// Projections an inference engine runs as one fused matrix, so NVFP4 gives them one global scale (as
/// llm-compressor does for vLLM): q/k/v of an attention, gate/up of an MLP or expert, and MLA's q_a/kv_a.
public enum FusedProjections {
    public static let groups: [[String]] = [
        ["q_proj", "k_proj", "v_proj"], ["gate_proj", "up_proj"], ["w1", "w3"], ["q_a_proj", "kv_a_proj_with_mqa"],
    ]

    /// The names of the other weights fused with `weightName` (`<prefix>.<projection>.weight`), present or not.
    public static func siblings(of weightName: String) -> [String] {
        let parts = weightName.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 2, parts.last == "weight" else { return [] }
        let projection = String(parts[parts.count - 2])
        guard let group = groups.first(where: { $0.contains(projection) }) else { return [] }
        let prefix = parts.dropLast(2).joined(separator: ".")
        return group.filter { $0 != projection }.map { (prefix.isEmpty ? "" : prefix + ".") + $0 + ".weight" }
    }
}

extension FourBitQuantization.Precision {
    /// The precision compressed-tensors computes in for weights of `dtype`.
    init(_ dtype: Dtype) {
        switch dtype {
        case .F16: self = .f16
        case .F32: self = .f32
        default: self = .bf16
        }
    }
}

extension Converter {
    /// Largest |x| of a weight, 128-row bands on all cores; throws on a value that is not finite.
    static func amax(_ w: StoredWeight, options: ConversionOptions) throws -> Float {
        let bands = (w.rows + bandRows - 1) / bandRows
        let results = parallelMap(bands, threads: options.threads) { band -> Result<Float, any Error> in
            Result {
                let r0 = band * bandRows
                let r1 = min(w.rows, r0 + bandRows)
                let input = try w.rows(r0..<r1)
                defer { input.release() }
                var row = [Float](repeating: 0, count: w.cols)
                var m: Float = 0
                var nonFinite = 0
                for r in 0..<(r1 - r0) {
                    row.withUnsafeMutableBufferPointer { input.decodeRow(r, into: $0.baseAddress!) }
                    m = max(m, moe_block_amax(row, 1, w.cols, w.cols, &nonFinite))
                }
                return nonFinite > 0 ? .nan : m
            }
        }
        var m: Float = 0
        for r in results { m = max(m, try r.get()) }
        if m.isNaN {
            throw ConversionError(.nonFiniteValues, file: w.storage.file.path, tensor: w.name,
                "holds NaN or infinite values, which a 4-bit format cannot encode; fix the weights")
        }
        return m
    }

    /// Writes every output tensor of one weight quantized to a 4-bit target.
    /// `amaxes`: the largest |x| of weights measured so far in this shard (fused weights share them).
    static func writePacked(_ t: TensorInfo, file: Int, fused: [Checkpoint.Located], output: SafetensorsOutput,
                            reader: CheckpointReader, options: ConversionOptions, amaxes: inout [String: Float]) throws {
        let w = try reader.weight(Checkpoint.Located(file: file, tensor: t))
        try writeFourBit(w, name: t.name, valueDtype: t.dtype, siblings: try fused.map { try reader.weight($0) },
                         output: output, options: options, amaxes: &amaxes, loss: nil)
    }

    /// An encoded weight decoded to its BF16 values and quantized to this run's target; returns how much that
    /// changed them.
    static func writeRequantized(_ logical: LogicalWeight, output: SafetensorsOutput, reader: CheckpointReader,
                                 options: ConversionOptions, amaxes: inout [String: Float]) throws -> RequantizationLoss {
        let w = try reader.weight(logical)
        var loss = RequantizationLoss(name: logical.name, from: logical.encoding.name)
        if PackedTarget(options) != nil {
            let siblings = try FusedProjections.siblings(of: logical.name).filter(reader.has).map { try reader.weight($0) }
            try writeFourBit(w, name: logical.name, valueDtype: .BF16, siblings: siblings, output: output, options: options,
                             amaxes: &amaxes, loss: &loss)
        } else {
            var scales: [Float] = []
            try output.fill(logical.name) { region in scales = try quantize(w, options: options, loss: &loss, into: region) }
            try output.fill(logical.name + String(describing: BlockQuantization.scaleSuffix)) { region in
                try scales.withUnsafeBytes { try region.write($0, at: 0) }
            }
        }
        return loss
    }

    /// The tensors of weight `name` (values of `valueDtype`) in this run's 4-bit target; NVFP4's global scale
    /// covers `siblings` too (the weights an engine fuses with it).
    static func writeFourBit(_ w: StoredWeight, name: String, valueDtype: Dtype, siblings: [StoredWeight], output: SafetensorsOutput,
                             options: ConversionOptions, amaxes: inout [String: Float],
                             loss: UnsafeMutablePointer<RequantizationLoss>?) throws {
        let target = PackedTarget(options)!
        var globalScale: Float?
        if target.scheme == .nvfp4 {
            func measured(_ w: StoredWeight) throws -> Float {
                if let m = amaxes[w.name] { return m }
                let m = try amax(w, options: options)
                amaxes[w.name] = m
                return m
            }
            var m = try measured(w)
            for sibling in siblings { m = max(m, try measured(sibling)) }
            globalScale = FourBitQuantization.nvfp4GlobalScale(amax: m, precision: .init(valueDtype))
        }
        let module = PackedTarget.module(of: name) + "."
        var scales: [UInt8] = []
        try output.fill(module + PackedTarget.Part.packed.rawValue) { region in
            scales = try quantizePacked(w, target: target, globalScale: globalScale, options: options, valueDtype: valueDtype,
                                        loss: loss, into: region)
        }
        try output.fill(module + PackedTarget.Part.scale.rawValue) { region in try scales.withUnsafeBytes { try region.write($0, at: 0) } }
        switch target.scheme {
        case .int4:
            let shape = [Int64(w.rows).littleEndian, Int64(w.cols).littleEndian]
            try output.fill(module + PackedTarget.Part.shape.rawValue) { region in try shape.withUnsafeBytes { try region.write($0, at: 0) } }
        case .nvfp4:
            let bits = [(globalScale ?? 1).bitPattern.littleEndian]
            try output.fill(module + PackedTarget.Part.globalScale.rawValue) { region in try bits.withUnsafeBytes { try region.write($0, at: 0) } }
        case .mxfp4:
            break
        }
    }

    /// Quantizes a weight to `target`, 128-row bands on all cores, the packed codes written into `region` by
    /// the core that computed them. Returns the scale tensor's bytes (the weight's dtype for int4, E4M3 codes
    /// for NVFP4, E8M0 exponents for MXFP4).
    /// `valueDtype`: the dtype of the values (a plain weight's own; BF16 for an encoded weight decoded);
    /// `loss`, when given, gets how far what was written lies from those values.
    static func quantizePacked(_ w: StoredWeight, target: PackedTarget, globalScale: Float?, options: ConversionOptions,
                               valueDtype: Dtype? = nil, loss: UnsafeMutablePointer<RequantizationLoss>? = nil,
                               into region: TensorRegion) throws -> [UInt8] {
        let (rows, cols) = (w.rows, w.cols)
        let dtype = valueDtype ?? w.tensor.dtype
        let measuring = loss != nil
        let precision = FourBitQuantization.Precision(dtype)
        let groups = cols / target.scheme.groupSize
        let packedRowBytes: Int
        let scaleBytes: Int
        switch target.scheme {
        case .int4:
            packedRowBytes = cols / 2
            scaleBytes = Int(try dtype.byteSize(elements: 1).get())
        case .nvfp4, .mxfp4:
            packedRowBytes = cols / 2
            scaleBytes = 1
        }
        var scaleOut = [UInt8](repeating: 0, count: rows * groups * scaleBytes)
        let bands = (rows + bandRows - 1) / bandRows
        let results = scaleOut.withUnsafeMutableBufferPointer { scaleBuffer in
            nonisolated(unsafe) let scaleBuffer = scaleBuffer  // each band writes its own rows of scales
            return parallelMap(bands, threads: options.threads) { band -> Result<BandOutcome, any Error> in
                let r0 = band * bandRows
                let r1 = min(rows, r0 + bandRows)
                let input: StoredRows
                do { input = try w.rows(r0..<r1) } catch { return .failure(error) }
                defer { input.release() }
                let packed = UnsafeMutableRawBufferPointer.allocate(byteCount: (r1 - r0) * packedRowBytes, alignment: 4)
                defer { packed.deallocate() }
                var row = [Float](repeating: 0, count: cols)
                var decoded = [Float](repeating: 0, count: measuring ? cols : 0)
                var outcome = BandOutcome()
                var groupScales = [Float](repeating: 0, count: groups)
                for r in 0..<(r1 - r0) {
                    let ok = row.withUnsafeMutableBufferPointer { x -> Bool in
                        input.decodeRow(r, into: x.baseAddress!)
                        let out = packed.baseAddress! + r * packedRowBytes
                        let scalesAt = scaleBuffer.baseAddress! + (r0 + r) * groups * scaleBytes
                        switch target.scheme {
                        case .int4(let groupSize):
                            let ok = groupScales.withUnsafeMutableBufferPointer {
                                FourBitQuantization.int4Row(x.baseAddress!, cols: cols, groupSize: groupSize, precision: precision,
                                                            words: out.assumingMemoryBound(to: UInt32.self), scales: $0.baseAddress!)
                            }
                            for g in 0..<groups { storeScale(groupScales[g], dtype: dtype, at: scalesAt + g * scaleBytes) }
                            return ok
                        case .nvfp4:
                            return FourBitQuantization.nvfp4Row(x.baseAddress!, cols: cols, globalScale: globalScale ?? 1, precision: precision,
                                                                packed: out.assumingMemoryBound(to: UInt8.self), scaleCodes: scalesAt)
                        case .mxfp4:
                            return FourBitQuantization.mxfp4Row(x.baseAddress!, cols: cols, precision: precision,
                                                                packed: out.assumingMemoryBound(to: UInt8.self), exponents: scalesAt)
                        }
                    }
                    if !ok { return .success(BandOutcome(badRow: r0 + r)) }
                    if measuring {
                        let scalesAt = UnsafeRawPointer(scaleBuffer.baseAddress! + (r0 + r) * groups * scaleBytes)
                        decoded.withUnsafeMutableBufferPointer { d in
                            FourBitQuantization.decodeRow(target.scheme, precision: precision, packed: packed.baseAddress! + r * packedRowBytes,
                                                          scales: scalesAt, globalScale: globalScale ?? 1, cols: cols, into: d.baseAddress!)
                        }
                        outcome.compare(row, decoded)
                    }
                }
                return Result { try region.write(UnsafeRawBufferPointer(packed), at: UInt64(r0 * packedRowBytes)); return outcome }
            }
        }
        for r in results {
            let outcome = try r.get()
            if let badRow = outcome.badRow {
                throw ConversionError(.nonFiniteValues, file: w.storage.file.path, tensor: w.name,
                    "row \(badRow) holds NaN or infinite values, which a 4-bit format cannot encode; fix the weights")
            }
            loss?.pointee.add(outcome, values: 0)
        }
        loss?.pointee.values += rows * cols
        return scaleOut
    }

    /// A scale value (exactly representable in `dtype`) stored little-endian as `dtype`.
    static func storeScale(_ s: Float, dtype: Dtype, at p: UnsafeMutablePointer<UInt8>) {
        switch dtype {
        case .F32:
            withUnsafeBytes(of: s.bitPattern.littleEndian) { for i in 0..<4 { p[i] = $0[i] } }
        case .F16:
            withUnsafeBytes(of: Float16(s).bitPattern.littleEndian) { for i in 0..<2 { p[i] = $0[i] } }
        default:
            withUnsafeBytes(of: FloatEncoding.bf16(s).littleEndian) { for i in 0..<2 { p[i] = $0[i] } }
        }
    }
}

/// How much a re-quantization changed a weight: its values as the input's format stands for them (BF16),
/// against what the written format stands for.
public struct RequantizationLoss: Sendable, Equatable {
    public let name: String
    /// The input's encoding (WeightEncoding.name).
    public let from: String
    public var maxAbsError: Float = 0
    public var changed = 0
    public var values = 0
    public var lossless: Bool { changed == 0 }

    public init(name: String, from: String) {
        self.name = name
        self.from = from
    }

    mutating func add(_ band: BandOutcome, values: Int) {
        maxAbsError = max(maxAbsError, band.maxAbsError)
        changed += band.changed
        self.values += values
    }
}

/// One band's part of a quantization: the first row that could not be encoded, and, when measured, how far the
/// encoded values lie from the input's.
struct BandOutcome {
    var badRow: Int?
    var maxAbsError: Float = 0
    var changed = 0

    mutating func compare(_ values: [Float], _ decoded: [Float]) {
        for (a, b) in zip(values, decoded) where a != b {
            changed += 1
            maxAbsError = max(maxAbsError, abs(a - b))
        }
    }
}


/// `--to mxfp4` of a gpt-oss checkpoint: its own layout, as OpenAI ships gpt-oss and transformers and vLLM load it.
/// Only the fused expert stacks `mlp.experts.gate_up_proj` [E, in, out] and `down_proj` are quantized, each to
/// `<name>_blocks` U8 [E, out, in/32, 16] and `<name>_scales` U8 [E, out, in/32] (rows are the outputs, groups of 32
/// run along the input); attention, routers, biases, embeddings and the head stay BF16.
public enum GptOssMXFP4 {
    /// What gpt-oss's config.json lists in `modules_to_not_convert`.
    public static let modulesToNotConvert = ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]
    static let expertStacks = [".mlp.experts.gate_up_proj", ".mlp.experts.down_proj"]

    /// Whether a conversion to `target` of this checkpoint writes gpt-oss's layout.
    public static func applies(_ checkpoint: Checkpoint, target: ConversionTarget) -> Bool {
        target == .mxfp4 && checkpoint.config?.modelType == "gpt_oss"
    }

    /// Why `t` is or is not quantized (nil reason: it is).
    static func rule(_ t: TensorInfo) -> String? {
        guard expertStacks.contains(where: { t.name.hasSuffix($0) }), t.shape.count == 3 else {
            return "gpt-oss keeps it unquantized (modules_to_not_convert)"
        }
        guard [.BF16, .F16, .F32].contains(t.dtype) else { return "\(t.dtype.rawValue) is not quantized" }
        guard t.shape[1] % 32 == 0, t.elementCount > 0 else { return "\(t.shape[1]) inputs are not a multiple of 32" }
        return nil
    }

    /// `<name>_blocks` and `<name>_scales` of an expert stack [E, in, out].
    static func outputs(_ t: TensorInfo) -> [TensorSpec] {
        let (e, i, o) = (t.shape[0], t.shape[1], t.shape[2])
        return [TensorSpec(name: t.name + "_blocks", dtype: .U8, shape: [e, o, i / 32, 16]),
                TensorSpec(name: t.name + "_scales", dtype: .U8, shape: [e, o, i / 32])]
    }

    static func quantizationConfig() -> JSONObject {
        JSONObject([("modules_to_not_convert", .array(modulesToNotConvert.map { .string($0) })), ("quant_method", "mxfp4")])
    }
}

extension Converter {
    /// One gpt-oss expert stack [E, in, out] to its MXFP4 blocks and scales, experts on all cores, each transposed
    /// to [out, in] so that groups of 32 run along the input.
    static func writeGptOssExperts(_ t: TensorInfo, file: Int, output: SafetensorsOutput, reader: CheckpointReader,
                                   options: ConversionOptions) throws {
        let (experts, inputs, outputs) = (Int(t.shape[0]), Int(t.shape[1]), Int(t.shape[2]))
        let groups = inputs / 32
        var scales = [UInt8](repeating: 0, count: experts * outputs * groups)
        try output.fill(t.name + "_blocks") { region in
            let results = scales.withUnsafeMutableBufferPointer { scaleBuffer in
                nonisolated(unsafe) let scaleBuffer = scaleBuffer  // each expert writes its own rows
                return parallelMap(experts, threads: options.threads) { e -> Result<Int?, any Error> in
                    Result {
                        let w = try reader.weight(Checkpoint.Located(file: file, tensor: t), expert: e)
                        let input = try w.rows()
                        var stacked = [Float](repeating: 0, count: inputs * outputs)  // [in][out]
                        stacked.withUnsafeMutableBufferPointer { s in
                            for r in 0..<inputs { input.decodeRow(r, into: s.baseAddress! + r * outputs) }
                        }
                        input.release()
                        var row = [Float](repeating: 0, count: inputs)
                        var blocks = [UInt8](repeating: 0, count: outputs * inputs / 2)
                        for o in 0..<outputs {
                            for i in 0..<inputs { row[i] = stacked[i * outputs + o] }
                            let ok = row.withUnsafeBufferPointer { x in
                                blocks.withUnsafeMutableBufferPointer { b in
                                    FourBitQuantization.gptOssMXFP4Row(x.baseAddress!, cols: inputs, packed: b.baseAddress! + o * inputs / 2,
                                                                       exponents: scaleBuffer.baseAddress! + (e * outputs + o) * groups)
                                }
                            }
                            if !ok { return o }
                        }
                        try blocks.withUnsafeBytes { try region.write($0, at: UInt64(e * outputs * inputs / 2)) }
                        return nil
                    }
                }
            }
            for (e, r) in results.enumerated() {
                if let o = try r.get() {
                    throw ConversionError(.nonFiniteValues, file: reader.checkpoint.files[file].path, tensor: t.name,
                        "expert \(e), output \(o) holds NaN or infinite values, which MXFP4 cannot encode; fix the weights")
                }
            }
        }
        try output.fill(t.name + "_scales") { region in try scales.withUnsafeBytes { try region.write($0, at: 0) } }
    }
}
