import Checkpoint
import NumberFormats
import SafetensorsFormat
import ShardCompression
import StrictJSON
import WeightReading

#if canImport(Glibc)
import Glibc
#endif

/// Converts a whole checkpoint into a new directory: every shard (atomically),
/// then the index, then config.json, then the other files of the checkpoint.
public enum CheckpointConversion {
    /// How much of a conversion this process does.
    public enum Mode: Sendable, Equatable {
        /// Everything, into a new or empty OUT.
        case full
        /// Everything, skipping shards an earlier (killed) run finished and verified.
        case resume
        /// Only shards whose position p (0-based, in name order) has p % count == index - 1; no index or
        /// config: for n workers sharing one OUT. `finalize` completes the checkpoint afterwards.
        case shards(index: Int, count: Int)
        /// Verifies every shard and writes the index, config.json and the other files.
        case finalize
    }

    public struct ShardResult: Sendable {
        public let name: String
        public let bytesIn: UInt64
        public let bytesOut: UInt64
        public let seconds: Double
        /// Finished and verified by an earlier run.
        public let resumed: Bool
    }

    public struct Summary: Sendable {
        public let shards: [ShardResult]
        public let quantized: Int
        public let dequantized: Int
        public let passedThrough: Int
        public let dropped: Int
        public let finalized: Bool
        /// What the directory held that was not carried over, and why.
        public var leftOut: [DirectoryTree.LeftOut] = []
        /// Weights decoded from another format and quantized again by this run, with what that changed (shards
        /// kept from an earlier run are not measured again).
        public var requantized: [RequantizationLoss] = []
        public var bytesIn: UInt64 { shards.reduce(0) { $0 + $1.bytesIn } }
        public var bytesOut: UInt64 { shards.reduce(0) { $0 + $1.bytesOut } }
    }

    /// Where an unfinished conversion keeps its state inside OUT (removed by finalize).
    public static let stateDirectoryName = ".moetool-convert"

    /// Refuses an output that would touch the input, or a non-empty output directory.
    public static func checkOutput(_ output: String, input checkpoint: Checkpoint) throws(ConversionError) {
        try checkOutsideInput(output, input: checkpoint)
        let entries = listDirectory(output)
        guard entries.isEmpty else {
            throw ConversionError(.outputRefused, file: output,
                "is not empty (\(entries.count) entries); give a new or empty directory, or --resume an interrupted conversion")
        }
    }

    static func checkOutsideInput(_ output: String, input checkpoint: Checkpoint) throws(ConversionError) {
        var st = stat()
        if stat(output, &st) == 0 && st.st_mode & S_IFMT != S_IFDIR {
            throw ConversionError(.outputRefused, file: output, "exists and is not a directory; give a new or empty directory")
        }
        // Device and inode up the path: symlinks, hard links, `..` and bind mounts cannot hide the input.
        let inputs = [checkpoint.directory] + checkpoint.files.map(\.path) + (checkpoint.configPath.map { [$0] } ?? [])
        if let why = OutputPlacement.conflict(output: output, inputs: inputs, outputIsDirectory: true) {
            throw ConversionError(.outputRefused, file: output, why)
        }
        // A shard the index places under moetool's state directory would be deleted with that directory.
        if let name = checkpoint.fileNames.first(where: { $0.split(separator: "/").contains { $0.hasPrefix(".moetool-") } }) {
            throw ConversionError(.outputRefused, file: checkpoint.directory + "/" + name,
                "lies under a .moetool-* directory, where moetool keeps the state of its runs; rename the shard (and its index entries) first")
        }
    }

    /// What identifies a conversion: the input shards and every option that changes output bytes.
    static func fingerprint(checkpoint: Checkpoint, options: ConversionOptions) -> JSONValue {
        .object(JSONObject([
            ("version", 2), ("target", .string(options.target.rawValue)),
            ("scale_format", .string(options.scaleFormat.rawValue)),
            ("group_size", options.target == .int4 ? .int(options.groupSize) : .null),
            ("include", options.selection.include.map { .string($0.pattern) } ?? .null),
            ("exclude", options.selection.exclude.map { .string($0.pattern) } ?? .null),
            ("allow_nonfinite", .bool(options.allowNonFinite)),
            ("input", .array(zip(checkpoint.fileNames, checkpoint.files).map { inputIdentity(name: $0, path: $1.path) })),
        ]))
    }

    public static func run(checkpoint: Checkpoint, output: String, plan: ConversionPlan, options: ConversionOptions,
                           mode: Mode = .full, progress: (@Sendable (UInt64) -> Void)? = nil) throws -> Summary {
        let state = output + "/" + stateDirectoryName
        let fingerprintText = JSONSerializer.pretty(fingerprint(checkpoint: checkpoint, options: options))
        try checkOutsideInput(output, input: checkpoint)
        if mode == .full { try checkOutput(output, input: checkpoint) }
        let claimMode: OutputClaim.Mode
        switch mode {
        case .full: claimMode = .fresh
        case .resume: claimMode = .resume
        case .shards: claimMode = .worker
        case .finalize: claimMode = .existing
        }
        let claim: OutputClaim
        do {
            claim = try OutputClaim(output, stateName: stateDirectoryName, plan: fingerprintText, mode: claimMode,
                                    noun: "conversion", command: "moetool convert")
        } catch {
            throw ConversionError(.outputClaimed, error.description)
        }
        defer { withExtendedLifetime(claim) {} }  // the lock is held until the run ends

        var results: [ShardResult] = []
        var losses: [RequantizationLoss] = []
        // The shards this run is responsible for: every one, or a --shards worker's share.
        var mine = Set(plan.shards.indices)
        if case .shards(let index, let count) = mode { mine = mine.filter { $0 % count == index - 1 } }
        if mode != .finalize {
            // Weights are read through one reader: plain shards mapped, compressed ones decompressed chunk by chunk.
            let reader: CheckpointReader
            do throws(WeightReadError) {
                reader = try CheckpointReader(checkpoint)
            } catch {
                throw ConversionError(error)
            }
            for (position, shard) in plan.shards.enumerated() where mine.contains(position) {
                let shardLock = try takeLock(state + "/" + shard.name.replacingSlashes() + ".lock", .exclusive,
                                             what: output + "/" + shard.name)
                defer { withExtendedLifetime(shardLock) {} }
                AtomicFile.removeStaleTemporaries(of: output + "/" + shard.name, allWriters: true)  // we hold its lock
                let path = output + "/" + shard.name
                let inputBytes = checkpoint.files[position].header.dataBytes
                if mode != .full, verifiedDone(shard.name, output: output) {
                    results.append(ShardResult(name: shard.name, bytesIn: inputBytes, bytesOut: shard.outputBytes,
                                               seconds: 0, resumed: true))
                    progress?(inputBytes)
                    continue
                }
                let start = monotonicSeconds()
                let digest: String
                do {
                    try AtomicFile.makeParentDirectories(of: shard.name, in: output)
                    digest = try Converter.writeShard(shard, to: path, reader: reader, options: options, progress: progress,
                                                      losses: { losses.append($0) })
                } catch let e as ConversionError {
                    throw e
                } catch let e as IOError {
                    throw ConversionError(.ioFailed, file: e.path, e.message)
                } catch {
                    throw ConversionError(.ioFailed, file: path, "\(error)")
                }
                try markDone(shard.name, digest: digest, output: output)
                results.append(ShardResult(name: shard.name, bytesIn: inputBytes, bytesOut: shard.outputBytes,
                                           seconds: monotonicSeconds() - start, resumed: false))
            }
        }
        var finalized = false
        var leftOut: [DirectoryTree.LeftOut] = []
        if case .shards = mode {} else {
            leftOut = try finalize(checkpoint: checkpoint, output: output, plan: plan, options: options,
                         alreadyVerified: Set(results.map(\.name)))
            claim.release()
            finalized = true
        }
        return Summary(
            shards: results, quantized: plan.count(.quantize, inShards: mine), dequantized: plan.count(.dequantize, inShards: mine),
            passedThrough: plan.count(.passThrough, inShards: mine), dropped: plan.count(.drop, inShards: mine),
            finalized: finalized, leftOut: leftOut, requantized: losses)
    }

    /// Every shard done and intact, then the index, config.json and other files; the state goes last.
    /// Returns what was left out of the copy, and why.
    static func finalize(checkpoint: Checkpoint, output: String, plan: ConversionPlan, options: ConversionOptions,
                         alreadyVerified: Set<String>) throws -> [DirectoryTree.LeftOut] {
        let missing = plan.shards.map(\.name).filter { !alreadyVerified.contains($0) && !verifiedDone($0, output: output) }
        guard missing.isEmpty else {
            throw ConversionError(.outputRefused, file: output,
                "\(missing.count) shard(s) not finished or damaged (e.g. \(missing[0])); run the missing --shards workers or --resume")
        }
        var weightMap: [(String, String)] = []
        var bytesOut: UInt64 = 0
        for shard in plan.shards {
            bytesOut += shard.outputBytes
            for t in shard.tensors { weightMap.append((t.spec.name, shard.name)) }
        }
        if checkpoint.layout == .sharded {
            try writeIndex(weightMap: weightMap, totalSize: bytesOut, to: output + "/" + Checkpoint.indexFileName)
        }
        if let config = checkpoint.config {
            let updated = updatedConfig(config, plan: plan, options: options)
            try writeText(JSONSerializer.pretty(.object(updated)), to: output + "/" + Checkpoint.configFileName)
        }
        return try copyOtherFiles(from: checkpoint, to: output, decoded: options.target == .bf16)
    }

    /// Records a finished shard with the checksum of the bytes written (taken as they were written):
    /// XXH64, as "xxh64:" and 16 hex digits.
    static func markDone(_ shard: String, digest: String, output: String) throws(ConversionError) {
        try writeText(JSONSerializer.pretty(.object(JSONObject([("shard", .string(shard)), ("checksum", .string(digest))]))),
                      to: markerPath(shard, output: output))
    }

    /// A shard counts as done only when its marker exists and the file still has the recorded checksum.
    static func verifiedDone(_ shard: String, output: String) -> Bool {
        guard let marker = try? MappedFile(path: markerPath(shard, output: output)),
              let json = try? JSONParser.parse(marker.bytes(0..<marker.size)),
              let file = try? MappedFile(path: output + "/" + shard)
        else { return false }
        if let recorded = json.objectValue?["checksum"]?.stringValue { return Converter.xxh64(file) == recorded }
        // Markers written before XXH64 (moetool 0.1 before plan-experts) hold a SHA-256.
        if let recorded = json.objectValue?["sha256"]?.stringValue { return FileChecksum.sha256(file) == recorded }
        return false
    }

    static func markerPath(_ shard: String, output: String) -> String {
        output + "/" + stateDirectoryName + "/" + shard.replacingSlashes() + ".done.json"
    }

    static func takeLock(_ path: String, _ kind: WriterLock.Kind, what: String) throws(ConversionError) -> WriterLock {
        do {
            return try WriterLock(path, kind, what: what, by: "moetool convert")
        } catch {
            throw ConversionError(.outputClaimed, error.description)
        }
    }

    /// `quantization_config` for the FP8 block format, or removed for BF16 (a leftover breaks loaders).
    public static func updatedConfig(_ config: ModelConfig, plan: ConversionPlan, options: ConversionOptions) -> JSONObject {
        var raw = config.raw
        raw.members.removeAll { $0.key == "quantization_config" }
        if options.target == .mxfp4 && config.modelType == "gpt_oss" {
            raw.append("quantization_config", .object(GptOssMXFP4.quantizationConfig()))
            return raw
        }
        if let packed = PackedTarget(options) {
            // compressed-tensors lists every Linear it left alone: each 2-D weight not quantized, embeddings aside.
            let ignore = unquantizedModules(plan).filter { !$0.contains("embed_tokens") }
            raw.append("quantization_config", .object(packed.quantizationConfig(ignore: ignore)))
            return raw
        }
        guard options.target == .fp8 else { return raw }
        var q = JSONObject([
            ("activation_scheme", "dynamic"), ("fmt", "e4m3"), ("quant_method", "fp8"),
            ("weight_block_size", [.int(BlockQuantization.blockSize), .int(BlockQuantization.blockSize)]),
        ])
        if options.scaleFormat == .ue8m0 { q.append("scale_fmt", "ue8m0") }
        let deepseek = (config.architecture ?? "").hasPrefix("deepseek")
        if !deepseek {
            // Loaders of other architectures quantize every linear layer unless told which ones were skipped.
            let skipped = unquantizedModules(plan).map { JSONValue.string($0) }
            q.append("ignored_layers", .array(skipped))
            q.append("modules_to_not_convert", .array(skipped))
        }
        raw.append("quantization_config", .object(q))
        return raw
    }

    /// The modules whose 2-D weight this run leaves unquantized: kept as they are, or decoded to BF16 (an
    /// encoded weight the target cannot take, its codes tensor named `<module>.weight_packed`); and the experts
    /// modules whose fused 3-D stacks are kept (transformers' FP8 loader otherwise builds FP8 experts for every
    /// `.experts` module and expects FP8 stacks with scales there).
    static func unquantizedModules(_ plan: ConversionPlan) -> [String] {
        var seen = Set<String>()
        return plan.decisions.compactMap { d -> String? in
            switch d.action.kind {
            case .passThrough where d.name.hasSuffix(".weight") && d.shape.count == 2:
                return String(d.name.dropLast(".weight".count))
            case .passThrough where d.shape.count == 3:
                let parts = d.name.split(separator: ".", omittingEmptySubsequences: false)
                guard let i = parts.lastIndex(of: "experts") else { return nil }
                return parts[...i].joined(separator: ".")
            case .dequantize:
                let weight = d.name.hasSuffix("_packed") ? String(d.name.dropLast("_packed".count)) : d.name
                return weight.hasSuffix(".weight") ? String(weight.dropLast(".weight".count)) : nil
            default:
                return nil
            }
        }.filter { seen.insert($0).inserted }
    }

    static func writeIndex(weightMap: [(String, String)], totalSize: UInt64, to path: String) throws(ConversionError) {
        let map = JSONObject(weightMap.sorted { $0.0 < $1.0 }.map { ($0.0, .string($0.1)) })
        let index = JSONObject([("metadata", .object(JSONObject([("total_size", .uint(totalSize))]))), ("weight_map", .object(map))])
        try writeText(JSONSerializer.pretty(.object(index)), to: path)
    }

    /// Writes a small file atomically (under the lock: a killed run's temporary for it is cleared first).
    static func writeText(_ text: String, to path: String) throws(ConversionError) {
        AtomicFile.removeStaleTemporaries(of: path, allWriters: true)
        do {
            let file = try AtomicFile(path: path)
            try file.write(Array(text.utf8))
            try file.commit()
        } catch {
            throw ConversionError(.ioFailed, file: path, "\(error)")
        }
    }

    /// ModelOpt's record of how a checkpoint is quantized, beside config.json: serving engines read it first.
    static let modelOptQuantConfigName = "hf_quant_config.json"

    /// Everything else in the checkpoint directory, at any depth (tokenizer files, generation_config.json,
    /// `original/`, ...), copied unchanged; returns what was left out and why.
    /// `decoded`: the output's weights are no longer quantized (`--to bf16`), so a record saying they are stays behind.
    @discardableResult
    static func copyOtherFiles(from checkpoint: Checkpoint, to output: String, decoded: Bool) throws(ConversionError) -> [DirectoryTree.LeftOut] {
        // Only for a checkpoint directory: a single file named on the command line brings nothing along.
        guard checkpoint.layout == .sharded || checkpoint.path != checkpoint.files[0].path else { return [] }
        let tree: DirectoryTree
        do {
            tree = try DirectoryTree.walk(checkpoint.directory)
        } catch {
            throw ConversionError(.ioFailed, file: error.path, error.message)
        }
        // Shards by the names the index gives them and as stored (a compressed one carries ".mz").
        let rewritten = Set(checkpoint.fileNames + checkpoint.files.indices.map(checkpoint.storedFileName)
                            + [Checkpoint.indexFileName, Checkpoint.configFileName])
        var leftOut = tree.leftOut
        for directory in tree.directories {
            do {
                try AtomicFile.makeParentDirectories(of: directory + "/x", in: output)
            } catch {
                throw ConversionError(.ioFailed, file: error.path, error.message)
            }
        }
        for name in tree.files where !rewritten.contains(name) {
            if name.hasPrefix(".cache/huggingface/") {
                // hf download --local-dir's records of the original files: they would describe files that are not these.
                leftOut.append(DirectoryTree.LeftOut(name: name, reason: "the Hugging Face download records of the original files"))
                continue
            }
            if name == DirectoryCompression.manifestName {
                // A compressed input's record of its shards: the converted shards are plain.
                leftOut.append(DirectoryTree.LeftOut(name: name, reason: "moetool compress's record of the input's compressed shards; the output's shards are not compressed"))
                continue
            }
            if decoded && name == modelOptQuantConfigName {
                leftOut.append(DirectoryTree.LeftOut(name: name, reason: "ModelOpt's record of the input's quantization; the output is not quantized (vLLM would load it as NVFP4)"))
                continue
            }
            if name.hasSuffix(".safetensors") {
                // Weights the index does not name: loaders ignore them, and a copy would only double their size.
                leftOut.append(DirectoryTree.LeftOut(name: name, reason: "a .safetensors file the index does not name (loaders ignore it); not converted"))
                continue
            }
            let source = checkpoint.directory + "/" + name
            AtomicFile.removeStaleTemporaries(of: output + "/" + name, allWriters: true)
            do {
                try AtomicFile.copy(from: source, to: output + "/" + name)
            } catch {
                throw ConversionError(.ioFailed, file: source, "cannot copy: \(error)")
            }
        }
        return leftOut
    }
}

/// The absolute form of a path that may not exist yet: its existing parent resolved.
func absolutePath(_ path: String) -> String {
    if let real = realPath(path) { return real }
    let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
    guard let slash = trimmed.lastIndex(of: "/") else {
        return (realPath(".") ?? ".") + "/" + trimmed
    }
    let parent = String(trimmed[..<slash])
    return (realPath(parent.isEmpty ? "/" : parent) ?? parent) + "/" + trimmed[trimmed.index(after: slash)...]
}

extension String {
    func replacingSlashes() -> String { String(map { $0 == "/" ? "_" : $0 }) }
}


