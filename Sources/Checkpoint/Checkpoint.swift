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

    /// Opens and validates `path`, listing every problem found when it is refused.
    public init(path: String) throws(InvalidInput) {
        self.path = path
        let root = stripTrailingSlash(path)
        var problems: [Problem] = []
        var warnings: [Warning] = []

        guard let kind = fileKind(root) else {
            throw InvalidInput(Problem(file: path, rule: .unreadable, "no such file or directory"))
        }
        var shardNames: [String]
        var index: Index? = nil
        var totalSize: UInt64? = nil
        var preopened: [String: Result<SafetensorsFile, InvalidInput>] = [:]
        if kind == .directory {
            directory = root
            let indexPath = join(root, Checkpoint.indexFileName)
            if fileKind(indexPath) != nil {
                layout = .sharded
                // Parse the index while the other cores already validate the shards
                // the directory holds; the index then decides which of them count.
                let listing = listDirectory(root).filter { $0.hasSuffix(".safetensors") }.sorted()
                let dir = root
                let jobs = parallelMap(listing.count + 1) { i -> Opened in
                    if i == 0 {
                        do throws(InvalidInput) {
                            return .index(try Checkpoint.readIndex(path: indexPath))
                        } catch {
                            return .failed(error)
                        }
                    }
                    return .shard(Checkpoint.openShard(join(dir, listing[i - 1])))
                }
                for (i, job) in jobs.enumerated() where i > 0 {
                    if case .shard(let r) = job { preopened[listing[i - 1]] = r }
                }
                let parsed: Index
                switch jobs[0] {
                case .index(let x): parsed = x
                case .failed(let e): throw e
                case .shard: fatalError("unreachable")
                }
                totalSize = parsed.totalSize
                if parsed.entries.count == 0 {
                    throw InvalidInput(Problem(file: indexPath, rule: .indexEmpty,
                        "weight_map is empty, though the directory holds \(listing.count) .safetensors file(s)"))
                }
                // Loaders read only the shards the index names: any other is left out, which is worth a word.
                let named = Set(parsed.shards)
                for name in listing where !named.contains(name) {
                    warnings.append(Warning(file: join(root, name), kind: .unlistedShard,
                        "not named by the index's weight_map: loaders ignore it, and so does moetool"))
                }
                if totalSize == nil {
                    warnings.append(Warning(file: indexPath, kind: .noTotalSize, "index has no metadata.total_size; not checked"))
                }
                shardNames = parsed.shards.sorted()
                index = parsed
            } else if fileKind(join(root, Checkpoint.singleFileName)) != nil
                        || fileKind(join(root, Checkpoint.singleFileName + CompressedLayout.fileSuffix)) != nil {
                layout = .singleFile
                shardNames = [Checkpoint.singleFileName]
            } else {
                let entries = listDirectory(root)
                let suffix = CompressedLayout.fileSuffix
                let safetensors = entries.compactMap { e in
                    e.hasSuffix(".safetensors") ? e : e.hasSuffix(".safetensors" + suffix) ? String(e.dropLast(suffix.count)) : nil
                }.sorted()
                if safetensors.count == 1 {
                    layout = .singleFile
                    shardNames = safetensors
                } else if entries.contains(where: { $0.hasSuffix(".bin") || $0.hasSuffix(".bin.index.json") || $0.hasSuffix(".pt") || $0.hasSuffix(".pth") }) {
                    throw InvalidInput(Problem(file: path, rule: .binShard,
                        "the directory holds PyTorch pickle weights (.bin/.pt), not safetensors"))
                } else {
                    let detail = safetensors.isEmpty ? "no .safetensors file" : "\(safetensors.count) .safetensors files but no \(Checkpoint.indexFileName)"
                    throw InvalidInput(Problem(file: path, rule: .noWeights, "\(detail) in the directory"))
                }
            }
        } else {
            layout = .singleFile
            let (dir, base) = splitDirectory(root)
            directory = dir
            shardNames = [base]
        }

        // The index names shards by relative paths inside the directory. A symlink the directory holds is the
        // user's (or the Hugging Face cache's) choice and is followed wherever it points.
        var openable: [String] = []
        for name in shardNames {
            let display = kind == .directory ? join(root, Checkpoint.storedName(name, in: root)) : root
            if name.hasSuffix(".bin") || name.hasSuffix(".pt") || name.hasSuffix(".pth") {
                problems.append(Problem(file: display, rule: .binShard, "shard is a PyTorch pickle file, not safetensors"))
                continue
            }
            if kind == .directory {
                if name.utf8.contains(0) {
                    problems.append(Problem(file: join(root, Checkpoint.indexFileName), rule: .invalidShardName,
                        "shard name \"\(escapeForDisplay(name))\" holds a NUL byte"))
                    continue
                }
                if name.isEmpty || name.hasPrefix("/") || name.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
                    problems.append(Problem(file: display, rule: .shardPathEscapes,
                        "shard name \"\(escapeForDisplay(name))\" leaves the checkpoint directory"))
                    continue
                }
            }
            if let problem = Checkpoint.downloadProblem(display) {
                problems.append(problem)
                continue
            }
            openable.append(name)
        }

        // Open and validate shards in parallel.
        let isDirectory = kind == .directory
        let toOpen = openable.filter { preopened[$0] == nil }
        let opened = parallelMap(toOpen.count) { i in
            Checkpoint.openShard(isDirectory ? join(root, Checkpoint.storedName(toOpen[i], in: root)) : root)
        }
        for (name, r) in zip(toOpen, opened) { preopened[name] = r }
        let results = openable.map { preopened[$0]! }
        var files: [SafetensorsFile] = []
        var names: [String] = []
        for (i, r) in results.enumerated() {
            switch r {
            case .success(let f):
                files.append(f)
                names.append(openable[i])
                warnings.append(contentsOf: f.header.warnings)
            case .failure(let e):
                problems.append(contentsOf: e.problems)
            }
        }

        // One dictionary says where each name is listed and where it is stored:
        // a name stored twice, stored but not listed, or listed elsewhere is an error.
        var location = index?.entries ?? NameTable<Slot>(minimumCapacity: files.reduce(0) { $0 + $1.tensors.count })
        index?.entries = NameTable()  // hand the table over without a copy-on-write copy
        let listedIndex: [String: Int32] = Dictionary(
            uniqueKeysWithValues: (index?.shards ?? []).enumerated().map { ($1, Int32($0)) })
        let sharded = index != nil
        // Look every stored name up in parallel (reads only), then record serially.
        let found: [[Int32]]
        do {
            let table = location
            let shardFiles = files
            found = parallelMap(shardFiles.count) { fi in
                shardFiles[fi].tensors.map { t in table.index(of: t.name).map { Int32($0) } ?? -1 }
            }
        }
        for (fi, f) in files.enumerated() {
            let here = listedIndex[names[fi]] ?? -1
            let display = join(directory, names[fi])
            for (ti, t) in f.tensors.enumerated() {
                func record(_ slot: inout Slot) {
                    if slot.file >= 0 {
                        problems.append(Problem(file: display, tensor: t.name, rule: .tensorInTwoShards,
                            "also stored in \(names[Int(slot.file)])"))
                        return
                    }
                    slot.file = Int32(fi)
                    slot.tensor = Int32(ti)
                    guard sharded else { return }
                    if slot.listed < 0 {
                        // Loaders load what the weight_map names; this tensor is left behind, and nothing else is wrong.
                        warnings.append(Warning(file: display, tensor: t.name, kind: .tensorNotInWeightMap,
                            "stored in this shard but absent from the index's weight_map: loaders do not load it"))
                    } else if slot.listed != here {
                        problems.append(Problem(file: display, tensor: t.name, rule: .tensorMissingFromShard,
                            "the index says it is in \(escapeForDisplay(index!.shards[Int(slot.listed)])), but it is stored here"))
                    }
                }
                let e = found[fi][ti]
                record(&location.values[e >= 0 ? Int(e) : location.insert(t.name, Slot()).index])
            }
        }

        if let index {
            let opened = Set(names)
            var absent: [Problem] = []
            for (e, slot) in location.values.enumerated() where slot.file < 0 && slot.listed >= 0 {
                let name = location.key(at: e)
                let shard = index.shards[Int(slot.listed)]
                guard opened.contains(shard) else { continue }
                absent.append(Problem(file: join(directory, shard), tensor: name, rule: .tensorMissingFromShard,
                    "listed in the index's weight_map but not stored in this shard"))
            }
            problems.append(contentsOf: absent.sorted { ($0.file, $0.tensor ?? "") < ($1.file, $1.tensor ?? "") })
            // Loaders never read total_size: a wrong one is worth a word, not a refusal.
            if let totalSize, problems.isEmpty {
                let sum = files.reduce(0) { $0 + $1.header.dataBytes }
                if sum != totalSize {
                    warnings.append(Warning(file: join(directory, Checkpoint.indexFileName), kind: .totalSizeMismatch,
                        "metadata.total_size is \(totalSize) but the shards hold \(sum) bytes of tensor data"))
                }
            }
        }

        // config.json beside the weights.
        var config: ModelConfig? = nil
        var configPath: String? = nil
        var declaredBlock: BlockShape? = nil
        let candidate = join(directory, Checkpoint.configFileName)
        if fileKind(candidate) == .regular {
            do throws(InvalidInput) {
                config = ModelConfig(try ConfigReader.read(path: candidate, displayName: candidate))
                configPath = candidate
            } catch {
                problems.append(contentsOf: error.problems)
            }
            do throws(Problem) {
                declaredBlock = try config?.declaredBlockShape()
            } catch {
                problems.append(Problem(file: candidate, rule: error.rule, error.message))
            }
        }

        guard problems.isEmpty else { throw InvalidInput(problems) }
        self.files = files
        self.fileNames = names
        self.indexTotalSize = totalSize
        self.config = config
        self.configPath = configPath
        self.declaredBlock = declaredBlock
        self.warnings = warnings
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

    /// Reads `model.safetensors.index.json` strictly: a repeated tensor name is an error.
    static func readIndex(path: String) throws(InvalidInput) -> Index {
        let mapping: MappedFile
        do {
            mapping = try mapFile(path)
            // DeepSeek-V3's index is 9 MB; a gigabyte is not an index but an attack or an accident.
            guard mapping.size <= Checkpoint.maxIndexBytes else {
                throw InvalidInput(Problem(file: path, rule: .indexInvalid,
                    "index is \(mapping.size) bytes, above the limit of \(Checkpoint.maxIndexBytes)"))
            }
        } catch let e as InvalidInput {
            throw e
        } catch {
            throw InvalidInput(Problem(file: path, rule: .unreadable, "\(error)"))
        }
        // Walk the document directly: weight_map can hold ~100k entries, and a
        // generic tree of them would cost more than everything else in `inspect`.
        var entries: NameTable<Slot>? = nil
        var shards: [String] = []
        var metadata: JSONValue? = nil
        do {
            try { (buf: UnsafeRawBufferPointer) throws in
                try JSONParser.checkEncoding(buf)
                var scanner = JSONScanner(buf)
                scanner.skipWhitespace()
                guard scanner.peek() == UInt8(ascii: "{") else {
                    throw Problem(file: path, rule: .indexInvalid, "index must be a JSON object")
                }
                var seen = Set<String>()
                try scanner.scanObject(depth: 1) { s, key, offset in
                    guard seen.insert(key).inserted else {
                        throw JSONError(.duplicateKey, at: offset, "duplicate key \"\(key)\"")
                    }
                    switch key {
                    case "weight_map":
                        guard s.peek() == UInt8(ascii: "{") else {
                            throw Problem(file: path, rule: .indexInvalid, "\"weight_map\" must be an object")
                        }
                        // Keys stay in the mapped index: no String per tensor name.
                        var map = NameTable<Slot>(minimumCapacity: min(buf.count / 80, 1 << 20), backing: mapping, bytes: buf)
                        var shardIndex: [String: Int32] = [:]
                        var last = ""
                        var lastIndex: Int32 = -1
                        try s.scanObjectRawKeys(depth: 2) { s, name, offset in
                            guard s.peek() == UInt8(ascii: "\"") else {
                                let found = try s.parseValue(depth: 3)
                                throw Problem(file: path, tensor: String(decoding: name, as: UTF8.self), rule: .indexInvalid,
                                    "weight_map value must be a shard file name, found \(found.kindName)")
                            }
                            // Runs of names share a shard: reuse it without hashing.
                            let shard = try s.parseString(reusing: last)
                            if lastIndex < 0 || shard != last {
                                if let known = shardIndex[shard] {
                                    lastIndex = known
                                } else {
                                    lastIndex = Int32(shards.count)
                                    shardIndex[shard] = lastIndex
                                    shards.append(shard)
                                }
                                last = shard
                            }
                            guard map.insert(bytes: name, Slot(listed: lastIndex)).inserted else {
                                throw Problem(file: path, tensor: String(decoding: name, as: UTF8.self), rule: .indexInvalidJSON,
                                    "tensor listed twice in weight_map (byte \(offset))")
                            }
                        }
                        entries = map
                    case "metadata":
                        metadata = try s.parseValue(depth: 2)
                    default:
                        _ = try s.parseValue(depth: 2)
                    }
                }
                try scanner.expectEndOfDocument()
            }(mapping.bytes(0..<mapping.size))
        } catch let p as Problem {
            throw InvalidInput(p)
        } catch {
            throw InvalidInput(Problem(file: path, rule: .indexInvalidJSON, "\(error)"))
        }
        guard let entries else {
            throw InvalidInput(Problem(file: path, rule: .indexInvalid, "index has no \"weight_map\" object"))
        }
        var totalSize: UInt64? = nil
        if let metadata, metadata != .null {
            guard let m = metadata.objectValue else {
                throw InvalidInput(Problem(file: path, rule: .indexInvalid, "\"metadata\" must be an object"))
            }
            if let t = m["total_size"], t != .null {
                // Some exporters write total_size as a float; accept it when it is integral.
                if let u = t.uint64Value {
                    totalSize = u
                } else if let d = t.doubleValue, d >= 0, d == d.rounded(), d < 1.8e19 {
                    totalSize = UInt64(d)
                } else {
                    throw InvalidInput(Problem(file: path, rule: .indexInvalid,
                        "metadata.total_size must be a byte count, found \(t)"))
                }
            }
        }
        return Index(entries: entries, shards: shards, totalSize: totalSize)
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
