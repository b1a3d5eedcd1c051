import FixtureSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Kills, full disks, unwritable outputs, inputs changing underneath and racing runs, against the
/// debug build's fault hook (`MOETOOL_FAULT`, see FaultInjection.swift): every step that puts bytes
/// on disk is numbered, and the process kills or stops itself at the step a test names.
enum Faulty {
    struct Outcome {
        let status: Int32
        let killed: Bool
        let stderr: String
    }

    static func run(_ arguments: [String], fault: String? = nil, wrapper: [String] = []) throws -> Outcome {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: wrapper.isEmpty ? CLI.binary : wrapper[0])
        p.arguments = wrapper.isEmpty ? arguments : Array(wrapper.dropFirst()) + [CLI.binary] + arguments
        var env = ProcessInfo.processInfo.environment
        env["MOETOOL_FAULT"] = fault
        p.environment = env
        let err = Fixtures.temporaryDirectory() + "/err"
        defer { Fixtures.removeTemporary(err) }
        #expect(FileManager.default.createFile(atPath: err, contents: nil))
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle(forWritingAtPath: err)
        try p.run()
        p.waitUntilExit()
        return Outcome(status: p.terminationStatus, killed: p.terminationReason == .uncaughtSignal,
                       stderr: String(decoding: Fixtures.readBytes(err), as: UTF8.self))
    }

    /// How many disk steps an uninterrupted run of `arguments` takes.
    static func events(_ arguments: [String]) throws -> Int {
        let r = try run(arguments, fault: "count")
        let line = r.stderr.split(separator: "\n").first { $0.hasPrefix("moetool-fault-events: ") }
        let n = Int(line?.dropFirst("moetool-fault-events: ".count) ?? "") ?? 0
        // The hook exists in debug builds only; without a count there is nothing to test.
        try #require(n > 20, "\(arguments[0]): \(n) disk steps counted (a release build?)")
        return n
    }

    /// Points spread over 1...total: both ends, evenly spaced ones and seeded random ones.
    static func killPoints(_ total: Int, seed: UInt64) -> [Int] {
        var rng = seed
        var points: Set<Int> = [1, 2, total - 1, total]
        for k in 1...5 { points.insert(max(1, total * k / 6)) }
        for _ in 0..<4 {
            rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            points.insert(1 + Int((rng >> 33) % UInt64(total)))
        }
        return points.filter { $0 >= 1 && $0 <= total }.sorted()
    }

    /// Every file under `dir` (relative paths), hidden ones included.
    static func tree(_ dir: String) -> [String] {
        (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []).filter {
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: dir + "/" + $0, isDirectory: &isDir) && !isDir.boolValue
        }.sorted()
    }

    static func expectSameTree(_ dir: String, as reference: String, _ context: String,
                               sourceLocation: SourceLocation = #_sourceLocation) {
        let names = tree(reference)
        #expect(tree(dir) == names, "\(context)", sourceLocation: sourceLocation)
        for name in names where Fixtures.readBytes(dir + "/" + name) != Fixtures.readBytes(reference + "/" + name) {
            Issue.record("\(context): \(name) differs from an uninterrupted run", sourceLocation: sourceLocation)
        }
    }

    /// Waits until process `pid` has stopped itself (state T in /proc).
    static func waitStopped(_ pid: Int32) -> Bool {
        for _ in 0..<6000 {
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
               let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] == "T" { return true }
            usleep(5_000)
        }
        return false
    }

    /// Starts a run that stops itself at disk step `at`; returns it once stopped, with its stderr file.
    static func startStopped(_ arguments: [String], at: Int) throws -> (Process, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["MOETOOL_FAULT"] = "stop:\(at)"
        p.environment = env
        let err = Fixtures.temporaryDirectory() + "/err"
        #expect(FileManager.default.createFile(atPath: err, contents: nil))
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle(forWritingAtPath: err)
        try p.run()
        #expect(waitStopped(p.processIdentifier), "the run did not reach step \(at)")
        return (p, err)
    }

    static func resume(_ p: Process) {
        kill(p.processIdentifier, SIGCONT)
        p.waitUntilExit()
    }

    static func copyTree(_ source: String, to destination: String) throws {
        try FileManager.default.copyItem(atPath: source, toPath: destination)
    }

    static func temporaries(_ dir: String) -> [String] { tree(dir).filter { $0.contains(".tmp-") } }

    /// Whether this is a ThreadSanitizer build (Scripts/sanitizers.sh).
    static let threadSanitized: Bool = dlsym(dlopen(nil, RTLD_NOW), "__tsan_init") != nil
}

@Suite struct FaultInjection {
    let source = Fixtures.path("models/deepseek_v3-f32-sharded")

    @Test func convertKilledAnywhereThenResumedIsByteIdentical() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = ["convert", source, "--to", "fp8", "-q"]
        #expect(try CLI.run(["convert", source, dir + "/reference", "--to", "fp8"]).status == 0)
        let total = try Faulty.events(["convert", source, dir + "/counted", "--to", "fp8"])
        #expect(total > 20, "too few disk steps counted: \(total)")
        let points = Faulty.killPoints(total, seed: 3)
        #expect(points.count >= 8)
        for k in points {
            let out = dir + "/out-\(k)"
            let killed = try Faulty.run(Array(base[0..<2]) + [out] + Array(base[2...]), fault: "kill:\(k)")
            #expect(killed.killed && killed.status == SIGKILL, "step \(k) of \(total): \(killed.stderr)")
            if FileManager.default.fileExists(atPath: out + "/model.safetensors.index.json") {
                #expect(Faulty.tree(out).filter { $0.hasPrefix("model-") }.count == 5, "index written before the shards (step \(k))")
            }
            let again = try Faulty.run(["convert", source, out, "--to", "fp8", "--resume"])
            #expect(again.status == 0, "resume after step \(k): \(again.stderr)")
            Faulty.expectSameTree(out, as: dir + "/reference", "killed at step \(k) of \(total), resumed")
        }
    }

    @Test func compressAndDecompressKilledAnywhereThenResumedAreByteIdentical() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try CLI.run(["compress", source, dir + "/packed"]).status == 0)
        for (command, input, reference) in [("compress", source, dir + "/packed"), ("decompress", dir + "/packed", source)] {
            let total = try Faulty.events([command, input, dir + "/\(command)-counted"])
            #expect(total > 20, "\(command): too few disk steps counted: \(total)")
            for k in Faulty.killPoints(total, seed: 7) {
                let out = dir + "/\(command)-\(k)"
                let killed = try Faulty.run([command, input, out], fault: "kill:\(k)")
                #expect(killed.killed && killed.status == SIGKILL, "\(command) step \(k) of \(total)")
                if Faulty.tree(out).contains(where: { !$0.hasPrefix(".moetool-compress/") }) {
                    let refused = try Faulty.run([command, input, out])
                    #expect(refused.status == 1 && refused.stderr.contains("--resume"), "\(command) step \(k): \(refused.stderr)")
                }
                let again = try Faulty.run([command, input, out, "--resume"])
                #expect(again.status == 0, "\(command) resume after step \(k): \(again.stderr)")
                Faulty.expectSameTree(out, as: reference, "\(command) killed at step \(k) of \(total), resumed")
            }
        }
        // A single file: a kill leaves no file under its name, and --resume (or a plain rerun) finishes it.
        let shard = source + "/model-00002-of-00005.safetensors"
        let total = try Faulty.events(["compress", shard, dir + "/counted.stz"])
        let killed = try Faulty.run(["compress", shard, dir + "/one.stz"], fault: "kill:\(total / 2)")
        #expect(killed.killed)
        #expect(!FileManager.default.fileExists(atPath: dir + "/one.stz"))
        #expect(try Faulty.run(["compress", shard, dir + "/one.stz", "--resume"]).status == 0)
        #expect(Fixtures.readBytes(dir + "/one.stz") == Fixtures.readBytes(dir + "/packed/model-00002-of-00005.safetensors.mz"))
        #expect(!Faulty.tree(dir).contains { $0.hasPrefix(".one.stz.tmp-") }, "the killed run's temporary file was not cleared")
    }

    /// A file-size limit (ulimit -f) and, where this machine lets us mount one, a tiny tmpfs.
    @Test func fullDiskIsAClearErrorAndLeavesNothingUnderAFinalName() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // ThreadSanitizer's runtime keeps memory in files of its own, which a file-size limit cuts short
        // (a bus error outside moetool's mappings): that half runs in the other builds.
        for command in [["convert", "--to", "fp8"], ["compress"]] where !Faulty.threadSanitized {
            let out = dir + "/limited-\(command[0])", reference = dir + "/reference-\(command[0])"
            #expect(try CLI.run(Array(command.prefix(1)) + [source, reference] + Array(command.dropFirst())).status == 0)
            // 200 blocks of 512 bytes: room for the small files and the smallest shard, not for the others.
            let r = try Faulty.run(Array(command.prefix(1)) + [source, out] + Array(command.dropFirst()),
                                   wrapper: ["/bin/sh", "-c", "ulimit -f 200; exec \"$@\"", "sh"])
            #expect(r.status == 1 && !r.killed, "\(command[0]) under ulimit -f: \(r.status) \(r.stderr)")
            #expect(r.stderr.contains("File too large") && r.stderr.contains("ulimit -f"), "\(r.stderr)")
            #expect(Faulty.temporaries(out).isEmpty, "\(Faulty.temporaries(out))")
            // Whatever is under a final name is complete: the same bytes as an unlimited run.
            for name in Faulty.tree(out) where !name.hasPrefix(".") {
                #expect(Fixtures.readBytes(out + "/" + name) == Fixtures.readBytes(reference + "/" + name), "\(command[0]): \(name)")
            }
        }

        let mountPoint = dir + "/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard mount("tmpfs", mountPoint, "tmpfs", 0, "size=400k") == 0 else {
            print("full-disk test on tmpfs skipped: cannot mount here (\(String(cString: strerror(errno))))")
            return
        }
        defer { umount(mountPoint) }
        for command in [["convert", "--to", "fp8"], ["compress"]] {
            let out = mountPoint + "/" + command[0]
            let r = try Faulty.run(Array(command.prefix(1)) + [source, out] + Array(command.dropFirst()))
            #expect(r.status == 1 && r.stderr.contains("No space left on device") && r.stderr.contains("free space"),
                    "\(command[0]) on a full tmpfs: \(r.stderr)")
            #expect(Faulty.temporaries(out).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: out + "/model.safetensors.index.json"))
            try? FileManager.default.removeItem(atPath: out)
        }
    }

    /// An output directory this process may not write to: as root (who ignores permissions) the run
    /// is started as user nobody.
    @Test func unwritableOutputIsAClearErrorAndWritesNothing() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        defer {
            chmod(dir + "/locked", 0o755)
            try? FileManager.default.removeItem(atPath: dir)
        }
        try FileManager.default.createDirectory(atPath: dir + "/locked/empty", withIntermediateDirectories: true)
        chmod(dir + "/locked/empty", 0o555)
        chmod(dir + "/locked", 0o555)
        let wrapper = geteuid() == 0 ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []
        for command in [["convert", "--to", "fp8"], ["compress"], ["convert", "--to", "fp8", "--resume"]] {
            for out in [dir + "/locked/new", dir + "/locked/empty"] {
                let r = try Faulty.run(Array(command.prefix(1)) + [source, out] + Array(command.dropFirst()), wrapper: wrapper)
                #expect(r.status == 1 && r.stderr.contains("Permission denied") && r.stderr.contains(out), "\(command) \(out): \(r.stderr)")
            }
        }
        #expect(Faulty.tree(dir + "/locked").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir + "/locked/new"))
    }

    /// The input rewritten in place, or cut short, while a run is stopped part-way through it.
    @Test func inputChangedWhileBeingReadIsDetected() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let total = try Faulty.events(["convert", source, dir + "/counted", "--to", "fp8"])
        let cases: [(String, (String) throws -> Void)] = [
            ("rewritten", { path in
                let h = try #require(FileHandle(forUpdatingAtPath: path))
                try h.seek(toOffset: 4096)
                try h.write(contentsOf: Data(repeating: 0x3F, count: 64))
                try h.close()
            }),
            ("truncated", { path in #expect(truncate(path, 4096) == 0) }),
        ]
        let shard = source + "/model-00003-of-00005.safetensors"
        let compressTotal = try Faulty.events(["compress", shard, dir + "/counted.stz"])
        for (what, change) in cases {
            // convert maps every shard at the start: change the last one, not yet read.
            // compress maps each file when it gets to it: change the one being read.
            for command in ["convert", "compress"] {
                let input = dir + "/in-\(what)-\(command)"
                try Faulty.copyTree(source, to: input)
                let out = dir + "/out-\(what)-\(command)"
                let changed = input + (command == "convert" ? "/model-00005-of-00005.safetensors" : "/model-00003-of-00005.safetensors")
                let arguments = command == "convert" ? ["convert", input, out, "--to", "fp8"] : ["compress", changed, out]
                let (p, err) = try Faulty.startStopped(arguments, at: command == "convert" ? total / 4 : compressTotal / 2)
                defer { Fixtures.removeTemporary(err) }
                // The file being written when the input changed: it must never appear under its name.
                let parent = command == "convert" ? out : dir
                let unfinished = Faulty.temporaries(parent).compactMap { t -> String? in
                    let name = (t as NSString).lastPathComponent
                    guard let cut = name.range(of: ".tmp-") else { return nil }
                    return ((t as NSString).deletingLastPathComponent as NSString).appendingPathComponent(String(name.dropFirst().prefix(upTo: cut.lowerBound)))
                }
                #expect(!unfinished.isEmpty, "nothing half-written when stopped: the test would prove nothing")
                try change(changed)
                Faulty.resume(p)
                let stderr = String(decoding: Fixtures.readBytes(err), as: UTF8.self)
                #expect(p.terminationStatus == 1 && p.terminationReason == .exit, "\(what) \(command): \(stderr)")
                #expect(stderr.contains(changed) && stderr.contains("while"), "\(what) \(command): \(stderr)")
                for name in unfinished { #expect(!FileManager.default.fileExists(atPath: parent + "/" + name), "\(name) put in place") }
                #expect(!FileManager.default.fileExists(atPath: command == "convert" ? out + "/model-00005-of-00005.safetensors" : out))
                #expect(Faulty.temporaries(parent).isEmpty, "\(Faulty.temporaries(parent))")
            }
        }
    }

    /// Ctrl-C, `kill` and a closed terminal: the process dies of the signal as usual, after deleting
    /// its unfinished files; a --resume then finishes the job.
    @Test func interruptedRunsLeaveNoTemporaries() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let total = try Faulty.events(["convert", source, dir + "/counted", "--to", "fp8"])
        #expect(try CLI.run(["convert", source, dir + "/reference", "--to", "fp8"]).status == 0)
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            let out = dir + "/out-\(signal)"
            let (p, pStderr) = try Faulty.startStopped(["convert", source, out, "--to", "fp8"], at: total / 2)
            defer { Fixtures.removeTemporary(pStderr) }
            #expect(!Faulty.temporaries(out).isEmpty, "stopped with nothing half-written: the test would prove nothing")
            kill(p.processIdentifier, signal)
            Faulty.resume(p)
            #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == signal)
            #expect(Faulty.temporaries(out).isEmpty, "signal \(signal): \(Faulty.temporaries(out))")
            #expect(try Faulty.run(["convert", source, out, "--to", "fp8", "--resume"]).status == 0)
            Faulty.expectSameTree(out, as: dir + "/reference", "signal \(signal), resumed")
        }
    }

    /// Two runs into one OUT: the second is refused while the first holds the lock, and the first
    /// still finishes byte-identical. `--shards` workers share OUT but never one shard.
    @Test func racingRunsIntoOneOutputAreRefusedByTheLock() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try CLI.run(["convert", source, dir + "/reference", "--to", "fp8"]).status == 0)
        let total = try Faulty.events(["convert", source, dir + "/counted", "--to", "fp8"])
        let out = dir + "/out"
        let (first, firstStderr) = try Faulty.startStopped(["convert", source, out, "--to", "fp8"], at: total / 3)
        defer { Fixtures.removeTemporary(firstStderr) }
        for extra in [["--resume"], ["--shards", "2/2"], ["--finalize"]] {
            let r = try Faulty.run(["convert", source, out, "--to", "fp8"] + extra)
            #expect(r.status == 1 && r.stderr.contains("another moetool convert (pid \(first.processIdentifier))"), "\(extra): \(r.stderr)")
        }
        let c = try Faulty.run(["compress", source, out])
        #expect(c.status == 1, "\(c.stderr)")
        Faulty.resume(first)
        #expect(first.terminationStatus == 0)
        Faulty.expectSameTree(out, as: dir + "/reference", "after a refused racer")

        // Workers: a second 1/2 is refused (its shards are taken), 2/2 goes ahead, finalize waits for all.
        let shared = dir + "/shared"
        let workerTotal = try Faulty.events(["convert", source, dir + "/counted-1", "--to", "fp8", "--shards", "1/2"])
        let (worker, workerStderr) = try Faulty.startStopped(["convert", source, shared, "--to", "fp8", "--shards", "1/2"], at: workerTotal / 2)
        defer { Fixtures.removeTemporary(workerStderr) }
        let twin = try Faulty.run(["convert", source, shared, "--to", "fp8", "--shards", "1/2"])
        #expect(twin.status == 1 && twin.stderr.contains("is being written by another moetool convert"), "\(twin.stderr)")
        #expect(try Faulty.run(["convert", source, shared, "--to", "fp8", "--shards", "2/2"]).status == 0)
        let early = try Faulty.run(["convert", source, shared, "--to", "fp8", "--finalize"])
        #expect(early.status == 1 && early.stderr.contains("another moetool convert"), "\(early.stderr)")
        Faulty.resume(worker)
        #expect(worker.terminationStatus == 0)
        let finalize = try Faulty.run(["convert", source, shared, "--to", "fp8", "--finalize"])
        #expect(finalize.status == 0, "\(finalize.stderr)")
        Faulty.expectSameTree(shared, as: dir + "/reference", "two workers and a refused twin")

        // Two workers starting together with different options: the one whose plan lands second is
        // refused instead of mixing its shards into the other's conversion.
        let mixed = dir + "/mixed"
        let (slow, slowErr) = try Faulty.startStopped(["convert", source, mixed, "--to", "fp8", "--shards", "1/2"], at: 1)
        defer { Fixtures.removeTemporary(slowErr) }
        let fast = try Faulty.run(["convert", source, mixed, "--to", "fp8", "--scale-format", "ue8m0", "--shards", "2/2"])
        #expect(fast.status == 0, "\(fast.stderr)")
        Faulty.resume(slow)
        let slowMessage = String(decoding: Fixtures.readBytes(slowErr), as: UTF8.self)
        #expect(slow.terminationStatus == 1 && slowMessage.contains("another process started a conversion"), "\(slowMessage)")
    }
}
