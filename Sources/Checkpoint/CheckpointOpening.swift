import SafetensorsFormat
import Support

/// The phases of opening a checkpoint (Checkpoint.init), each a function of what the ones before found.
extension Checkpoint {
    /// Problems (the checkpoint is refused) and warnings (it loads, but something is worth a word), collected
    /// across the phases so that every one is reported, not only the first.
    struct Findings {
        var problems: [Problem] = []
        var warnings: [Warning] = []
    }

    /// Where the weights are: the layout, the directory, the shard names to open, the parsed index, and the
    /// shards already opened while the index was parsed.
    struct FoundShards {
        var layout: Layout
        var directory: String
        var shardNames: [String]
        var index: Index? = nil
        var preopened: [String: Result<SafetensorsFile, InvalidInput>] = [:]
    }

    static func findShards(path: String, root: String, isDirectory: Bool, _ findings: inout Findings) throws(InvalidInput) -> FoundShards {
        guard isDirectory else {
            let (dir, base) = splitDirectory(root)
            return FoundShards(layout: .singleFile, directory: dir, shardNames: [base])
        }
        if fileKind(join(root, Checkpoint.indexFileName)) != nil {
            return try findIndexedShards(root: root, &findings)
        }
        if fileKind(join(root, Checkpoint.singleFileName)) != nil
            || fileKind(join(root, Checkpoint.singleFileName + CompressedLayout.fileSuffix)) != nil {
            return FoundShards(layout: .singleFile, directory: root, shardNames: [Checkpoint.singleFileName])
        }
        let entries = listDirectory(root)
        // A compressed shard (`moetool compress`) is stored as NAME.safetensors.mz and named NAME.safetensors.
        let suffix = CompressedLayout.fileSuffix
        let safetensors = entries.compactMap { e in
            e.hasSuffix(".safetensors") ? e : e.hasSuffix(".safetensors" + suffix) ? String(e.dropLast(suffix.count)) : nil
        }.sorted()
        if safetensors.count == 1 {
            return FoundShards(layout: .singleFile, directory: root, shardNames: safetensors)
        }
        if entries.contains(where: { $0.hasSuffix(".bin") || $0.hasSuffix(".bin.index.json") || $0.hasSuffix(".pt") || $0.hasSuffix(".pth") }) {
            throw InvalidInput(Problem(file: path, rule: .binShard, "the directory holds PyTorch pickle weights (.bin/.pt), not safetensors"))
        }
        let detail = safetensors.isEmpty ? "no .safetensors file" : "\(safetensors.count) .safetensors files but no \(Checkpoint.indexFileName)"
        throw InvalidInput(Problem(file: path, rule: .noWeights, "\(detail) in the directory"))
    }

    /// A directory with an index: the index is parsed while the other cores already validate the shards the
    /// directory holds; the index then decides which of them count.
    static func findIndexedShards(root: String, _ findings: inout Findings) throws(InvalidInput) -> FoundShards {
        let indexPath = join(root, Checkpoint.indexFileName)
        let listing = listDirectory(root).filter { $0.hasSuffix(".safetensors") }.sorted()
        let jobs = parallelMap(listing.count + 1) { i -> Opened in
            if i == 0 {
                do throws(InvalidInput) {
                    return .index(try Checkpoint.readIndex(path: indexPath))
                } catch {
                    return .failed(error)
                }
            }
            return .shard(Checkpoint.openShard(join(root, listing[i - 1])))
        }
        var found = FoundShards(layout: .sharded, directory: root, shardNames: [])
        for (i, job) in jobs.enumerated() where i > 0 {
            if case .shard(let r) = job { found.preopened[listing[i - 1]] = r }
        }
        let index: Index
        switch jobs[0] {
        case .index(let x): index = x
        case .failed(let e): throw e
        case .shard: fatalError("unreachable")
        }
        if index.entries.count == 0 {
            throw InvalidInput(Problem(file: indexPath, rule: .indexEmpty,
                "weight_map is empty, though the directory holds \(listing.count) .safetensors file(s)"))
        }
        // Loaders read only the shards the index names: any other is left out, which is worth a word.
        let named = Set(index.shards)
        for name in listing where !named.contains(name) {
            findings.warnings.append(Warning(file: join(root, name), kind: .unlistedShard,
                "not named by the index's weight_map: loaders ignore it, and so does moetool"))
        }
        if index.totalSize == nil {
            findings.warnings.append(Warning(file: indexPath, kind: .noTotalSize, "index has no metadata.total_size; not checked"))
        }
        found.shardNames = index.shards.sorted()
        found.index = index
        return found
    }

    /// The shard names that may be opened. The index names shards by relative paths inside the directory; a
    /// symlink the directory holds is the user's (or the Hugging Face cache's) choice and is followed wherever
    /// it points.
    static func admissibleShardNames(_ names: [String], root: String, isDirectory: Bool, _ findings: inout Findings) -> [String] {
        var openable: [String] = []
        for name in names {
            let display = isDirectory ? join(root, Checkpoint.storedName(name, in: root)) : root
            if name.hasSuffix(".bin") || name.hasSuffix(".pt") || name.hasSuffix(".pth") {
                findings.problems.append(Problem(file: display, rule: .binShard, "shard is a PyTorch pickle file, not safetensors"))
                continue
            }
            if isDirectory {
                if name.utf8.contains(0) {
                    findings.problems.append(Problem(file: join(root, Checkpoint.indexFileName), rule: .invalidShardName,
                        "shard name \"\(escapeForDisplay(name))\" holds a NUL byte"))
                    continue
                }
                if name.isEmpty || name.hasPrefix("/") || name.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
                    findings.problems.append(Problem(file: display, rule: .shardPathEscapes,
                        "shard name \"\(escapeForDisplay(name))\" leaves the checkpoint directory"))
                    continue
                }
            }
            if let problem = Checkpoint.downloadProblem(display) {
                findings.problems.append(problem)
                continue
            }
            openable.append(name)
        }
        return openable
    }

    /// Opens and validates the shards (in parallel; those opened while the index was parsed are reused).
    static func openShards(_ openable: [String], root: String, isDirectory: Bool,
                           preopened: [String: Result<SafetensorsFile, InvalidInput>],
                           _ findings: inout Findings) -> (files: [SafetensorsFile], names: [String]) {
        let toOpen = openable.filter { preopened[$0] == nil }
        let opened = parallelMap(toOpen.count) { i in
            Checkpoint.openShard(isDirectory ? join(root, Checkpoint.storedName(toOpen[i], in: root)) : root)
        }
        var results = preopened
        for (name, r) in zip(toOpen, opened) { results[name] = r }
        var files: [SafetensorsFile] = []
        var names: [String] = []
        for name in openable {
            switch results[name]! {
            case .success(let f):
                files.append(f)
                names.append(name)
                findings.warnings.append(contentsOf: f.header.warnings)
            case .failure(let e):
                findings.problems.append(contentsOf: e.problems)
            }
        }
        return (files, names)
    }

    /// One table says where each name is listed and where it is stored: a name stored twice, or listed in
    /// another shard than the one storing it, is an error; stored but not listed is a warning.
    static func placeTensors(_ files: [SafetensorsFile], names: [String], directory: String, index: inout Index?,
                             _ findings: inout Findings) -> NameTable<Slot> {
        var location = index?.entries ?? NameTable<Slot>(minimumCapacity: files.reduce(0) { $0 + $1.tensors.count })
        index?.entries = NameTable()  // hand the table over without a copy-on-write copy
        let shards = index?.shards ?? []
        let listedIndex: [String: Int32] = Dictionary(uniqueKeysWithValues: shards.enumerated().map { ($1, Int32($0)) })
        let sharded = index != nil
        // Look every stored name up in parallel (reads only), then record serially.
        let table = location
        let found = parallelMap(files.count) { fi in
            files[fi].tensors.map { t in table.index(of: t.name).map { Int32($0) } ?? -1 }
        }
        for (fi, f) in files.enumerated() {
            let here = listedIndex[names[fi]] ?? -1
            let display = join(directory, names[fi])
            for (ti, t) in f.tensors.enumerated() {
                func record(_ slot: inout Slot) {
                    if slot.file >= 0 {
                        findings.problems.append(Problem(file: display, tensor: t.name, rule: .tensorInTwoShards,
                            "also stored in \(names[Int(slot.file)])"))
                        return
                    }
                    slot.file = Int32(fi)
                    slot.tensor = Int32(ti)
                    guard sharded else { return }
                    if slot.listed < 0 {
                        // Loaders load what the weight_map names; this tensor is left behind, and nothing else is wrong.
                        findings.warnings.append(Warning(file: display, tensor: t.name, kind: .tensorNotInWeightMap,
                            "stored in this shard but absent from the index's weight_map: loaders do not load it"))
                    } else if slot.listed != here {
                        findings.problems.append(Problem(file: display, tensor: t.name, rule: .tensorMissingFromShard,
                            "the index says it is in \(escapeForDisplay(shards[Int(slot.listed)])), but it is stored here"))
                    }
                }
                let e = found[fi][ti]
                record(&location.values[e >= 0 ? Int(e) : location.insert(t.name, Slot()).index])
            }
        }
        return location
    }

    /// Names the index lists in an opened shard that does not store them; and total_size, which loaders never
    /// read (a wrong one is worth a word, not a refusal).
    static func checkIndex(_ index: Index, against location: NameTable<Slot>, files: [SafetensorsFile], names: [String],
                           directory: String, _ findings: inout Findings) {
        let opened = Set(names)
        var absent: [Problem] = []
        for (e, slot) in location.values.enumerated() where slot.file < 0 && slot.listed >= 0 {
            let shard = index.shards[Int(slot.listed)]
            guard opened.contains(shard) else { continue }
            absent.append(Problem(file: join(directory, shard), tensor: location.key(at: e), rule: .tensorMissingFromShard,
                "listed in the index's weight_map but not stored in this shard"))
        }
        findings.problems.append(contentsOf: absent.sorted { ($0.file, $0.tensor ?? "") < ($1.file, $1.tensor ?? "") })
        if let totalSize = index.totalSize, findings.problems.isEmpty {
            let sum = files.reduce(0) { $0 + $1.header.dataBytes }
            if sum != totalSize {
                findings.warnings.append(Warning(file: join(directory, Checkpoint.indexFileName), kind: .totalSizeMismatch,
                    "metadata.total_size is \(totalSize) but the shards hold \(sum) bytes of tensor data"))
            }
        }
    }

    /// config.json beside the weights, if any, and the block size its quantization_config declares.
    static func readConfig(in directory: String, _ findings: inout Findings) -> (ModelConfig?, String?, BlockShape?) {
        let candidate = join(directory, Checkpoint.configFileName)
        guard fileKind(candidate) == .regular else { return (nil, nil, nil) }
        var config: ModelConfig? = nil
        var configPath: String? = nil
        var declaredBlock: BlockShape? = nil
        do throws(InvalidInput) {
            config = ModelConfig(try ConfigReader.read(path: candidate, displayName: candidate))
            configPath = candidate
        } catch {
            findings.problems.append(contentsOf: error.problems)
        }
        do throws(Problem) {
            declaredBlock = try config?.declaredBlockShape()
        } catch {
            findings.problems.append(Problem(file: candidate, rule: error.rule, error.message))
        }
        return (config, configPath, declaredBlock)
    }
}
