import CKernels
import Checkpoint
import Dispatch
import NumberFormats
import SafetensorsFormat
import StrictJSON

#if canImport(Glibc)
import Glibc
import Support
#endif

/// Why a conversion was refused or failed. Nothing under OUT is left under a final name half-written.
public struct ConversionError: Error, Sendable, CustomStringConvertible {
    public let file: String?
    public let tensor: String?
    public let message: String

    public init(file: String? = nil, tensor: String? = nil, _ message: String) {
        self.file = file
        self.tensor = tensor
        self.message = message
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
        case dequantized(weightFile: Int, weight: TensorInfo, scaleFile: Int, scale: TensorInfo, block: BlockShape)
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
            guard method == "fp8" || method == "compressed-tensors" else {
                throw ConversionError(file: checkpoint.configPath,
                    "quantization_config.quant_method is \"\(method)\"; moetool converts FP8 block checkpoints only")
            }
        }
        var decisions: [Decision] = []
        var shards: [Shard] = []
        for (fi, file) in checkpoint.files.enumerated() {
            var planned: [PlannedTensor] = []
            for t in file.tensors {
                // Only a conversion to BF16 reads FP8 weights; their scales are recognised (and checked) then.
                var encoding = WeightEncoding.plain
                if options.target == .bf16 {
                    do throws(WeightEncodingError) {
                        encoding = try checkpoint.encoding(of: t, inFile: fi)
                    } catch {
                        throw ConversionError(file: error.file, tensor: error.tensor, error.message)
                    }
                }
                let hasScale: Bool
                if case .fp8Block = encoding { hasScale = true } else { hasScale = checkpoint.blockScale(of: t) != nil }
                let action = options.selection.action(
                    for: t, target: options.target, hasScale: hasScale, isScale: Checkpoint.isScaleName(t.name))
                decisions.append(Decision(name: t.name, dtype: t.dtype, shape: t.shape, action: action, file: fi))
                switch action.kind {
                case .passThrough:
                    planned.append(PlannedTensor(spec: TensorSpec(name: t.name, dtype: t.dtype, shape: t.shape),
                                                 source: .copy(file: fi, tensor: t)))
                case .drop:
                    break
                case .quantize:
                    let grid = BlockQuantization.scaleShape(rows: t.shape[0], cols: t.shape[1])
                    planned.append(PlannedTensor(spec: TensorSpec(name: t.name, dtype: .F8_E4M3, shape: t.shape),
                                                 source: .codes(file: fi, weight: t)))
                    planned.append(PlannedTensor(
                        spec: TensorSpec(name: t.name + String(describing: BlockQuantization.scaleSuffix), dtype: .F32, shape: grid),
                        source: .scales(file: fi, weight: t)))
                case .dequantize:
                    guard case .fp8Block(let s, let block) = encoding else {
                        throw ConversionError(file: file.path, tensor: t.name, "FP8 weight without a readable block scale")
                    }
                    planned.append(PlannedTensor(spec: TensorSpec(name: t.name, dtype: .BF16, shape: t.shape),
                                                 source: .dequantized(weightFile: fi, weight: t, scaleFile: s.file, scale: s.tensor, block: block)))
                }
            }
            shards.append(Shard(name: checkpoint.fileNames[fi], tensors: planned))
        }
        self.decisions = decisions
        self.shards = shards
        try ConversionPlan.checkKeptFP8(checkpoint: checkpoint, options: options, decisions: decisions)
    }

    /// FP8 weights kept as they are must be in the format the written config.json declares (128x128 blocks,
    /// this run's scale format): a config that contradicts the weights would be loaded wrongly.
    static func checkKeptFP8(checkpoint: Checkpoint, options: ConversionOptions, decisions: [Decision]) throws(ConversionError) {
        guard options.target == .fp8,
              decisions.contains(where: { $0.action.kind == .quantize }),
              let kept = decisions.first(where: { $0.dtype.isFP8 && $0.action.kind == .passThrough && $0.name.hasSuffix(".weight") })
        else { return }
        if let block = checkpoint.declaredBlock, block != .deepSeek {
            throw ConversionError(file: checkpoint.configPath, tensor: kept.name,
                "is kept in FP8 with \(block) blocks (quantization_config.weight_block_size), but this run writes 128x128 blocks and one config.json cannot say both; convert the checkpoint --to bf16 first, then --to fp8")
        }
        let declared = checkpoint.config?.quantizationConfig?["scale_fmt"]?.stringValue == "ue8m0" ? BlockQuantization.ScaleFormat.ue8m0 : .float32
        if declared != options.scaleFormat {
            throw ConversionError(file: checkpoint.configPath, tensor: kept.name,
                "is kept in FP8 with \(declared.rawValue) scales, but this run writes \(options.scaleFormat.rawValue) scales and one config.json cannot say both; use --scale-format \(declared.rawValue), or convert --to bf16 first")
        }
    }
}

/// Converts checkpoints between BF16/F16/F32 and FP8 block format, one output shard
/// per input shard, each written atomically and streamed tensor by tensor.
public enum Converter {
    /// Rows quantized or dequantized per work item: one block row.
    static let bandRows = BlockQuantization.blockSize

    /// Writes one output shard. Every tensor is computed straight into the output file's pages
    /// (quantized weights in 128-row bands on all cores); a quantized weight's codes are computed
    /// when its scales (which come first in the file) are, in one pass over the input.
    /// Returns the XXH64 of the file, as "xxh64:" and 16 hex digits.
    @discardableResult
    public static func writeShard(_ shard: ConversionPlan.Shard, to path: String, checkpoint: Checkpoint,
                                  options: ConversionOptions, progress: (@Sendable (UInt64) -> Void)? = nil) throws -> String {
        // The checksum is taken as the bytes are written, in file order (the codes of quantized weights,
        // computed ahead of their place, are read back at the end).
        nonisolated(unsafe) var hasher = moe_xxh64_state()
        moe_xxh64_reset(&hasher, 0)
        let output = try SafetensorsOutput(path: path, tensors: shard.tensors.map(\.spec), metadata: [(key: "format", value: "pt")],
                                           sources: checkpoint.files.map(\.mapping),
                                           observe: { moe_xxh64_update(&hasher, $0.baseAddress, $0.count) })
        var byName: [String: PlannedTensor] = [:]
        for t in shard.tensors { byName[t.spec.name] = t }
        do {
            for info in output.layout.tensors where !output.isFilled(info.name) {
                switch byName[info.name]!.source {
                case .copy(let fi, let t):
                    let file = checkpoint.files[fi]
                    try output.fill(info.name) { region in
                        try file.mapping.slices(file.fileRange(t)) { slice, offset in
                            try region.write(slice, at: offset)
                            progress?(UInt64(slice.count))
                        }
                    }
                case .codes(let fi, let w), .scales(let fi, let w):
                    let codesName = w.name
                    let scalesName = w.name + String(describing: BlockQuantization.scaleSuffix)
                    var scales: [Float] = []
                    try output.fill(codesName) { region in
                        scales = try quantize(w, in: checkpoint.files[fi], options: options, into: region)
                    }
                    try output.fill(scalesName) { region in
                        try scales.withUnsafeBytes { try region.write($0, at: 0) }
                    }
                    progress?(w.byteCount)
                case .dequantized(let wf, let w, let sf, let sc, let block):
                    try output.fill(info.name) { region in
                        try dequantize(w, in: checkpoint.files[wf], scale: sc, in: checkpoint.files[sf], block: block,
                                       options: options, into: region)
                    }
                    progress?(w.byteCount)
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
    /// the block scales.
    static func quantize(_ w: TensorInfo, in file: SafetensorsFile, options: ConversionOptions,
                         into region: TensorRegion) throws -> [Float] {
        let rows = Int(w.shape[0])
        let cols = Int(w.shape[1])
        nonisolated(unsafe) let data = file.data(w)  // the map outlives the parallel loop below
        let dtype = w.dtype
        let gridCols = (cols + bandRows - 1) / bandRows
        let format = options.scaleFormat
        var scales = [Float](repeating: 0, count: ((rows + bandRows - 1) / bandRows) * gridCols)
        let results = scales.withUnsafeMutableBufferPointer { scalesOut in
            nonisolated(unsafe) let scalesOut = scalesOut  // each band writes its own row of scales
            return parallelMap((rows + bandRows - 1) / bandRows, threads: options.threads) { band -> Result<Int, any Error> in
                let r0 = band * bandRows
                let r1 = min(rows, r0 + bandRows)
                let first = r0 * cols
                let n = (r1 - r0) * cols
                let codes = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: n)
                defer { codes.deallocate() }
                let scales = UnsafeMutableBufferPointer(rebasing: scalesOut[(band * gridCols)..<((band + 1) * gridCols)])
                let bad: Int
                let f32InPlace = data.baseAddress! + first * 4
                if dtype == .BF16 {
                    // Read in place: no float32 copy of the band.
                    bad = BlockQuantization.quantize(.bf16(data.baseAddress! + first * 2), rows: r1 - r0, cols: cols,
                                                     format: format, codes: codes, scales: scales)
                } else if dtype == .F32, Int(bitPattern: f32InPlace) % MemoryLayout<Float>.alignment == 0 {
                    bad = BlockQuantization.quantize(.f32(f32InPlace.assumingMemoryBound(to: Float.self)), rows: r1 - r0, cols: cols,
                                                     format: format, codes: codes, scales: scales)
                } else {
                    let values = [Float](unsafeUninitializedCapacity: n) { out, count in
                        count = n
                        if dtype == .F16 {
                            FloatDecoding.f16Table.withUnsafeBufferPointer { table in
                                for i in 0..<n {
                                    out[i] = table[Int(data.loadUnaligned(fromByteOffset: (first + i) * 2, as: UInt16.self))]
                                }
                            }
                        } else {
                            UnsafeMutableRawPointer(out.baseAddress!).copyMemory(from: data.baseAddress! + first * 4, byteCount: n * 4)
                        }
                    }
                    bad = values.withUnsafeBufferPointer {
                        BlockQuantization.quantize($0, rows: r1 - r0, cols: cols, format: format, codes: codes, scales: scales)
                    }
                }
                // Done with this band of the input: let its pages go.
                let lo = file.fileRange(w).lowerBound + UInt64(first * dtype.bits / 8)
                file.mapping.adviseDone(lo..<(lo + UInt64(n * dtype.bits / 8)))
                return Result { try region.write(UnsafeRawBufferPointer(codes), at: UInt64(first)); return bad }
            }
        }
        var nonFinite = 0
        for r in results { nonFinite += try r.get() }
        if nonFinite > 0 && !options.allowNonFinite {
            throw ConversionError(file: file.path, tensor: w.name,
                "\(nonFinite) NaN or infinite values; fix the weights, or pass --allow-nonfinite to turn their blocks into NaN")
        }
        return scales
    }

    /// Dequantizes an FP8 weight (any FP8 dtype, decoded as itself) with its block scales into BF16, 128
    /// rows at a time on all cores, each band written into `region` by the core that computed it.
    /// Refuses, unless `allowNonFinite`, a scale that is not finite, a zero scale over non-zero codes, and
    /// any value that comes out NaN or infinite (a NaN code, or a scale too large for BF16), naming the block.
    static func dequantize(_ w: TensorInfo, in file: SafetensorsFile, scale s: TensorInfo, in scaleFile: SafetensorsFile,
                           block: BlockShape, options: ConversionOptions, into region: TensorRegion) throws {
        guard w.elementCount > 0, let table = w.dtype.fp8Table else { return }
        // Both fit an Int: the weight's bytes (one per element) lie inside a mapped file.
        let rows = Int(w.shape[0])
        let cols = Int(w.shape[1])
        nonisolated(unsafe) let codes = file.data(w)  // the map outlives the parallel loop below
        let scaleData = scaleFile.data(s)
        let scales: [Float] = (0..<Int(s.elementCount)).map { i in
            s.dtype == .F32
                ? scaleData.loadUnaligned(fromByteOffset: i * 4, as: Float.self)
                : FloatDecoding.bf16(scaleData.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
        }
        let gridCols = (cols + block.cols - 1) / block.cols
        if !options.allowNonFinite {
            let largestCode = table.filter(\.isFinite).map(abs).max() ?? 0
            try checkScales(scales, gridCols: gridCols, of: w, codes: codes, rows: rows, cols: cols, block: block,
                            largestCode: largestCode, path: file.path)
        }
        let results = parallelMap((rows + bandRows - 1) / bandRows, threads: options.threads) { band -> Result<Int, any Error> in
            let r0 = band * bandRows
            let r1 = min(rows, r0 + bandRows)
            let n = (r1 - r0) * cols
            let out = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: n)
            defer { out.deallocate() }
            UnsafeRawBufferPointer(rebasing: codes[(r0 * cols)..<(r1 * cols)]).withMemoryRebound(to: UInt8.self) { c in
                scales.withUnsafeBufferPointer { sc in
                    BlockQuantization.dequantizeToBF16(codes: c, scales: sc, rows: r1 - r0, cols: cols, firstRow: r0,
                                                       block: (block.rows, block.cols), table: table, into: out)
                }
            }
            let bad = moe_count_nonfinite_bf16(out.baseAddress!, n)
            let lo = file.fileRange(w).lowerBound + UInt64(r0 * cols)
            file.mapping.adviseDone(lo..<(lo + UInt64(n)))
            if bad > 0 && !options.allowNonFinite { return .success(r0) }
            return Result { try region.write(UnsafeRawBufferPointer(out), at: UInt64(r0 * cols * 2)); return -1 }
        }
        for r in results {
            let firstBadBand = try r.get()
            guard firstBadBand >= 0 else { continue }
            let where_ = firstNonFinite(codes: codes, scales: scales, rows: firstBadBand..<min(rows, firstBadBand + bandRows),
                                        cols: cols, block: block, table: table)
            throw ConversionError(file: file.path, tensor: w.name,
                "dequantizes to NaN or infinity \(where_); fix the weights or their scales, or pass --allow-nonfinite to write them as they come out")
        }
    }

    /// Scales that cannot be right: not finite, or so small (zero included) that even the largest code
    /// dequantizes to 0 in BF16, over codes that are not all zero (they would be erased).
    static func checkScales(_ scales: [Float], gridCols: Int, of w: TensorInfo, codes: UnsafeRawBufferPointer,
                            rows: Int, cols: Int, block: BlockShape, largestCode: Float, path: String) throws {
        // Below half of BF16's smallest subnormal (2^-133), a product rounds to zero.
        let erases = { (scale: Float) in abs(scale) * largestCode < 0x1p-134 }
        for (i, scale) in scales.enumerated() where !scale.isFinite || erases(scale) {
            let (br, bc) = (i / gridCols, i % gridCols)
            let at = "block (\(br), \(bc)), rows \(br * block.rows)..<\(min(rows, (br + 1) * block.rows)), columns \(bc * block.cols)..<\(min(cols, (bc + 1) * block.cols))"
            if !scale.isFinite {
                throw ConversionError(file: path, tensor: w.name,
                    "scale of \(at) is \(scale); fix the scales, or pass --allow-nonfinite to write what they give")
            }
            // A zero scale is harmless over an all-zero block (some exporters write one there).
            var nonZero = false
            for r in (br * block.rows)..<min(rows, (br + 1) * block.rows) where !nonZero {
                for c in (bc * block.cols)..<min(cols, (bc + 1) * block.cols) where codes[r * cols + c] & 0x7F != 0 {
                    nonZero = true
                    break
                }
            }
            if nonZero {
                throw ConversionError(file: path, tensor: w.name,
                    "scale of \(at) is \(scale), so small that every code dequantizes to 0, which erases its non-zero codes; fix the scales, or pass --allow-nonfinite to write zeros")
            }
        }
    }

    /// Where the first NaN or infinity of these rows comes from, for the message.
    static func firstNonFinite(codes: UnsafeRawBufferPointer, scales: [Float], rows: Range<Int>, cols: Int,
                               block: BlockShape, table: [Float]) -> String {
        let gridCols = (cols + block.cols - 1) / block.cols
        for r in rows {
            for c in 0..<cols {
                let code = codes[r * cols + c]
                let scale = scales[(r / block.rows) * gridCols + c / block.cols]
                let value = table[Int(code)] * scale
                if !value.isFinite || !FloatDecoding.bf16(FloatEncoding.bf16(value)).isFinite {
                    let cause = table[Int(code)].isNaN ? "its code 0x\(String(code, radix: 16)) is NaN"
                        : "code \(table[Int(code)]) times scale \(scale) is beyond BF16's range"
                    return "at row \(r), column \(c) (block (\(r / block.rows), \(c / block.cols))): \(cause)"
                }
            }
        }
        return "in rows \(rows.lowerBound)..<\(rows.upperBound)"
    }
}
