import Checkpoint
import NumberFormats
import SafetensorsFormat
import StrictJSON

#if canImport(Glibc)
import Glibc
#endif

/// Converts a whole checkpoint into a new directory: every shard (atomically),
/// then the index, then config.json, then the other files of the checkpoint.
public enum CheckpointConversion {
    public struct Summary: Sendable {
        public let shards: Int
        public let quantized: Int
        public let dequantized: Int
        public let passedThrough: Int
        public let dropped: Int
        public let bytesIn: UInt64
        public let bytesOut: UInt64
    }

    /// Refuses an output that would touch the input, or a non-empty output directory.
    public static func checkOutput(_ output: String, input checkpoint: Checkpoint) throws(ConversionError) {
        let inputDir = realPath(checkpoint.directory) ?? checkpoint.directory
        var st = stat()
        if stat(output, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw ConversionError(file: output, "exists and is not a directory; give a new or empty directory")
            }
            let entries = listDirectory(output)
            guard entries.isEmpty else {
                throw ConversionError(file: output, "is not empty (\(entries.count) entries); give a new or empty directory")
            }
        }
        let outAbsolute = absolutePath(output)
        if outAbsolute == inputDir || outAbsolute.hasPrefix(inputDir + "/") {
            throw ConversionError(file: output, "is inside the input checkpoint \(checkpoint.directory); the input is never written to")
        }
    }

    public static func run(checkpoint: Checkpoint, output: String, plan: ConversionPlan, options: ConversionOptions,
                           progress: (@Sendable (UInt64) -> Void)? = nil) throws -> Summary {
        try checkOutput(output, input: checkpoint)
        if mkdir(output, 0o755) != 0 && errno != EEXIST {
            throw ConversionError(file: output, "cannot create the directory: \(String(cString: strerror(errno)))")
        }
        var weightMap: [(String, String)] = []
        var bytesOut: UInt64 = 0
        for shard in plan.shards {
            let path = output + "/" + shard.name
            do {
                try Converter.writeShard(shard, to: path, checkpoint: checkpoint, options: options, progress: progress)
            } catch let e as ConversionError {
                throw e
            } catch {
                throw ConversionError(file: path, "\(error)")
            }
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
        try copyOtherFiles(from: checkpoint, to: output)
        return Summary(
            shards: plan.shards.count, quantized: plan.count(.quantize), dequantized: plan.count(.dequantize),
            passedThrough: plan.count(.passThrough), dropped: plan.count(.drop),
            bytesIn: checkpoint.dataBytes, bytesOut: bytesOut)
    }

    /// `quantization_config` for the FP8 block format, or removed for BF16 (a leftover breaks loaders).
    public static func updatedConfig(_ config: ModelConfig, plan: ConversionPlan, options: ConversionOptions) -> JSONObject {
        var raw = config.raw
        raw.members.removeAll { $0.key == "quantization_config" }
        guard options.target == .fp8 else { return raw }
        var q = JSONObject([
            ("activation_scheme", "dynamic"), ("fmt", "e4m3"), ("quant_method", "fp8"),
            ("weight_block_size", [.int(BlockQuantization.blockSize), .int(BlockQuantization.blockSize)]),
        ])
        if options.scaleFormat == .ue8m0 { q.append("scale_fmt", "ue8m0") }
        let deepseek = (config.modelType ?? "").hasPrefix("deepseek")
        if !deepseek {
            // Loaders of other architectures quantize every linear layer unless told which ones were skipped.
            let skipped = plan.decisions
                .filter { $0.action.kind == .passThrough && $0.name.hasSuffix(".weight") && $0.shape.count == 2 }
                .map { JSONValue.string(String($0.name.dropLast(".weight".count))) }
            q.append("ignored_layers", .array(skipped))
            q.append("modules_to_not_convert", .array(skipped))
        }
        raw.append("quantization_config", .object(q))
        return raw
    }

    static func writeIndex(weightMap: [(String, String)], totalSize: UInt64, to path: String) throws(ConversionError) {
        let map = JSONObject(weightMap.sorted { $0.0 < $1.0 }.map { ($0.0, .string($0.1)) })
        let index = JSONObject([("metadata", .object(JSONObject([("total_size", .uint(totalSize))]))), ("weight_map", .object(map))])
        try writeText(JSONSerializer.pretty(.object(index)), to: path)
    }

    static func writeText(_ text: String, to path: String) throws(ConversionError) {
        do {
            let file = try AtomicFile(path: path)
            try file.write(Array(text.utf8))
            try file.commit()
        } catch {
            throw ConversionError(file: path, "\(error)")
        }
    }

    /// Tokenizer files, generation_config.json and the like, copied unchanged.
    static func copyOtherFiles(from checkpoint: Checkpoint, to output: String) throws(ConversionError) {
        // Only for a checkpoint directory: a single file named on the command line brings nothing along.
        guard checkpoint.layout == .sharded || checkpoint.path != checkpoint.files[0].path else { return }
        let skip = Set(checkpoint.fileNames + [Checkpoint.indexFileName, Checkpoint.configFileName])
        for name in listDirectory(checkpoint.directory).sorted() where !skip.contains(name) && !name.hasPrefix(".") {
            let source = checkpoint.directory + "/" + name
            var st = stat()
            guard stat(source, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            if name.hasSuffix(".safetensors") { continue }  // stray weights not in the checkpoint
            do {
                let m = try MappedFile(path: source)
                let file = try AtomicFile(path: output + "/" + name)
                var offset: UInt64 = 0
                while offset < m.size {
                    let end = min(m.size, offset + (8 << 20))
                    try file.write(m.bytes(offset..<end))
                    offset = end
                }
                try file.commit()
            } catch {
                throw ConversionError(file: source, "cannot copy: \(error)")
            }
        }
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
