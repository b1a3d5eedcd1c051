// Fuzz targets for every reader of untrusted bytes. Built two ways:
//  - normally: `moetool-fuzz TARGET FILE...` runs files through a target (reproducing a crash, or
//    replaying a corpus in the regression tests);
//  - for libFuzzer (Scripts/fuzz.sh): with -sanitize=fuzzer,address and -DFUZZING, the target named by
//    the MOETOOL_FUZZ_TARGET environment variable is fed by libFuzzer.
import Checkpoint
import ExpertPlacement
import PlacementFiles
import SafetensorsFormat
import ShardCompression
import TorchArchive
#if canImport(Glibc)
import Glibc
#endif

enum FuzzTarget: String, CaseIterable {
    /// The safetensors 8-byte prefix and header JSON, validated as a file of these bytes.
    case header
    /// Expert load profiles: JSON, SGLang's logical_count, CSV, zstd.
    case profile
    /// The compressed shard format: magic, table, tail, and decoding every chunk.
    case compressed
    /// torch.save files: the zip, the pickle machine, tensor views; then as a profile file
    /// (recognised by content, SGLang's dump read and summed).
    case pt
    /// config.json through json-c.
    case config
    /// model.safetensors.index.json, cross-checked against two real shards beside it.
    case index

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .header:
            guard bytes.count >= 8 else { return }
            let prefix = bytes.loadUnaligned(as: UInt64.self).littleEndian
            guard let n = try? HeaderParser.headerLength(prefix: prefix, fileSize: UInt64(bytes.count), file: "fuzz") else { return }
            _ = try? HeaderParser.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + Int(n))]), fileSize: UInt64(bytes.count), file: "fuzz")
        case .profile:
            var data = Array(bytes)
            if data.starts(with: LoadProfile.zstdMagic) {
                guard let d = try? LoadProfile.decompress(data, path: "fuzz") else { return }
                data = d
            }
            _ = try? LoadProfile.parse(data, name: "fuzz")
        case .pt:
            let data = Array(bytes)
            // A zip goes through the whole reader; anything else is run as a bare data.pkl with one
            // 64-byte storage "0" (the zip's CRC-32 would keep mutations out of data.pkl).
            let value = data.starts(with: TorchArchive.zipMagic)
                ? try? TorchArchive.read(data, file: "fuzz")
                : try? TorchArchive.unpickle(data[...], storages: ["0": ArraySlice(repeating: 7, count: 64)], file: "fuzz")
            if case .dict(let entries)? = value {
                for e in entries.prefix(16) { if case .tensor(let t) = e.value { _ = t.values().reduce(0, +) } }
            }
            withScratchFile(bytes) { path in _ = try? LoadProfile.read(path: path) }
        case .compressed:
            withScratchFile(bytes) { path in
                guard let shard = try? CompressedShard(path: path) else { return }
                for t in shard.tensors.prefix(64) { _ = try? shard.data(t) }
            }
        case .config:
            withScratchFile(bytes) { path in _ = try? ConfigReader.read(path: path, displayName: "fuzz") }
        case .index:
            guard let dir = IndexScratch.directory else { return }
            let path = dir + "/model.safetensors.index.json"
            IndexScratch.write(bytes, to: path)
            if let checkpoint = try? Checkpoint(path: dir) {
                for name in IndexScratch.tensorNames { _ = checkpoint.locate(name) }
            }
            unlink(path)
        }
    }

    /// Readers that take a path get the bytes in a file on tmpfs.
    func withScratchFile(_ bytes: UnsafeRawBufferPointer, _ body: (String) -> Void) {
        let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        let path = "\(dir)/moetool-fuzz-\(getpid())-\(rawValue)"
        IndexScratch.write(bytes, to: path)
        body(path)
        unlink(path)
    }
}

/// A directory holding two small shards (written once per process) for the index target.
/// Fuzz/corpus/index is seeded with an index that matches them.
enum IndexScratch {
    static let tensorNames = ["model.embed_tokens.weight", "model.layers.0.mlp.gate.weight",
                              "model.layers.0.mlp.experts.0.down_proj.weight", "lm_head.weight"]
    static let shardNames = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]

    static let directory: String? = {
        let dir = (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/moetool-fuzz-\(getpid())-index"
        mkdir(dir, 0o700)
        for (k, shard) in shardNames.enumerated() {
            let names = tensorNames[(2 * k)..<(2 * k + 2)]
            let specs = names.map { TensorSpec(name: $0, dtype: .BF16, shape: [4, 8]) }
            guard (try? SafetensorsWriter.write(to: dir + "/" + shard, tensors: specs, metadata: [(key: "format", value: "pt")], produce: { _, sink in
                try sink.write([UInt8](repeating: 0x3F, count: 64))
            })) != nil else { return nil }
        }
        atexit {
            guard let dir = IndexScratch.directory else { return }
            for name in IndexScratch.shardNames + ["model.safetensors.index.json"] { unlink(dir + "/" + name) }
            rmdir(dir)
        }
        return dir
    }()

    static func write(_ bytes: UnsafeRawBufferPointer, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n <= 0 { break }
            done += n
        }
        close(fd)
    }
}

#if FUZZING
nonisolated(unsafe) let selected: FuzzTarget = {
    let name = getenv("MOETOOL_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let t = FuzzTarget(rawValue: name) else {
        print("set MOETOOL_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        exit(2)
    }
    return t
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's entry for programs that have their own main (SwiftPM links the executable's main).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

@main
enum Fuzz {
    static func main() {
        _ = selected
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, { fuzzOne($0, $1) }))
    }
}
#else
@main
enum Replay {
    static func main() {
        let args = CommandLine.arguments
        guard args.count >= 3, let target = FuzzTarget(rawValue: args[1]) else {
            print("usage: moetool-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE...")
            exit(2)
        }
        for path in args.dropFirst(2) {
            guard let m = try? MappedFile(path: path) else { print("\(path): unreadable"); continue }
            target.run(m.bytes(0..<m.size))
            print("\(path): ok")
        }
    }
}
#endif
