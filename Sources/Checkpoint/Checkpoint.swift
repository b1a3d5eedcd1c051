import SafetensorsFormat
import StrictJSON

#if canImport(Glibc)
import Glibc
import Support
#endif

/// A model checkpoint: one safetensors file, a directory holding `model.safetensors`,
/// or a directory of shards described by `model.safetensors.index.json`. Opening
/// validates every shard's header and the index against the shards' contents.
public final class Checkpoint: @unchecked Sendable {
    public static let indexFileName = "model.safetensors.index.json"
    public static let singleFileName = "model.safetensors"
    public static let configFileName = "config.json"
    /// Largest index and config.json read (both are read whole).
    public static let maxIndexBytes: UInt64 = 1 << 30
    public static let maxConfigBytes: UInt64 = 64 << 20

    public enum Layout: String, Sendable {
        case singleFile = "single_file"
        case sharded = "sharded"
    }

    /// The path the user gave.
    public let path: String
    /// The directory holding the weights (and config.json).
    public let directory: String
    public let layout: Layout
    /// Shards in the order they are listed (sorted by name).
    public let files: [SafetensorsFile]
    /// Each shard's name relative to `directory`, as the index names it (a compressed shard's file adds ".mz":
    /// `storedFileName`).
    public let fileNames: [String]
    /// `metadata.total_size` from the index, when present.
    public let indexTotalSize: UInt64?
    public let config: ModelConfig?
    public let configPath: String?
    /// quantization_config.weight_block_size, validated (nil: none declared).
    public let declaredBlock: BlockShape?
    public let warnings: [Warning]
    private let location: NameTable<Slot>

    /// Where a tensor name was found: the shard the index lists it in (-1: not listed,
    /// or no index), and the file and position that store it (-1: not stored).
    struct Slot: Sendable {
        var listed: Int32 = -1
        var file: Int32 = -1
        var tensor: Int32 = -1
    }

    public struct Located: Sendable {
        public let file: Int
        public let tensor: TensorInfo

        public init(file: Int, tensor: TensorInfo) {
            self.file = file
            self.tensor = tensor
        }
    }

    /// Every tensor with the index of its file, shard by shard in data order.
    public var allTensors: [Located] {
        var out: [Located] = []
        out.reserveCapacity(tensorCount)
        for (i, f) in files.enumerated() {
            for t in f.tensors { out.append(Located(file: i, tensor: t)) }
        }
        return out
    }

    public var tensorCount: Int { files.reduce(0) { $0 + $1.tensors.count } }
    public var dataBytes: UInt64 { files.reduce(0) { $0 + $1.header.dataBytes } }
    public var fileBytes: UInt64 { files.reduce(0) { $0 + $1.size } }

    /// Finds a tensor wherever it lives (DeepSeek keeps some scales in another shard than their weight).
    public func locate(_ name: String) -> Located? {
        located(location.index(of: name))
    }

    /// Finds `name + suffix` (a weight's `_scale_inv`, say) without building the string.
    public func locate(_ name: String, suffix: StaticString) -> Located? {
        var name = name
        return name.withUTF8 { base in
            let n = base.count + suffix.utf8CodeUnitCount
            return withUnsafeTemporaryAllocation(byteCount: n, alignment: 1) { buffer in
                buffer.copyMemory(from: UnsafeRawBufferPointer(base))
                (buffer.baseAddress! + base.count).copyMemory(from: suffix.utf8Start, byteCount: suffix.utf8CodeUnitCount)
                return located(location.index(ofBytes: UnsafeRawBufferPointer(buffer)))
            }
        }
    }

    private func located(_ index: Int?) -> Located? {
        guard let i = index else { return nil }
        let loc = location.values[i]
        guard loc.file >= 0 else { return nil }
        return Located(file: Int(loc.file), tensor: files[Int(loc.file)].tensors[Int(loc.tensor)])
    }

    public func file(_ located: Located) -> SafetensorsFile { files[located.file] }

    /// Opens and validates `path`, listing every problem found when it is refused. The phases: find the
    /// shards (the index, or the single file), check their names, open and validate them in parallel, place
    /// every tensor name (listed where, stored where), check the index against what is stored, read config.json.
    public init(path: String) throws(InvalidInput) {
        self.path = path
        let root = stripTrailingSlash(path)
        guard let kind = fileKind(root) else {
            throw InvalidInput(Problem(file: path, rule: .unreadable, "no such file or directory"))
        }
        var findings = Findings()
        var found = try Checkpoint.findShards(path: path, root: root, isDirectory: kind == .directory, &findings)
        layout = found.layout
        directory = found.directory
        let openable = Checkpoint.admissibleShardNames(found.shardNames, root: root, isDirectory: kind == .directory, &findings)
        let (files, names) = Checkpoint.openShards(openable, root: root, isDirectory: kind == .directory,
                                                   preopened: found.preopened, &findings)
        let location = Checkpoint.placeTensors(files, names: names, directory: found.directory, index: &found.index, &findings)
        if let index = found.index {
            Checkpoint.checkIndex(index, against: location, files: files, names: names, directory: found.directory, &findings)
        }
        let (config, configPath, declaredBlock) = Checkpoint.readConfig(in: found.directory, &findings)

        guard findings.problems.isEmpty else { throw InvalidInput(findings.problems) }
        self.files = files
        self.fileNames = names
        self.indexTotalSize = found.index?.totalSize
        self.config = config
        self.configPath = configPath
        self.declaredBlock = declaredBlock
        self.warnings = findings.warnings
        self.location = location
    }

    /// The file that holds the shard the index (or the directory) calls `name`: `name` itself, or, when only
    /// `moetool compress` output is there, `name` + ".mz" (compressed shards keep the index and their names
    /// but carry the suffix, so that no loader takes them for safetensors).
    static func storedName(_ name: String, in root: String) -> String {
        let compressed = name + CompressedLayout.fileSuffix
        return fileKind(join(root, name)) == nil && fileKind(join(root, compressed)) != nil ? compressed : name
    }

    /// Name `i` as it is stored: `fileNames[i]`, with ".mz" when it is a compressed shard stored that way.
    public func storedFileName(_ i: Int) -> String {
        let suffix = CompressedLayout.fileSuffix
        return files[i].path.hasSuffix(fileNames[i] + suffix) ? fileNames[i] + suffix : fileNames[i]
    }

    /// Why the shard at `path` cannot be read though the index names it: absent, a link to nothing (a blob
    /// never downloaded), or a link to an unfinished download; nil when it is there.
    static func downloadProblem(_ path: String) -> Problem? {
        if let target = symlinkTarget(path), fileKind(path) == nil {
            return Problem(file: path, rule: .shardNotDownloaded,
                "is a link to \(escapeForDisplay(target)), which does not exist: the file was never downloaded, or its download did not finish")
        }
        guard fileKind(path) != nil else {
            return Problem(file: path, rule: .shardMissing, "shard listed in the index does not exist")
        }
        if isSymlink(path), let real = realPath(path), real.hasSuffix(".incomplete") {
            return Problem(file: path, rule: .shardNotDownloaded, "is a link to an unfinished download (\(escapeForDisplay(real)))")
        }
        return nil
    }

    enum Opened {
        case index(Index)
        case shard(Result<SafetensorsFile, InvalidInput>)
        case failed(InvalidInput)
    }

    static func openShard(_ path: String) -> Result<SafetensorsFile, InvalidInput> {
        do throws(InvalidInput) {
            return .success(try SafetensorsFile(path: path))
        } catch {
            return .failure(error)
        }
    }

    struct Index {
        /// Every name of the weight_map, with `listed` set to its shard's position in `shards`.
        var entries: NameTable<Slot>
        /// Shard names in order of first appearance.
        var shards: [String]
        var totalSize: UInt64?
    }
}

// MARK: Paths

enum FileKind { case regular, directory, other }

func fileKind(_ path: String) -> FileKind? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    switch st.st_mode & S_IFMT {
    case S_IFREG: return .regular
    case S_IFDIR: return .directory
    default: return .other
    }
}

/// Where the symlink at `path` points, as written in it, or nil when `path` is not a symlink.
func symlinkTarget(_ path: String) -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink(path, &buffer, buffer.count - 1)
    guard n >= 0 else { return nil }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func isSymlink(_ path: String) -> Bool {
    var st = stat()
    guard lstat(path, &st) == 0 else { return false }
    return st.st_mode & S_IFMT == S_IFLNK
}

public func realPath(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
}


/// What a resumable run records of one input file so that a resume from a changed input is refused:
/// its name, size and modification time (nanoseconds). Two revisions of a model often have shards of
/// the same names and sizes; they are not written in the same nanosecond.
public func inputIdentity(name: String, path: String) -> JSONValue {
    var st = stat()
    _ = stat(path, &st)
    return .object(JSONObject([
        ("name", .string(name)), ("bytes", .int(Int(st.st_size))),
        ("mtime_ns", .int(Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec))),
    ]))
}

/// Seconds on a clock that only goes forward, for timing.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

public func join(_ dir: String, _ name: String) -> String {
    if dir.isEmpty || dir == "." { return name }
    return dir.hasSuffix("/") ? dir + name : dir + "/" + name
}

func stripTrailingSlash(_ path: String) -> String {
    var p = path
    while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
    return p
}

func splitDirectory(_ path: String) -> (String, String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let dir = String(path[..<slash])
    return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
}
