import CSafety
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct IOError: Error, Sendable, CustomStringConvertible {
    public let path: String
    public let message: String
    public init(path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public init(path: String, _ what: String, errno code: Int32) {
        var message = "\(what): \(String(cString: strerror(code)))"
        switch code {
        case ENOSPC, EDQUOT:
            message += " (free space on that device, or write the output elsewhere; the unfinished file was deleted)"
        case EFBIG:
            message += " (a file-size limit was reached: see `ulimit -f`; the unfinished file was deleted)"
        case EROFS, EACCES, EPERM:
            message += " (the output location is not writable; choose a writable directory)"
        default:
            break
        }
        self.init(path: path, message)
    }
    public var description: String { "\(escapeForDisplay(path)): \(message)" }
}

/// A file written under a temporary name in its final directory and renamed into
/// place only once complete and flushed to disk, so a crash, a full disk or an
/// error never leaves a partial file under the final name.
public final class AtomicFile {
    public let finalPath: String
    public let temporaryPath: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private let bufferLimit = 1 << 20
    private var finished = false
    /// Where the signal handlers know the temporary file (to delete it if the process is killed).
    private var safetySlot: Int32 = -1
    /// The mapped files this one is made from: `commit` refuses to put the result in place if any
    /// of them changed on disk while it was being written (the output would mix old and new bytes).
    public var sources: [MappedFile] = []

    public init(path: String) throws {
        finalPath = path
        try AtomicFile.refuseNonRegular(path)
        let (dir, base) = splitPath(path)
        var suffix = UInt64.random(in: 0...UInt64.max) & 0xFFFF_FFFF
        var tmp = ""
        var opened: Int32 = -1
        for _ in 0..<16 {
            tmp = (dir.isEmpty ? "" : dir + "/") + ".\(base).tmp-\(getpid())-\(String(suffix, radix: 16))"
            opened = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)  // read too: outputs are mapped
            if opened >= 0 || errno != EEXIST { break }
            suffix &+= 1
        }
        guard opened >= 0 else { throw IOError(path: path, "cannot create a temporary file beside it", errno: errno) }
        fd = opened
        temporaryPath = tmp
        safetySlot = moe_note_temporary(tmp)
        buffer.reserveCapacity(bufferLimit)
    }

    deinit {
        if !finished { abort() }
    }

    /// The rename that puts an output in place replaces whatever has its name: a device (`/dev/null`), a FIFO,
    /// a socket or a directory there is never the user's old output, so it is refused, not replaced. (A symlink
    /// is replaced itself, never what it points to; a regular file is replaced, as `cp` would.)
    public static func refuseNonRegular(_ path: String) throws(IOError) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        let kind = st.st_mode & S_IFMT
        guard kind != S_IFREG && kind != S_IFLNK else { return }
        let what = kind == S_IFDIR ? "a directory" : kind == S_IFCHR || kind == S_IFBLK ? "a device"
            : kind == S_IFIFO ? "a FIFO (named pipe)" : kind == S_IFSOCK ? "a socket" : "not a regular file"
        throw IOError(path: path, "exists and is \(what); moetool writes outputs only as regular files and never replaces anything else: choose a file path")
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        FaultInjection.event()
        if buffer.count + bytes.count <= bufferLimit {
            buffer.append(contentsOf: bytes)
        } else {
            try flushBuffer()
            if bytes.count >= bufferLimit { try writeAll(bytes) } else { buffer.append(contentsOf: bytes) }
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Writes `bytes` at `offset` (pwrite), bypassing the sequential buffer: for writers that
    /// know where everything goes. Safe from several threads at once for disjoint ranges; do not
    /// mix with `write(_:)` unless that buffer was flushed (it is empty before any `write`).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        FaultInjection.event()
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError(path: finalPath, "write failed", errno: errno)
            }
            done += n
        }
        // Start the disk on this range now, so that commit's fsync has little left to wait for.
        if bytes.count >= 1 << 20 { moe_start_writeback(fd, Int64(offset), Int64(bytes.count)) }
    }

    private func flushBuffer() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError(path: finalPath, "write failed", errno: errno)
            }
            offset += n
        }
        flushedBytes += UInt64(bytes.count)
        if flushedBytes - writebackStart >= writebackStep {
            moe_start_writeback(fd, Int64(writebackStart), Int64(flushedBytes - writebackStart))
            writebackStart = flushedBytes
        }
    }

    /// Sequential bytes handed to the kernel so far, and where the last writeback request ended: the disk
    /// writes a large file while the rest is still being computed, instead of all of it in `commit`'s fsync.
    private var flushedBytes: UInt64 = 0
    private var writebackStart: UInt64 = 0
    private let writebackStep: UInt64 = 32 << 20

    /// Flushes, syncs and renames the file into place, then syncs the directory.
    public func commit() throws {
        try commit(replacing: true)
    }

    /// The same, unless a file is already under the final name (put there by a racing writer): then
    /// the temporary file is discarded and the result is false.
    public func commitUnlessExists() throws -> Bool {
        try commit(replacing: false)
    }

    @discardableResult
    private func commit(replacing: Bool) throws -> Bool {
        precondition(!finished, "AtomicFile committed twice")
        do {
            for source in sources {
                if let change = source.changeSinceMapped() {
                    throw IOError(path: source.path, "\(change); the output made from it was deleted, rerun once the input is stable")
                }
            }
            try flushBuffer()
            guard fsync(fd) == 0 else { throw IOError(path: finalPath, "fsync failed", errno: errno) }
            guard close(fd) == 0 else {
                fd = -1
                throw IOError(path: finalPath, "close failed", errno: errno)
            }
            fd = -1
            FaultInjection.event()
            if replacing {
                guard rename(temporaryPath, finalPath) == 0 else {
                    throw IOError(path: finalPath, "cannot rename the finished file into place", errno: errno)
                }
            } else if link(temporaryPath, finalPath) == 0 {
                unlink(temporaryPath)
            } else if errno == EEXIST {
                abort()
                return false
            } else {
                throw IOError(path: finalPath, "cannot put the finished file into place", errno: errno)
            }
        } catch {
            abort()
            throw error
        }
        finished = true
        moe_forget_temporary(safetySlot)
        FaultInjection.event()
        let (dir, _) = splitPath(finalPath)
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
        return true
    }

    /// Discards the temporary file.
    public func abort() {
        if fd >= 0 { close(fd) }
        fd = -1
        if !finished { unlink(temporaryPath) }
        finished = true
        moe_forget_temporary(safetySlot)
        safetySlot = -1
    }
}

extension AtomicFile {
    /// Deletes the temporary files earlier writers left for `path` (`.NAME.tmp-PID-*`, from a kill or
    /// a power cut). Without a lock that excludes other writers (`allWriters: false`), only files of
    /// processes no longer running on this machine go.
    public static func removeStaleTemporaries(of path: String, allWriters: Bool) {
        let (dir, base) = splitPath(path)
        let prefix = "." + base + ".tmp-"
        let stale = listDirectory(dir.isEmpty ? "." : dir).filter { name in
            guard name.hasPrefix(prefix) else { return false }
            let pid = name.dropFirst(prefix.count).prefix { $0 != "-" }
            if !allWriters, let pid = Int32(pid), pid > 0, kill(pid, 0) == 0 || errno == EPERM { return false }
            return true
        }
        for name in stale { unlink((dir.isEmpty ? "" : dir + "/") + name) }
    }

    /// Creates the directories of `relative` (a path inside `root`, e.g. "sub/model-00001.safetensors")
    /// below `root`, as a checkpoint whose index names shards in subdirectories needs them.
    public static func makeParentDirectories(of relative: String, in root: String) throws(IOError) {
        var path = root
        for part in relative.split(separator: "/").dropLast() {
            path += "/" + part
            if mkdir(path, 0o755) != 0 && errno != EEXIST {
                throw IOError(path: path, "cannot create the directory", errno: errno)
            }
        }
    }

    /// Copies the file at `source` to `destination` through a temporary file renamed into place.
    public static func copy(from source: String, to destination: String) throws {
        let m: MappedFile
        do {
            m = try MappedFile(path: source)
        } catch {
            throw IOError(path: source, "cannot read: \(error)")
        }
        let file = try AtomicFile(path: destination)
        file.sources = [m]
        do {
            try m.slices { slice, _ in try file.write(slice) }
            try file.commit()
        } catch {
            file.abort()
            throw error
        }
    }
}

/// Installs moetool's signal handlers (see CSafety): a bus error on a mapped input names the file
/// and exits 1; SIGINT, SIGTERM and SIGHUP delete unfinished outputs first; a file-size limit
/// becomes a write error. For the command-line tool, once at start.
public func installSignalHandlers() {
    moe_install_signal_handlers()
}

func splitPath(_ path: String) -> (dir: String, base: String) {
    guard let slash = path.lastIndex(of: "/") else { return ("", path) }
    let dir = String(path[..<slash])
    return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
}
