#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An advisory lock (flock) on a file, held while this process writes an output and released by
/// the kernel when the process ends, however it ends. `convert` and `compress` keep theirs in the
/// state directory inside OUT, so that two runs cannot race into one output.
public final class WriterLock {
    private let fd: Int32

    public enum Kind: Sendable { case exclusive, shared }

    /// Takes the lock on `path` without waiting; `what` names the thing locked in the error.
    public init(_ path: String, _ kind: Kind, what: String, by command: String) throws(IOError) {
        let opened = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard opened >= 0 else {
            throw IOError(path: path, "cannot create the lock file", errno: errno)
        }
        guard flock(opened, (kind == .exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let code = errno
            let holder = busy ? WriterLock.recordedHolder(opened) : nil
            close(opened)
            guard busy else { throw IOError(path: path, "cannot lock", errno: code) }
            throw IOError(path: what,
                "is being written by another \(command)\(holder.map { " (pid \($0))" } ?? ""); wait for it to finish, or use another output")
        }
        fd = opened
        // An exclusive holder names itself for whoever is refused next; shared holders (many at once)
        // clear the name an earlier exclusive holder left.
        if ftruncate(fd, 0) == 0, kind == .exclusive {
            let line = Array("\(getpid())\n".utf8)
            _ = line.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        }
    }

    deinit {
        close(fd)  // releases the lock
    }

    private static func recordedHolder(_ fd: Int32) -> Int? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
        guard n > 0, let pid = Int32(String(decoding: buffer[0..<n].prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self)),
              kill(pid, 0) == 0 || errno == EPERM  // still running (on this machine)
        else { return nil }
        return Int(pid)
    }
}
