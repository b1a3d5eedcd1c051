import CKernels
import Checkpoint
import Dispatch
import NumberFormats
import SafetensorsFormat
import StrictJSON
import WeightReading

#if canImport(Glibc)
import Glibc
import Support
#endif

/// Why a conversion was refused or failed: one case per failure, each with a stable id and a message naming
/// the file and tensor and what to do. Nothing under OUT is left under a final name half-written.
public struct ConversionError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// OUT cannot be written as asked (it is, holds or lies inside the input, or is not a directory).
        case outputRefused = "output_refused"
        /// Another run holds OUT, or OUT holds another conversion.
        case outputClaimed = "output_claimed"
        /// A weight cannot be read as its format says (WeightReadError; `id` is its own).
        case weightUnreadable = "weight_unreadable"
        /// A quantization method moetool does not convert.
        case quantizationUnsupported = "quantization_unsupported"
        /// Weights kept as they are would contradict the config.json written beside them.
        case configContradictsWeights = "config_contradicts_weights"
        /// Values that are NaN or infinite, in the input or after dequantizing.
        case nonFiniteValues = "non_finite_values"
        /// A block scale that cannot be right (not finite, or erasing its codes).
        case scaleInvalid = "scale_invalid"
        /// Reading or writing a file failed.
        case ioFailed = "io_failed"
    }

    public let kind: Kind
    public let file: String?
    public let tensor: String?
    public let message: String
    /// The stable id: the kind's, or, for an unreadable weight, the reader's own (e.g. scale_grid_mismatch).
    public let id: String

    public init(_ kind: Kind, file: String? = nil, tensor: String? = nil, _ message: String) {
        self.kind = kind
        self.file = file
        self.tensor = tensor
        self.message = message
        id = kind.rawValue
    }

    public init(_ error: WeightReadError) {
        kind = .weightUnreadable
        file = error.file
        tensor = error.tensor.isEmpty ? nil : error.tensor
        message = error.message + (error.hint.isEmpty ? "" : "; " + error.hint)
        id = error.id
    }

    public var description: String {
        var s = ""
        if let file { s += escapeForDisplay(file) + ": " }
        if let tensor { s += "tensor \"\(escapeForDisplay(tensor))\": " }
        return s + message
    }
}

public struct ConversionOptions: Sendable {
    public var target: ConversionTarget
    public var scaleFormat: BlockQuantization.ScaleFormat = .float32
    /// Columns per int4 scale (`--to int4`).
    public var groupSize = 128
    public var selection = TensorSelection()
    public var allowNonFinite = false
    /// Threads for the block math (0: all cores).
    public var threads = 0

    public init(target: ConversionTarget) {
        self.target = target
    }
}

/// One output tensor and where its bytes come from.
public struct PlannedTensor: Sendable {
    public enum Source: Sendable {
        case copy(file: Int, tensor: TensorInfo)
        case codes(file: Int, weight: TensorInfo)
        case scales(file: Int, weight: TensorInfo)
        /// An encoded weight, decoded through the checkpoint's reader (its encoding says how); a fused expert
        /// stack (`experts`) is written as transformers holds it, each expert's rows transposed.
        case decoded(LogicalWeight, experts: Int?)
        /// One tensor of a weight quantized to a 4-bit target; `fused`: the weights sharing its NVFP4 global scale.
        case packed(file: Int, weight: TensorInfo, fused: [Checkpoint.Located])
        /// The blocks or scales of a gpt-oss expert stack quantized to its MXFP4 layout.
        case gptOssExperts(file: Int, weight: TensorInfo)
        /// One tensor of an encoded weight decoded (as BF16 values) and quantized to this run's target.
        case requantized(LogicalWeight)
    }

    public let spec: TensorSpec
    public let source: Source
}

/// What a conversion will do: per input tensor an action, per output shard its tensors.
public struct ConversionPlan: Sendable {
    public struct Decision: Sendable {
        public let name: String
        public let dtype: Dtype
        public let shape: [UInt64]
        public let action: TensorAction
        /// The input shard it is in (the position in `Checkpoint.files` and in `shards`).
        public let file: Int
    }

    public struct Shard: Sendable {
        public let name: String
        public let tensors: [PlannedTensor]
        public var outputBytes: UInt64 {
            tensors.reduce(0) { total, t in
                total + (try! t.spec.dtype.byteSize(elements: elementCount(t.spec.shape) ?? 0).get())
            }
        }
    }

    public let decisions: [Decision]
    public let shards: [Shard]

    public func count(_ kind: TensorAction.Kind) -> Int { decisions.filter { $0.action.kind == kind }.count }

    /// The same, over the tensors of the shards at `positions` only (what one `--shards i/n` worker does).
    public func count(_ kind: TensorAction.Kind, inShards positions: Set<Int>) -> Int {
        decisions.filter { $0.action.kind == kind && positions.contains($0.file) }.count
    }

    /// Why this conversion would change no tensor (the output would be a copy of the input), or nil.
    public func nothingToConvert(target: ConversionTarget) -> String? {
        guard count(.quantize) == 0 && count(.dequantize) == 0 else { return nil }
        switch target {
        case .fp8:
            let fp8 = decisions.filter { $0.dtype.isFP8 }.count
            return fp8 > 0
                ? "nothing to convert: its \(fp8) FP8 weight(s) are already FP8 and nothing else is eligible (BF16/F16/F32 2-D projections)"
                : "nothing to convert: no BF16, F16 or F32 2-D attention or MLP projection to quantize (see --dry-run for why each tensor stays)"
        case .int4, .nvfp4, .mxfp4:
            return "nothing to convert: no BF16, F16 or F32 2-D attention or MLP projection whose columns the group size divides (see --dry-run for why each tensor stays)"
        case .bf16:
            let floats = Set(decisions.map(\.dtype).filter { $0 == .F32 || $0 == .F16 })
            let hint = floats.isEmpty ? "" : "; --to bf16 dequantizes FP8 block-scaled weights, it does not cast \(floats.map(\.rawValue).sorted().joined(separator: "/")) weights (quantize them with --to fp8, or cast them with torch)"
            return "nothing to convert: no FP8 weight with block scales\(hint)"
        }
    }

    /// Decides every tensor's fate; throws when the input cannot be converted this way.
    public init(checkpoint: Checkpoint, options: ConversionOptions) throws(ConversionError) {
        if let q = checkpoint.config?.quantizationConfig {
            let method = q["quant_method"]?.stringValue ?? "unknown"
            guard ["fp8", "compressed-tensors", "mxfp4", "modelopt"].contains(method) else {
                throw ConversionError(.quantizationUnsupported, file: checkpoint.configPath,
                    "quantization_config.quant_method is \"\(method)\"; moetool converts FP8 block, compressed-tensors, ModelOpt NVFP4 and gpt-oss MXFP4 checkpoints")
            }
        }
        let gptOss = GptOssMXFP4.applies(checkpoint, target: options.target)
        let packedTarget = gptOss ? nil : PackedTarget(options)
        if gptOss, let q = checkpoint.config?.quantizationConfig {
            throw ConversionError(.quantizationUnsupported, file: checkpoint.configPath,
                "is already quantized (quantization_config.quant_method \"\(q["quant_method"]?.stringValue ?? "unknown")\"); --to \(options.target.rawValue) quantizes BF16/F16/F32 gpt-oss checkpoints: convert --to bf16 first, then --to \(options.target.rawValue)")
        }
        // A conversion to BF16 decodes every encoded weight; one to another format decodes those in a different
        // format (FP8 blocks stay as they are for --to fp8) and quantizes their values again. Their bookkeeping
        // tensors fold into them.
        var encoded = EncodedWeights()
        let counting = ParameterCounting(config: checkpoint.config)
        if options.target == .bf16 || (options.target.quantizes && !gptOss) {
            do throws(WeightReadError) {
                encoded = try EncodedWeights(try CheckpointReader(checkpoint), keepingFP8Blocks: options.target == .fp8)
            } catch {
                throw ConversionError(error)
            }
        }
        if options.target.quantizes, let packed = checkpoint.allTensors.first(where: {
            ($0.tensor.name.hasSuffix("_blocks") && $0.tensor.dtype == .U8) || (gptOss && $0.tensor.name.hasSuffix("_packed"))
        }) {
            throw ConversionError(.quantizationUnsupported, file: checkpoint.files[packed.file].path, tensor: packed.tensor.name,
                "is a packed 4-bit expert stack (gpt-oss's layout); --to \(options.target.rawValue) does not re-quantize those: convert --to bf16 first, then --to \(options.target.rawValue) (a conversion between quantized formats goes through their exact values)")
        }
        var decisions: [Decision] = []
        var shards: [Shard] = []
        for (fi, file) in checkpoint.files.enumerated() {
            var planned: [PlannedTensor] = []
            for t in file.tensors {
                let action: TensorAction
                if let entry = encoded.byCodes[t.name] {
                    if options.target == .bf16 {
                        action = TensorAction(kind: .dequantize, reason: "\(entry.logical.encoding.name) weight, decoded")
                    } else if let g = packedTarget?.scheme.groupSize, entry.outputShape[1] % UInt64(g) != 0 {
                        action = TensorAction(kind: .dequantize, reason: "\(entry.logical.encoding.name) weight, decoded to BF16: \(entry.outputShape[1]) columns are not a multiple of the group size \(g)")
                    } else {
                        action = TensorAction(kind: .quantize, reason: "\(entry.logical.encoding.name) weight, decoded and quantized again (its loss is reported)")
                    }
                } else if let owner = encoded.foldedInto[t.name] {
                    action = TensorAction(kind: .drop, reason: "folded into \(owner)")
                } else if options.target != .fp8, options.target != .bf16, !encoded.byCodes.isEmpty, counting.kind(t) == .overhead {
                    action = TensorAction(kind: .drop, reason: "quantization bookkeeping of the input's format")
                } else if gptOss {
                    action = GptOssMXFP4.rule(t).map { TensorAction(kind: .passThrough, reason: $0) }
                        ?? TensorAction(kind: .quantize, reason: "gpt-oss expert stack, in its own MXFP4 layout")
                } else if options.target == .bf16, counting.kind(t) == .overhead {
                    action = TensorAction(kind: .drop, reason: "quantization bookkeeping a BF16 checkpoint has no use for")
                } else {
                    action = options.selection.action(for: t, target: options.target, hasScale: checkpoint.blockScale(of: t) != nil,
                                                      isScale: Checkpoint.isScaleName(t.name), groupSize: packedTarget?.scheme.groupSize)
                }
                decisions.append(Decision(name: t.name, dtype: t.dtype, shape: t.shape, action: action, file: fi))
                switch action.kind {
                case .passThrough:
                    planned.append(PlannedTensor(spec: TensorSpec(name: t.name, dtype: t.dtype, shape: t.shape),
                                                 source: .copy(file: fi, tensor: t)))
                case .drop:
                    break
                case .quantize where encoded.byCodes[t.name] != nil:
                    let entry = encoded.byCodes[t.name]!
                    let (rows, cols) = (entry.outputShape[0], entry.outputShape[1])
                    if let packedTarget {
                        for (_, spec) in packedTarget.outputs(weightName: entry.logical.name, dtype: .BF16, rows: rows, cols: cols) {
                            planned.append(PlannedTensor(spec: spec, source: .requantized(entry.logical)))
                        }
                    } else {
                        planned.append(PlannedTensor(spec: TensorSpec(name: entry.logical.name, dtype: .F8_E4M3, shape: [rows, cols]),
                                                     source: .requantized(entry.logical)))
                        planned.append(PlannedTensor(
                            spec: TensorSpec(name: entry.logical.name + String(describing: BlockQuantization.scaleSuffix), dtype: .F32,
                                             shape: BlockQuantization.scaleShape(rows: rows, cols: cols)),
                            source: .requantized(entry.logical)))
                    }
                case .quantize where gptOss:
                    for spec in GptOssMXFP4.outputs(t) { planned.append(PlannedTensor(spec: spec, source: .gptOssExperts(file: fi, weight: t))) }
                case .quantize where packedTarget != nil:
                    for (_, spec) in packedTarget!.outputs(weightName: t.name, dtype: t.dtype, rows: t.shape[0], cols: t.shape[1]) {
                        planned.append(PlannedTensor(spec: spec, source: .packed(file: fi, weight: t, fused: [])))
                    }
                case .quantize:
                    let grid = BlockQuantization.scaleShape(rows: t.shape[0], cols: t.shape[1])
                    planned.append(PlannedTensor(spec: TensorSpec(name: t.name, dtype: .F8_E4M3, shape: t.shape),
                                                 source: .codes(file: fi, weight: t)))
                    planned.append(PlannedTensor(
                        spec: TensorSpec(name: t.name + String(describing: BlockQuantization.scaleSuffix), dtype: .F32, shape: grid),
                        source: .scales(file: fi, weight: t)))
                case .dequantize:
                    guard let entry = encoded.byCodes[t.name] else {
                        throw ConversionError(.weightUnreadable, file: file.path, tensor: t.name, "FP8 weight without a readable block scale")
                    }
                    planned.append(PlannedTensor(spec: TensorSpec(name: entry.logical.name, dtype: .BF16, shape: entry.outputShape),
                                                 source: .decoded(entry.logical, experts: entry.experts)))
                }
            }
            shards.append(Shard(name: checkpoint.fileNames[fi], tensors: planned))
        }
        self.decisions = decisions
        self.shards = packedTarget?.scheme == .nvfp4 ? ConversionPlan.withFusedSiblings(shards, checkpoint: checkpoint, decisions: decisions) : shards
        try ConversionPlan.checkKeptFP8(checkpoint: checkpoint, options: options, decisions: decisions)
    }

    /// NVFP4 weights an engine fuses share one global scale: each packed tensor learns the other quantized
    /// weights of its group (wherever they are stored).
    static func withFusedSiblings(_ shards: [Shard], checkpoint: Checkpoint, decisions: [Decision]) -> [Shard] {
        let quantized = Set(decisions.filter { $0.action.kind == .quantize }.map(\.name))
        return shards.map { shard in
            Shard(name: shard.name, tensors: shard.tensors.map { t in
                guard case .packed(let fi, let w, _) = t.source else { return t }
                let fused = FusedProjections.siblings(of: w.name).filter { quantized.contains($0) }.compactMap { checkpoint.locate($0) }
                return PlannedTensor(spec: t.spec, source: .packed(file: fi, weight: w, fused: fused))
            })
        }
    }

    /// FP8 weights kept as they are must be in the format the written config.json declares (128x128 blocks,
    /// this run's scale format): a config that contradicts the weights would be loaded wrongly.
    static func checkKeptFP8(checkpoint: Checkpoint, options: ConversionOptions, decisions: [Decision]) throws(ConversionError) {
        guard options.target == .fp8,
              decisions.contains(where: { $0.action.kind == .quantize }),
              let kept = decisions.first(where: { $0.dtype.isFP8 && $0.action.kind == .passThrough && $0.name.hasSuffix(".weight") })
        else { return }
        if let block = checkpoint.declaredBlock, block != .deepSeek {
            throw ConversionError(.configContradictsWeights, file: checkpoint.configPath, tensor: kept.name,
                "is kept in FP8 with \(block) blocks (quantization_config.weight_block_size), but this run writes 128x128 blocks and one config.json cannot say both; convert the checkpoint --to bf16 first, then --to fp8")
        }
        let declared = checkpoint.config?.quantizationConfig?["scale_fmt"]?.stringValue == "ue8m0" ? BlockQuantization.ScaleFormat.ue8m0 : .float32
        if declared != options.scaleFormat {
            throw ConversionError(.configContradictsWeights, file: checkpoint.configPath, tensor: kept.name,
                "is kept in FP8 with \(declared.rawValue) scales, but this run writes \(options.scaleFormat.rawValue) scales and one config.json cannot say both; use --scale-format \(declared.rawValue), or convert --to bf16 first")
        }
    }
}

/// Converts checkpoints between BF16/F16/F32 and FP8 block format, one output shard
/// per input shard, each written atomically and streamed tensor by tensor.
public enum Converter {
    /// Rows quantized or dequantized per work item: one block row.
    static let bandRows = BlockQuantization.blockSize
    /// Bytes of a tensor copied per write (a compressed shard's chunks are followed instead).
    static let copyPieceBytes: UInt64 = 8 << 20

    /// Writes one output shard. Every tensor is computed straight into the output file's pages
    /// (quantized weights in 128-row bands on all cores); a quantized weight's codes are computed
    /// when its scales (which come first in the file) are, in one pass over the input.
    /// Returns the XXH64 of the file, as "xxh64:" and 16 hex digits.
    @discardableResult
    /// `losses`: told how much each re-quantized weight (one decoded from another format) changed.
    public static func writeShard(_ shard: ConversionPlan.Shard, to path: String, reader: CheckpointReader,
                                  options: ConversionOptions, progress: (@Sendable (UInt64) -> Void)? = nil,
                                  losses: ((RequantizationLoss) -> Void)? = nil) throws -> String {
        let checkpoint = reader.checkpoint
        // The checksum is taken as the bytes are written, in file order (the codes of quantized weights,
        // computed ahead of their place, are read back at the end).
        nonisolated(unsafe) var hasher = moe_xxh64_state()
        moe_xxh64_reset(&hasher, 0)
        let output = try SafetensorsOutput(path: path, tensors: shard.tensors.map(\.spec), metadata: [(key: "format", value: "pt")],
                                           sources: checkpoint.files.map(\.mapping),
                                           observe: { moe_xxh64_update(&hasher, $0.baseAddress, $0.count) })
        var amaxes: [String: Float] = [:]  // NVFP4: each weight measured once, fused ones shared
        var byName: [String: PlannedTensor] = [:]
        for t in shard.tensors { byName[t.spec.name] = t }
        do {
            for info in output.layout.tensors where !output.isFilled(info.name) {
                switch byName[info.name]!.source {
                case .copy(let fi, let t):
                    let storage = reader.storages[fi]
                    try output.fill(info.name) { region in
                        for piece in storage.pieces(t, about: copyPieceBytes) {
                            let bytes = try storage.bytes(t, piece)
                            try bytes.withUnsafeBytes { try region.write($0, at: piece.lowerBound) }
                            bytes.release()
                            progress?(UInt64(piece.count))
                        }
                    }
                case .codes(let fi, let w), .scales(let fi, let w):
                    let codesName = w.name
                    let scalesName = w.name + String(describing: BlockQuantization.scaleSuffix)
                    var scales: [Float] = []
                    try output.fill(codesName) { region in
                        scales = try quantize(try reader.weight(Checkpoint.Located(file: fi, tensor: w)), options: options, into: region)
                    }
                    try output.fill(scalesName) { region in
                        try scales.withUnsafeBytes { try region.write($0, at: 0) }
                    }
                    progress?(w.byteCount)
                case .requantized(let logical):
                    losses?(try writeRequantized(logical, output: output, reader: reader, options: options, amaxes: &amaxes))
                    progress?(logical.codes.tensor.byteCount)
                case .gptOssExperts(let fi, let w):
                    try writeGptOssExperts(w, file: fi, output: output, reader: reader, options: options)
                    progress?(w.byteCount)
                case .packed(let fi, let w, let fused):
                    try writePacked(w, file: fi, fused: fused, output: output, reader: reader, options: options, amaxes: &amaxes)
                    progress?(w.byteCount)
                case .decoded(let logical, nil):
                    try output.fill(info.name) { region in
                        try dequantize(try reader.weight(logical), options: options, into: region)
                    }
                    progress?(logical.codes.tensor.byteCount)
                case .decoded(let logical, let experts?):
                    try output.fill(info.name) { region in
                        // Experts on all cores, each written at its place by the core that decoded it.
                        let perExpert = info.byteCount / UInt64(experts)
                        let results = parallelMap(experts, threads: options.threads) { e -> Result<Void, any Error> in
                            Result {
                                try dequantizeTransposed(try reader.weight(logical, expert: e), at: UInt64(e) * perExpert,
                                                         options: options, into: region)
                            }
                        }
                        for r in results { try r.get() }
                    }
                    progress?(logical.codes.tensor.byteCount)
                }
            }
            try output.commit()
            return xxh64Text(moe_xxh64_digest(&hasher))
        } catch {
            output.abort()
            throw error
        }
    }

    static func xxh64Text(_ v: UInt64) -> String {
        let hex = String(v, radix: 16)
        return "xxh64:" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The same digest of a whole file, read through its map.
    static func xxh64(_ file: MappedFile) -> String {
        var state = moe_xxh64_state()
        moe_xxh64_reset(&state, 0)
        file.slices { slice, _ in moe_xxh64_update(&state, slice.baseAddress, slice.count) }
        return xxh64Text(moe_xxh64_digest(&state))
    }

    /// Block-quantizes a BF16/F16/F32 weight 128 rows at a time on all cores; each band's FP8 codes
    /// are written into `region` by the core that computed them, while still in its cache. Returns
    /// the block scales. BF16 and aligned F32 bands are read in place; F16 bands are decoded first.
    /// `loss`, when given, gets how far the FP8 values written (as BF16, the way they are dequantized) lie from
    /// the weight's values (an encoded weight decoded, always through the decoding path).
    static func quantize(_ w: StoredWeight, options: ConversionOptions, loss: UnsafeMutablePointer<RequantizationLoss>? = nil,
                         into region: TensorRegion) throws -> [Float] {
        let rows = w.rows
        let cols = w.cols
        let dtype = w.tensor.dtype
        let gridCols = (cols + bandRows - 1) / bandRows
        let format = options.scaleFormat
        let measuring = loss != nil
        var scales = [Float](repeating: 0, count: ((rows + bandRows - 1) / bandRows) * gridCols)
        let results = scales.withUnsafeMutableBufferPointer { scalesOut in
            nonisolated(unsafe) let scalesOut = scalesOut  // each band writes its own row of scales
            return parallelMap((rows + bandRows - 1) / bandRows, threads: options.threads) { band -> Result<(Int, BandOutcome), any Error> in
                let r0 = band * bandRows
                let r1 = min(rows, r0 + bandRows)
                let n = (r1 - r0) * cols
                let codes = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: n)
                defer { codes.deallocate() }
                let scales = UnsafeMutableBufferPointer(rebasing: scalesOut[(band * gridCols)..<((band + 1) * gridCols)])
                let input: StoredRows
                do { input = try w.rows(r0..<r1) } catch { return .failure(error) }
                defer { input.release() }  // done with this band of the input: let its pages go
                var outcome = BandOutcome()
                let bad = input.withStoredBytes { stored -> Int in
                    let raw = stored.baseAddress!
                    if dtype == .BF16 && !measuring {
                        return BlockQuantization.quantize(.bf16(raw), rows: r1 - r0, cols: cols, format: format, codes: codes, scales: scales)
                    } else if dtype == .F32, !measuring, Int(bitPattern: raw) % MemoryLayout<Float>.alignment == 0 {
                        return BlockQuantization.quantize(.f32(raw.assumingMemoryBound(to: Float.self)), rows: r1 - r0, cols: cols,
                                                          format: format, codes: codes, scales: scales)
                    }
                    let values = [Float](unsafeUninitializedCapacity: n) { out, count in
                        for r in 0..<(r1 - r0) { input.decodeRow(r, into: out.baseAddress! + r * cols) }
                        count = n
                    }
                    let bad = values.withUnsafeBufferPointer {
                        BlockQuantization.quantize($0, rows: r1 - r0, cols: cols, format: format, codes: codes, scales: scales)
                    }
                    if measuring {
                        // What the FP8 code times its block scale gives, rounded to BF16 as it is dequantized.
                        let table = FloatDecoding.e4m3Table
                        let decoded = (0..<n).map { i in
                            FloatDecoding.bf16(FloatEncoding.bf16(table[Int(codes[i])] * scales[(i % cols) / bandRows]))
                        }
                        outcome.compare(values, decoded)
                    }
                    return bad
                }
                return Result { try region.write(UnsafeRawBufferPointer(codes), at: UInt64(r0 * cols)); return (bad, outcome) }
            }
        }
        var nonFinite = 0
        for r in results {
            let (bad, outcome) = try r.get()
            nonFinite += bad
            loss?.pointee.add(outcome, values: 0)
        }
        loss?.pointee.values += rows * cols
        if nonFinite > 0 && !options.allowNonFinite {
            throw ConversionError(.nonFiniteValues, file: w.storage.file.path, tensor: w.tensor.name,
                "\(nonFinite) NaN or infinite values; fix the weights, or pass --allow-nonfinite to turn their blocks into NaN")
        }
        return scales
    }

    /// Dequantizes an encoded weight into BF16 through its decoder, 128 rows at a time on all cores, each
    /// band written into `region` by the core that computed it. For FP8 block weights it refuses, unless
    /// `allowNonFinite`, a scale that is not finite, a zero scale over non-zero codes, and any value that
    /// comes out NaN or infinite (a NaN code, or a scale too large for BF16), naming the block.
    static func dequantize(_ w: StoredWeight, options: ConversionOptions, into region: TensorRegion) throws {
        let rows = w.rows
        let cols = w.cols
        let path = w.storage.file.path
        let fp8 = w.layout as? FP8BlockLayout
        if let fp8, !options.allowNonFinite {
            try checkScales(fp8, of: w, path: path)
        }
        let results = parallelMap((rows + bandRows - 1) / bandRows, threads: options.threads) { band -> Result<Int, any Error> in
            let r0 = band * bandRows
            let r1 = min(rows, r0 + bandRows)
            let n = (r1 - r0) * cols
            let out = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: n)
            defer { out.deallocate() }
            let input: StoredRows
            do { input = try w.rows(r0..<r1) } catch { return .failure(error) }
            input.decodeRowsBF16(0..<(r1 - r0), into: out.baseAddress!)
            input.release()
            let bad = moe_count_nonfinite_bf16(out.baseAddress!, n)
            if bad > 0 && !options.allowNonFinite { return .success(r0) }
            return Result { try region.write(UnsafeRawBufferPointer(out), at: UInt64(r0 * cols * 2)); return -1 }
        }
        for r in results {
            let firstBadBand = try r.get()
            guard firstBadBand >= 0 else { continue }
            let band = firstBadBand..<min(rows, firstBadBand + bandRows)
            let where_ = try fp8.map { try firstNonFinite(w.rows(band), firstRow: firstBadBand, layout: $0) } ?? "in rows \(band)"
            throw ConversionError(.nonFiniteValues, file: path, tensor: w.tensor.name,
                "dequantizes to NaN or infinity \(where_); fix the weights or their scales, or pass --allow-nonfinite to write them as they come out")
        }
    }

    /// One expert of a fused stack into BF16, its [rows, cols] written as [cols, rows] from byte `at` of `region`
    /// (transformers holds gpt-oss's experts as [experts, in, out]).
    static func dequantizeTransposed(_ w: StoredWeight, at: UInt64, options: ConversionOptions, into region: TensorRegion) throws {
        let (rows, cols) = (w.rows, w.cols)
        let input = try w.rows()
        var values = [UInt16](repeating: 0, count: rows * cols)
        values.withUnsafeMutableBufferPointer { input.decodeRowsBF16(0..<rows, into: $0.baseAddress!) }
        input.release()
        if !options.allowNonFinite, moe_count_nonfinite_bf16(values, values.count) > 0 {
            let bad = values.firstIndex { $0 & 0x7F80 == 0x7F80 }!
            throw ConversionError(.nonFiniteValues, file: w.storage.file.path, tensor: w.name,
                "dequantizes to NaN or infinity at row \(bad / cols), column \(bad % cols); fix the weights or their scales, or pass --allow-nonfinite to write them as they come out")
        }
        let transposed = [UInt16](unsafeUninitializedCapacity: rows * cols) { out, count in
            moe_transpose_u16(values, rows, cols, out.baseAddress!)
            count = rows * cols
        }
        try transposed.withUnsafeBytes { try region.write($0, at: at) }
    }

    /// Scales that cannot be right: not finite, or so small (zero included) that even the largest code
    /// dequantizes to 0 in BF16, over codes that are not all zero (they would be erased).
    static func checkScales(_ layout: FP8BlockLayout, of w: StoredWeight, path: String) throws {
        let block = layout.block
        let largestCode = layout.table.filter(\.isFinite).map(abs).max() ?? 0
        // Below half of BF16's smallest subnormal (2^-133), a product rounds to zero.
        let erases = { (scale: Float) in abs(scale) * largestCode < 0x1p-134 }
        for (i, scale) in layout.scales.enumerated() where !scale.isFinite || erases(scale) {
            let (br, bc) = (i / layout.gridCols, i % layout.gridCols)
            let blockRows = (br * block.rows)..<min(w.rows, (br + 1) * block.rows)
            let blockCols = (bc * block.cols)..<min(w.cols, (bc + 1) * block.cols)
            let at = "block (\(br), \(bc)), rows \(blockRows.lowerBound)..<\(blockRows.upperBound), columns \(blockCols.lowerBound)..<\(blockCols.upperBound)"
            if !scale.isFinite {
                throw ConversionError(.scaleInvalid, file: path, tensor: w.tensor.name,
                    "scale of \(at) is \(scale); fix the scales, or pass --allow-nonfinite to write what they give")
            }
            // A zero scale is harmless over an all-zero block (some exporters write one there).
            let nonZero = try w.rows(blockRows).withStoredBytes { codes in
                (0..<blockRows.count).contains { r in blockCols.contains { c in codes[r * w.cols + c] & 0x7F != 0 } }
            }
            if nonZero {
                throw ConversionError(.scaleInvalid, file: path, tensor: w.tensor.name,
                    "scale of \(at) is \(scale), so small that every code dequantizes to 0, which erases its non-zero codes; fix the scales, or pass --allow-nonfinite to write zeros")
            }
        }
    }

    /// Where the first NaN or infinity of these rows (the weight's rows from `firstRow`) comes from, for the message.
    static func firstNonFinite(_ band: StoredRows, firstRow: Int, layout: FP8BlockLayout) -> String {
        band.withStoredBytes { firstNonFinite(codes: $0, rows: band.rows, cols: band.cols, firstRow: firstRow, layout: layout) }
    }

    static func firstNonFinite(codes: UnsafeRawBufferPointer, rows: Int, cols: Int, firstRow: Int, layout: FP8BlockLayout) -> String {
        let block = layout.block
        for i in 0..<rows {
            let r = firstRow + i
            for c in 0..<cols {
                let code = codes[i * cols + c]
                let scale = layout.scale(row: r, column: c)
                let value = layout.table[Int(code)] * scale
                if !value.isFinite || !FloatDecoding.bf16(FloatEncoding.bf16(value)).isFinite {
                    let cause = layout.table[Int(code)].isNaN ? "its code 0x\(String(code, radix: 16)) is NaN"
                        : "code \(layout.table[Int(code)]) times scale \(scale) is beyond BF16's range"
                    return "at row \(r), column \(c) (block (\(r / block.rows), \(c / block.cols))): \(cause)"
                }
            }
        }
        return "in rows \(firstRow)..<\(firstRow + rows)"
    }
}
