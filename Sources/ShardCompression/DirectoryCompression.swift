import Checkpoint
import CKernels
import SafetensorsFormat
import StrictJSON
#if canImport(Glibc)
import Glibc
#endif

/// Compressing and restoring a single file or a checkpoint directory.
public enum DirectoryCompression {
    public static let manifestName = "moetool-compressed.json"

    public struct FileResult: Sendable {
        public var name: String
        /// compressed, decompressed or copied.
        public var action: String
        public var inputBytes: UInt64
        public var outputBytes: UInt64
        public var stats: ShardStats?
    }

    public struct Summary: Sendable {
        public var files: [FileResult] = []
        public var seconds: Double = 0
        /// Bytes of the uncompressed side: inputs when compressing, outputs when restoring.
        public var originalBytes: UInt64 { files.reduce(0) { $0 + ($1.action == "decompressed" ? $1.outputBytes : $1.inputBytes) } }
        public var compressedBytes: UInt64 { files.reduce(0) { $0 + ($1.action == "decompressed" ? $1.inputBytes : $1.action == "compressed" ? $1.outputBytes : $1.inputBytes) } }
    }

    public enum Direction: Sendable { case compress, decompress }

    /// What would be done: (source, destination, action) for every file, or an error.
    public static func plan(_ input: String, _ output: String, _ direction: Direction) throws(CompressionError)
        -> [(source: String, destination: String, name: String, action: String)]
    {
        var st = stat()
        guard stat(input, &st) == 0 else { throw CompressionError(input, "no such file or directory") }
        if (st.st_mode & S_IFMT) == S_IFREG {
            let isCompressed = CompressedShard.isCompressed(path: input)
            switch direction {
            case .compress:
                if isCompressed { throw CompressionError(input, "already compressed") }
            case .decompress:
                if !isCompressed { throw CompressionError(input, "not a moetool compressed shard (no magic number)") }
            }
            return [(input, output, basename(input), direction == .compress ? "compressed" : "decompressed")]
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw CompressionError(input, "not a file or directory") }
        var out: [(String, String, String, String)] = []
        for name in listDirectory(input).sorted() where !name.hasPrefix(".") {
            let source = input + "/" + name
            var s = stat()
            guard stat(source, &s) == 0, (s.st_mode & S_IFMT) == S_IFREG else { continue }
            if name == manifestName { continue }
            let action: String
            switch direction {
            case .compress:
                action = name.hasSuffix(".safetensors") ? "compressed" : "copied"
            case .decompress:
                action = CompressedShard.isCompressed(path: source) ? "decompressed" : "copied"
            }
            out.append((source, output + "/" + name, name, action))
        }
        if direction == .compress && !out.contains(where: { $0.3 == "compressed" }) {
            throw CompressionError(input, "no .safetensors files to compress")
        }
        return out
    }

    /// Compresses or restores `input` (a file or a checkpoint directory) into `output`, which
    /// must not exist yet or be an empty directory. Every file is written under a temporary name
    /// and renamed when complete; in a directory the manifest is written last.
    public static func run(_ input: String, _ output: String, _ direction: Direction, levels: ChunkCodec.Levels = .init(),
                           threads: Int = 0, progress: (@Sendable (UInt64) -> Void)? = nil) throws -> Summary {
        let start = monotonicSeconds()
        var st = stat()
        let isDirectory = stat(input, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
        let jobs = try plan(input, output, direction)
        if isDirectory {
            var o = stat()
            if stat(output, &o) == 0 {
                guard (o.st_mode & S_IFMT) == S_IFDIR, listDirectory(output).isEmpty else {
                    throw CompressionError(output, "exists and is not an empty directory; choose a new output")
                }
            } else if mkdir(output, 0o755) != 0 {
                throw CompressionError(output, "cannot create: \(String(cString: strerror(errno)))")
            }
            guard realPath(input) != realPath(output) else { throw CompressionError(output, "is the input directory") }
        } else {
            var o = stat()
            if stat(output, &o) == 0 { throw CompressionError(output, "exists; moetool never overwrites a file, choose a new output") }
        }
        var summary = Summary()
        for job in jobs {
            let inSize = fileSize(job.source)
            var result = FileResult(name: job.name, action: job.action, inputBytes: inSize, outputBytes: 0, stats: nil)
            switch job.action {
            case "compressed":
                result.stats = try ShardCompressor.compress(input: job.source, output: job.destination, levels: levels,
                                                            threads: threads, progress: progress)
            case "decompressed":
                let shard: CompressedShard
                do { shard = try CompressedShard(path: job.source) } catch { throw error }
                try shard.decompress(to: job.destination, threads: threads, progress: progress)
            default:
                try AtomicFile.copy(from: job.source, to: job.destination)
                progress?(inSize)
            }
            result.outputBytes = fileSize(job.destination)
            summary.files.append(result)
        }
        if isDirectory && direction == .compress {
            try writeManifest(summary, to: output + "/" + manifestName)
        }
        summary.seconds = monotonicSeconds() - start
        return summary
    }

    static func writeManifest(_ summary: Summary, to path: String) throws {
        var o = JSONObject()
        o.append("format", "moetool compressed checkpoint")
        o.append("shard_format_version", .number(JSONNumber(Int(CompressedFormat.version))))
        o.append("restore", "moetool decompress THIS_DIRECTORY OUTPUT")
        o.append("files", .array(summary.files.map { f in
            var m = JSONObject()
            m.append("name", .string(f.name))
            m.append("action", .string(f.action))
            m.append("original_bytes", .number(JSONNumber(f.inputBytes)))
            m.append("stored_bytes", .number(JSONNumber(f.outputBytes)))
            return .object(m)
        }))
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

    static func basename(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }


}
