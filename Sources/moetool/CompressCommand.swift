import ArgumentParser
import SafetensorsFormat
import ShardCompression
import StrictJSON
import Support
#if canImport(Glibc)
import Glibc
#endif

/// Shared by compress and decompress: plan, run with a progress bar, report.
struct CompressionRun {
    static func execute(input given: String, output: String, direction: DirectoryCompression.Direction, levels: ChunkCodec.Levels,
                        resume: Bool, common: CommonOptions) throws {
        // A model id in the Hugging Face cache compresses like its snapshot directory.
        let input = try CheckpointSource.locate(given)
        let total = try originalBytes(of: input, output, direction)
        let bar = ProgressBar(label: direction == .compress ? "compress" : "decompress", total: total,
                              quiet: common.quiet || common.json)
        let summary: DirectoryCompression.Summary
        do {
            defer { bar.finish() }
            summary = try DirectoryCompression.run(input, output, direction, levels: levels, threads: common.threads, resume: resume,
                                                   progress: { bar.advance($0) })
        } catch let error as CompressionError {
            throw CommandError(error)
        } catch {
            throw CommandError("io", "\(error)")
        }
        let figures = Figures(summary)
        if common.json {
            FileHandleOutput.document(JSONSerializer.pretty(json(summary, figures, input: input, output: output, direction: direction)))
        } else {
            FileHandleOutput.stdout(text(summary, figures, input: input, output: output, direction: direction))
        }
    }

    /// The bytes the progress bar counts: every input file's, a compressed shard's as restored.
    static func originalBytes(of input: String, _ output: String, _ direction: DirectoryCompression.Direction) throws -> UInt64 {
        let plan: DirectoryCompression.Plan
        do {
            plan = try DirectoryCompression.plan(input, output, direction)
        } catch {
            throw CommandError(error)
        }
        return plan.jobs.reduce(0) { sum, job in
            var st = stat()
            guard stat(job.source, &st) == 0 else { return sum }
            if job.action == "decompressed", let shard = try? CompressedShard(path: job.source) { return sum + shard.originalBytes }
            return sum + UInt64(st.st_size)
        }
    }

    /// The totals both reports give.
    struct Figures {
        let original: UInt64
        let compressed: UInt64
        let seconds: Double
        var ratio: Double { Double(original) / Double(max(compressed, 1)) }
        var originalMBPerSecond: Double { Double(original) / 1e6 / seconds }

        init(_ summary: DirectoryCompression.Summary) {
            original = summary.originalBytes
            compressed = summary.compressedBytes
            seconds = max(summary.seconds, 1e-9)
        }
    }

    /// The moetool.compress/1 document (Docs/compress.md).
    static func json(_ summary: DirectoryCompression.Summary, _ f: Figures, input: String, output: String,
                     direction: DirectoryCompression.Direction) -> JSONValue {
        func number(_ v: Double, _ places: Int) -> JSONValue { .number(JSONNumber(text: decimalText(v, places: places))) }
        var o = JSONObject()
        o.append("schema", "moetool.compress/1")
        o.append("direction", .string(direction == .compress ? "compress" : "decompress"))
        o.append("input", .string(input))
        o.append("output", .string(output))
        o.append("original_bytes", .number(JSONNumber(f.original)))
        o.append("compressed_bytes", .number(JSONNumber(f.compressed)))
        o.append("ratio", number(f.ratio, 4))
        o.append("seconds", number(f.seconds, 3))
        o.append("original_mb_per_s", number(f.originalMBPerSecond, 1))
        o.append("compressed_mb_per_s", number(Double(f.compressed) / 1e6 / f.seconds, 1))
        var dtypes: [String: (original: UInt64, stored: UInt64)] = [:]
        for file in summary.files {
            for (k, v) in file.stats?.byDtype ?? [:] {
                dtypes[k, default: (0, 0)].original += v.original
                dtypes[k, default: (0, 0)].stored += v.stored
            }
        }
        o.append("by_dtype", .object(JSONObject(dtypes.keys.sorted().map { k in
            let v = dtypes[k]!
            return (k, .object(JSONObject([("original_bytes", .number(JSONNumber(v.original))), ("stored_bytes", .number(JSONNumber(v.stored))),
                                           ("ratio", number(Double(v.original) / Double(max(v.stored, 1)), 4))])))
        })))
        o.append("left_out", .array(summary.leftOut.map {
            .object(JSONObject([("name", .string($0.name)), ("reason", .string($0.reason))]))
        }))
        o.append("files", .array(summary.files.map { file in
            .object(JSONObject([("name", .string(file.name)), ("action", .string(file.action)), ("resumed", .bool(file.resumed)),
                                ("input_bytes", .number(JSONNumber(file.inputBytes))), ("output_bytes", .number(JSONNumber(file.outputBytes)))]))
        }))
        return .object(o)
    }

    /// The summary line, then a line per entry left out.
    static func text(_ summary: DirectoryCompression.Summary, _ f: Figures, input: String, output: String,
                     direction: DirectoryCompression.Direction) -> String {
        let verb = direction == .compress ? "compressed" : "restored"
        let kept = summary.files.filter(\.resumed).count
        let leftOut = summary.leftOut.isEmpty ? "" : ", \(summary.leftOut.count) left out (below)"
        var out = "\(escapeForDisplay(input)) -> \(escapeForDisplay(output)): "
        out += "\(counted(summary.files.filter { $0.action != "copied" }.count, "file")) \(verb), "
        out += "\(summary.files.filter { $0.action == "copied" }.count) copied" + leftOut
        out += kept > 0 ? " (\(kept) kept from an earlier run)" : ""
        out += "; \(mb(f.original)) MB original, \(mb(f.compressed)) MB compressed (ratio \(decimalText(f.ratio, places: 3))), "
        out += "\(decimalText(f.seconds, places: 2)) s, \(decimalText(f.originalMBPerSecond, places: 0, trimZero: true)) MB/s of original bytes\n"
        for item in summary.leftOut { out += "left out: \(escapeForDisplay(item.name)): \(item.reason)\n" }
        return out
    }

    static func mb(_ b: UInt64) -> String { decimalText(Double(b) / 1e6, places: 1) }
}

extension CommandError {
    /// A compression failure keeps its id and hint (CompressionFailure).
    init(_ error: CompressionError) {
        self.init(error.id, "\(escapeForDisplay(error.file)): \(error.message)", hint: error.hint)
    }
}

struct Compress: ReportsErrorsAsJSON {
    static let configuration = CommandConfiguration(
        commandName: "compress",
        abstract: "Compress safetensors shards losslessly (byte planes + zstd) into .safetensors.mz files only moetool reads.",
        discussion: """
            IN is a .safetensors file or a checkpoint directory (the whole tree under it: every NAME.safetensors \
            compressed into NAME.safetensors.mz, other files copied, symlinks followed, a manifest added; the \
            index is kept as it is, and moetool inspect reads the directory through it). A single file's OUT \
            must not end in .safetensors: loaders would take it for one. OUT must not exist (or be an empty \
            directory) and must be apart from IN; after a kill, rerun with --resume. `moetool decompress` \
            restores every byte and every name. --json prints schema moetool.compress/1. See Docs/compress.md.
            """)

    @Argument(help: "A .safetensors file, a checkpoint directory, or a model id (org/name) in the Hugging Face cache.") var input: String
    @Argument(help: "The output file (NAME.safetensors.mz) or directory.") var output: String
    @Option(help: "zstd level for exponent planes: 0 (moetool's entropy setting, the default) or 1-19.") var exponentLevel: Int32 = 0
    @Option(help: "zstd level for the other planes: 0 (the default) or 1-19.") var level: Int32 = 0
    @Flag(help: "Finish a killed run into the same OUT: files already in place and intact are kept, the rest redone.")
    var resume = false
    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard (0...19).contains(exponentLevel), (0...19).contains(level) else { throw ValidationError("levels are 0 to 19") }
    }

    func run() throws {
        try CompressionRun.execute(input: input, output: output, direction: .compress,
                                   levels: .init(exponent: exponentLevel, other: level), resume: resume, common: common)
    }
}

struct Decompress: ReportsErrorsAsJSON {
    static let configuration = CommandConfiguration(
        commandName: "decompress",
        abstract: "Restore the original safetensors files from `moetool compress` output, checking every checksum.",
        discussion: """
            NAME.safetensors.mz becomes NAME.safetensors again. A file is renamed into place only after every \
            chunk checksum and the file checksum pass; a corrupt or truncated input exits 1 naming the chunk \
            and tensor. --json prints schema moetool.compress/1.
            """)

    @Argument(help: "A compressed file or directory.") var input: String
    @Argument(help: "The output file or directory.") var output: String
    @Flag(help: "Finish a killed run into the same OUT: files already in place and intact are kept, the rest redone.")
    var resume = false
    @OptionGroup var common: CommonOptions

    func run() throws {
        try CompressionRun.execute(input: input, output: output, direction: .decompress, levels: .init(), resume: resume, common: common)
    }
}
