// Fuzz targets for every reader of untrusted bytes. Built two ways:
//  - normally: `moetool-fuzz TARGET FILE...` runs files through a target (reproducing a crash, or
//    replaying a corpus in the regression tests);
//  - for libFuzzer (Scripts/fuzz.sh): with -sanitize=fuzzer,address and -DFUZZING, the target named by
//    the MOETOOL_FUZZ_TARGET environment variable is fed by libFuzzer.
import Checkpoint
import ExpertPlacement
import SafetensorsFormat
import ShardCompression
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
    /// config.json through json-c.
    case config

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .header:
            guard bytes.count >= 8 else { return }
            let prefix = bytes.loadUnaligned(as: UInt64.self).littleEndian
            guard let n = try? HeaderParser.headerLength(prefix: prefix, fileSize: UInt64(bytes.count), file: "fuzz") else { return }
            _ = try? HeaderParser.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + Int(n))]), fileSize: UInt64(bytes.count), file: "fuzz")
        case .profile:
            var data = Array(bytes)
            if data.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) {
                guard let d = try? LoadProfile.decompress(data, path: "fuzz") else { return }
                data = d
            }
            _ = try? LoadProfile.parse(data, name: "fuzz")
        case .compressed:
            withScratchFile(bytes) { path in
                guard let shard = try? CompressedShard(path: path) else { return }
                for t in shard.tensors.prefix(64) { _ = try? shard.data(t) }
            }
        case .config:
            withScratchFile(bytes) { path in _ = try? ConfigReader.read(path: path, displayName: "fuzz") }
        }
    }

    /// Readers that take a path get the bytes in a file on tmpfs.
    func withScratchFile(_ bytes: UnsafeRawBufferPointer, _ body: (String) -> Void) {
        let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        let path = "\(dir)/moetool-fuzz-\(getpid())-\(rawValue)"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return }
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n <= 0 { break }
            done += n
        }
        close(fd)
        body(path)
        unlink(path)
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
