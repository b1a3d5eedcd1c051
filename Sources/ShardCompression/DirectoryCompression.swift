import Checkpoint
import CKernels
import SafetensorsFormat
import StrictJSON
#if canImport(Glibc)
import Glibc
#endif

/// Compressing and restoring a single file or a checkpoint directory (the whole tree under it).
public enum DirectoryCompression {
    public static let manifestName = "moetool-compressed.json"
    /// Where an unfinished directory run keeps its plan and lock inside OUT (removed at the end).
    public static let stateDirectoryName = ".moetool-compress"

    public struct FileResult: Sendable {
        /// The path relative to IN and OUT (for a single file, its base name).
        public var name: String
        /// compressed, decompressed or copied.
        public var action: String
        public var inputBytes: UInt64
        public var outputBytes: UInt64
        public var stats: ShardStats?
        /// Already in place from a killed run (`--resume`).
        public var resumed = false
    }

    /// Something under IN that is not put in OUT, and why (a socket, a FIFO, a symlink loop, ...).
    public typealias LeftOut = DirectoryTree.LeftOut

    public struct Summary: Sendable {
        public var files: [FileResult] = []
        public var leftOut: [LeftOut] = []
        public var seconds: Double = 0
        /// Bytes of the uncompressed side: inputs when compressing, outputs when restoring.
        public var originalBytes: UInt64 { files.reduce(0) { $0 + ($1.action == "decompressed" ? $1.outputBytes : $1.inputBytes) } }
        public var compressedBytes: UInt64 { files.reduce(0) { $0 + ($1.action == "decompressed" ? $1.inputBytes : $1.action == "compressed" ? $1.outputBytes : $1.inputBytes) } }
    }

    public enum Direction: Sendable { case compress, decompress }

    /// One file to compress, restore or copy.
    public struct Job: Sendable {
        public var source: String
        public var destination: String
        /// The path relative to IN and OUT (for a single file, its base name).
        public var name: String
        /// compressed, decompressed or copied.
        public var action: String
    }

    /// What a run does: every file under IN at any depth, the directories to recreate, what is left out.
    public struct Plan: Sendable {
        public var jobs: [Job] = []
        /// Every directory under IN, relative, parents before children (recreated in OUT, empty ones too).
        public var directories: [String] = []
        public var leftOut: [LeftOut] = []
        /// Entries of IN that are symlinks (followed): their targets are inputs too, which OUT must keep apart from.
        public var symlinks: [String] = []
    }

    /// What would be done, or an error. Refuses to compress moetool compress output ("already compressed").
    public static func plan(_ input: String, _ output: String, _ direction: Direction) throws(CompressionError) -> Plan {
        var st = stat()
        guard stat(input, &st) == 0 else { throw CompressionError(.inputMissing, file: input, "no such file or directory") }
        if (st.st_mode & S_IFMT) == S_IFREG {
            let isCompressed = CompressedShard.isCompressed(path: input)
            switch direction {
            case .compress:
                if isCompressed { throw alreadyCompressed(input) }
            case .decompress:
                if !isCompressed { throw CompressionError(.notCompressed, file: input, "not a moetool compressed shard (no magic number)") }
            }
            return Plan(jobs: [Job(source: input, destination: output, name: basename(input),
                                   action: direction == .compress ? "compressed" : "decompressed")])
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw CompressionError(.notFileOrDirectory, file: input, "not a file or directory") }
        let tree: DirectoryTree
        do {
            tree = try DirectoryTree.walk(input)
        } catch {
            throw CompressionError(.unreadable, file: error.path, error.message)
        }
        let suffix = CompressedLayout.fileSuffix
        var plan = Plan(directories: tree.directories, leftOut: tree.leftOut, symlinks: tree.symlinks)
        for rel in tree.files {
            let source = input + "/" + rel
            if rel == manifestName {
                // The manifest marks moetool compress output; restoring drops it.
                if direction == .compress { throw alreadyCompressed(source) }
                continue
            }
            // Compressed shards are stored as NAME.safetensors.mz (restored to NAME.safetensors); `name` is the original's.
            var job = Job(source: source, destination: output + "/" + rel, name: rel, action: "copied")
            switch direction {
            case .compress:
                let isShard = rel.hasSuffix(".safetensors") || rel.hasSuffix(".safetensors" + suffix)
                if isShard && CompressedShard.isCompressed(path: source) { throw alreadyCompressed(source) }
                if rel.hasSuffix(".safetensors") {
                    job.action = "compressed"
                    job.destination += suffix
                }
            case .decompress:
                if CompressedShard.isCompressed(path: source) {
                    job.action = "decompressed"
                    if rel.hasSuffix(suffix) {
                        job.name = String(rel.dropLast(suffix.count))
                        job.destination = output + "/" + job.name
                    }
                }
            }
            plan.jobs.append(job)
        }
        if direction == .compress && !plan.jobs.contains(where: { $0.action == "compressed" }) {
            throw CompressionError(.nothingToCompress, file: input, "no .safetensors files to compress")
        }
        return plan
    }

    static func alreadyCompressed(_ path: String) -> CompressionError {
        CompressionError(.alreadyCompressed, file: path, "already compressed (it is moetool compress output)")
    }

    /// Compresses or restores `input` (a file or a checkpoint directory, with everything under it) into
    /// `output`, which must not exist yet or be an empty directory, and must be apart from the input
    /// (not it, not inside it, not holding it). Every file is written under a temporary name and renamed
    /// when complete; in a directory the manifest is written last. With `resume`, a run that was killed is
    /// finished: files already in place (and intact) are kept, the rest redone.
    public static func run(_ input: String, _ output: String, _ direction: Direction, levels: ChunkCodec.Levels = .init(),
                           threads: Int = 0, resume: Bool = false,
                           progress: (@Sendable (UInt64) -> Void)? = nil) throws -> Summary {
        let start = monotonicSeconds()
        var st = stat()
        let isDirectory = stat(input, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
        let plan = try plan(input, output, direction)
        // Before anything is created.
        if let conflict = OutputPlacement.conflict(output: output, inputs: [input] + plan.symlinks, outputIsDirectory: isDirectory) {
            throw CompressionError(.outputConflict, file: output, conflict)
        }
        // A compressed file under a .safetensors name is taken for one by loaders, which then fail on its header.
        if !isDirectory && direction == .compress && output.hasSuffix(".safetensors") {
            throw CompressionError(.safetensorsName, file: output,
                "a compressed file must not be named .safetensors: only moetool reads it, and loaders would take it for one")
        }
        var claim: OutputClaim? = nil
        if isDirectory {
            claim = try claimDirectory(input, output, plan: plan, direction: direction, levels: levels, resume: resume)
            try makeDirectories(plan.directories, in: output)
        } else {
            var o = stat()
            if stat(output, &o) == 0 && !resume {
                throw CompressionError(.outputExists, file: output, "exists")
            }
        }
        var summary = Summary()
        summary.leftOut = plan.leftOut
        for job in plan.jobs {
            summary.files.append(try perform(job, levels: levels, threads: threads, resume: resume, inDirectory: isDirectory,
                                             progress: progress))
        }
        if isDirectory && direction == .compress {
            try writeManifest(summary, to: output + "/" + manifestName)
        }
        claim?.release()
        summary.seconds = monotonicSeconds() - start
        return summary
    }

    /// Compresses, restores or copies one file (or keeps it, when a killed run finished it: `resume`).
    static func perform(_ job: Job, levels: ChunkCodec.Levels, threads: Int, resume: Bool, inDirectory: Bool,
                        progress: (@Sendable (UInt64) -> Void)?) throws -> FileResult {
        let inSize = fileSize(job.source)
        var result = FileResult(name: job.name, action: job.action, inputBytes: inSize, outputBytes: 0, stats: nil)
        if resume, let stats = finished(job, threads: threads) {
            result.resumed = true
            result.stats = stats
            result.outputBytes = fileSize(job.destination)
            progress?(job.action == "decompressed" ? result.outputBytes : inSize)
            return result
        }
        if !inDirectory && access(job.destination, F_OK) == 0 {
            throw CompressionError(.outputExists, file: job.destination, "exists and is not a complete output of \(escapeForDisplay(job.source))")
        }
        // In a directory we hold the lock, so every leftover temporary is stale.
        AtomicFile.removeStaleTemporaries(of: job.destination, allWriters: inDirectory)
        switch job.action {
        case "compressed":
            result.stats = try ShardCompressor.compress(input: job.source, output: job.destination, levels: levels,
                                                        threads: threads, progress: progress)
        case "decompressed":
            let shard = try CompressedShard(path: job.source)
            try shard.decompress(to: job.destination, threads: threads, progress: progress)
        default:
            try AtomicFile.copy(from: job.source, to: job.destination)
            progress?(inSize)
        }
        result.outputBytes = fileSize(job.destination)
        return result
    }

    /// Recreates IN's directories in OUT (parents come first in `directories`).
    static func makeDirectories(_ directories: [String], in output: String) throws(CompressionError) {
        for relative in directories {
            let path = output + "/" + relative
            if mkdir(path, 0o755) != 0 && errno != EEXIST {
                throw CompressionError(.cannotCreateDirectory, file: path, "cannot create the directory: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Checks and claims a directory OUT: new or empty, or (`resume`) holding an unfinished run of this
    /// very input with these options.
    static func claimDirectory(_ input: String, _ output: String, plan: Plan, direction: Direction,
                               levels: ChunkCodec.Levels, resume: Bool) throws -> OutputClaim {
        var o = stat()
        if stat(output, &o) == 0 && (o.st_mode & S_IFMT) != S_IFDIR {
            throw CompressionError(.outputExists, file: output, "exists and is not a directory")
        }
        do {
            return try OutputClaim(output, stateName: stateDirectoryName, plan: fingerprint(plan.jobs, direction: direction, levels: levels),
                                   mode: resume ? .resume : .fresh, noun: "run", command: "moetool compress or decompress")
        } catch {
            throw CompressionError(.outputInUse, file: error.path, error.message)
        }
    }

    /// What identifies a run: the direction, the levels, and every input file with its size and modification time.
    static func fingerprint(_ jobs: [Job], direction: Direction, levels: ChunkCodec.Levels) -> String {
        var o = JSONObject()
        o.append("direction", .string(direction == .compress ? "compress" : "decompress"))
        if direction == .compress {
            o.append("exponent_level", .number(JSONNumber(Int(levels.exponent))))
            o.append("level", .number(JSONNumber(Int(levels.other))))
        }
        o.append("files", .array(jobs.map { job in
            var f = inputIdentity(name: job.name, path: job.source).objectValue!
            f.append("action", .string(job.action))
            return .object(f)
        }))
        return JSONSerializer.pretty(.object(o))
    }

    /// For a file a killed run already put in place: its statistics if it is complete and made from
    /// this very source, nil if it must be redone. Compressed and restored files are checked chunk by
    /// chunk against the checksums in the compressed shard's table, copies byte for byte, so a file of
    /// the same name from another input (another revision of the model, say) is never kept.
    static func finished(_ job: Job, threads: Int) -> ShardStats? {
        guard let made = try? MappedFile(path: job.destination), let source = try? MappedFile(path: job.source) else { return nil }
        switch job.action {
        case "compressed":
            guard let shard = try? CompressedShard(path: job.destination), shard.restores(source, threads: threads) else { return nil }
            return shard.statistics()
        case "decompressed":
            guard let shard = try? CompressedShard(path: job.source), shard.restores(made, threads: threads) else { return nil }
            return ShardStats()
        default:
            guard made.size == source.size, made.size == 0 || memcmp(made.bytes(0..<made.size).baseAddress!,
                                                                     source.bytes(0..<source.size).baseAddress!, Int(made.size)) == 0
            else { return nil }
            return ShardStats()
        }
    }

    static func writeManifest(_ summary: Summary, to path: String) throws {
        AtomicFile.removeStaleTemporaries(of: path, allWriters: true)  // a killed run's; we hold the lock
        var o = JSONObject()
        o.append("format", "moetool compressed checkpoint")
        o.append("shard_format_version", .number(JSONNumber(Int(CompressedFormat.version))))
        o.append("restore", "moetool decompress THIS_DIRECTORY OUTPUT")
        o.append("files", .array(summary.files.map { f in
            var m = JSONObject()
            m.append("name", .string(f.name))
            if f.action == "compressed" { m.append("stored_as", .string(f.name + CompressedLayout.fileSuffix)) }
            m.append("action", .string(f.action))
            m.append("original_bytes", .number(JSONNumber(f.inputBytes)))
            m.append("stored_bytes", .number(JSONNumber(f.outputBytes)))
            return .object(m)
        }))
        o.append("left_out", .array(summary.leftOut.map { .object(JSONObject([("name", .string($0.name)), ("reason", .string($0.reason))])) }))
        let file = try AtomicFile(path: path)
        do {
            try file.write(Array(JSONSerializer.pretty(.object(o)).utf8))
            try file.commit()
        } catch {
            file.abort()
            throw error
        }
    }

    static func fileSize(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
    }

    static func isSymlink(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
    }

    static func basename(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}
