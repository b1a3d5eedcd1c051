#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An output directory claimed by a resumable run (`convert`, `compress`, `decompress`): a state
/// directory inside it holds the run's plan (the text that identifies it: its inputs and options) and
/// a lock, and is removed when the run ends. A killed run leaves the state behind; a resume must bring
/// the same plan. Nothing is created in a directory that is refused.
public final class OutputClaim {
    public enum Mode: Sendable, Equatable {
        /// A new run: the directory must be new or empty.
        case fresh
        /// A new run, or the end of a killed one with the same plan.
        case resume
        /// Only the end of an earlier run with the same plan (`convert --finalize`).
        case existing
        /// One of several processes sharing the directory (`convert --shards`): a shared lock, and
        /// the first plan put in place is the one every worker must agree with.
        case worker
    }

    public let directory: String
    public let state: String
    public var planPath: String { state + "/plan.json" }
    private let lock: WriterLock

    /// `noun` names the run in messages ("conversion", "run"); `command` the program holding the lock.
    public init(_ directory: String, stateName: String, plan: String, mode: Mode, noun: String, command: String) throws(IOError) {
        self.directory = directory
        state = directory + "/" + stateName
        let planPath = state + "/plan.json"
        let existing = listDirectory(directory).filter { $0 != stateName }
        let planned = access(planPath, F_OK) == 0
        // Refuse before writing anything into a directory that is not ours.
        if !existing.isEmpty {
            guard mode != .fresh else {
                throw IOError(path: directory, "is not empty; give a new or empty directory, or --resume an interrupted \(noun) into it")
            }
            guard planned else {
                throw IOError(path: directory, "is not empty and holds no interrupted \(noun); give a new or empty directory")
            }
        }
        if mode == .existing && !planned { throw IOError(path: directory, "holds no \(noun) to finalize") }
        for dir in [directory, state] where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw IOError(path: dir, "cannot create the directory", errno: errno)
        }
        // From here on under the lock, so that two runs cannot interleave.
        lock = try WriterLock(state + "/lock", mode == .worker ? .shared : .exclusive, what: directory, by: command)
        let recorded = OutputClaim.read(planPath)
        if mode == .fresh {
            // Empty when checked above: anything here now was put by a process that raced us.
            guard recorded == nil, listDirectory(directory) == [stateName], listDirectory(state).filter({ !$0.hasPrefix(".") }) == ["lock"] else {
                throw IOError(path: directory, "was written to by another process while starting; give a new or empty directory")
            }
        }
        if let recorded, recorded != plan {
            throw IOError(path: directory,
                "holds a \(noun) of another or a changed input, or with other options (\(escapeForDisplay(planPath))); use another directory")
        }
        guard recorded == nil else { return }
        // Workers hold the lock shared: they leave each other's temporaries alone, and the first plan
        // put in place (a link, which never replaces) wins.
        AtomicFile.removeStaleTemporaries(of: planPath, allWriters: mode != .worker)
        do {
            let file = try AtomicFile(path: planPath)
            try file.write(Array(plan.utf8))
            if try !file.commitUnlessExists(), OutputClaim.read(planPath) != plan {
                throw IOError(path: directory,
                    "another process started a \(noun) of another or a changed input, or with other options (\(escapeForDisplay(planPath)))")
            }
        } catch let e as IOError {
            throw e
        } catch {
            throw IOError(path: planPath, "\(error)")
        }
    }

    /// Ends the run: the state (plan, lock, markers) is removed; the lock goes with the process.
    public func release() {
        for name in listDirectory(state) { unlink(state + "/" + name) }
        rmdir(state)
    }

    static func read(_ path: String) -> String? {
        (try? MappedFile(path: path)).map { String(decoding: $0.bytes(0..<$0.size), as: UTF8.self) }
    }
}

/// The names in a directory (without . and ..), or none if it cannot be read.
public func listDirectory(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}
