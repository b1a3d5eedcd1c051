import CSafety
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file. Pages are read from disk only when
/// touched, so opening a 4 GB shard to read its header costs a few pages.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: UInt64
    /// Identity of the file when it was mapped, to notice a file replaced underneath us.
    public let device: UInt64
    public let inode: UInt64
    public let modificationTime: Int
    private let base: UnsafeRawPointer?
    /// Where the signal handlers know this mapping by its path (-1: not recorded).
    private let safetySlot: Int32

    public enum OpenError: Error, CustomStringConvertible {
        case system(String, Int32)
        case notRegularFile
        public var description: String {
            switch self {
            case .system(let what, let code): return "\(what): \(String(cString: strerror(code)))"
            case .notRegularFile: return "not a regular file"
            }
        }
    }

    public init(path: String) throws(OpenError) {
        self.path = path
        // O_NONBLOCK: a FIFO posing as a shard must not hang us; regular files ignore it.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw .system("cannot open", errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system("cannot stat", errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .notRegularFile }
        size = UInt64(st.st_size)
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        modificationTime = Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)
        if size == 0 {
            base = nil
            safetySlot = -1
        } else {
            let p = mmap(nil, Int(size), PROT_READ, MAP_PRIVATE, fd, 0)
            guard let p, p != MAP_FAILED else { throw .system("cannot map", errno) }
            base = UnsafeRawPointer(p)
            safetySlot = moe_note_mapping(p, Int(size), path)
        }
    }

    deinit {
        moe_forget_mapping(safetySlot)
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), Int(size)) }
    }

    /// How the file at `path` differs from the one mapped (replaced, resized or written to since),
    /// or nil if it looks the same. A mapping of a file that changes underneath reads a mix of old and
    /// new bytes, so writers check their inputs with this before putting an output in place.
    public func changeSinceMapped() -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return "was deleted or moved while being read" }
        if UInt64(st.st_dev) != device || UInt64(st.st_ino) != inode { return "was replaced by another file while being read" }
        if UInt64(st.st_size) != size { return "changed size while being read (\(size) bytes, now \(st.st_size))" }
        let mtime = Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec)
        if mtime != modificationTime { return "was written to while being read (its modification time changed)" }
        return nil
    }

    /// The bytes in `range`, which must lie within the file.
    public func bytes(_ range: Range<UInt64>) -> UnsafeRawBufferPointer {
        precondition(range.upperBound <= size, "range past the end of the mapping")
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + Int(range.lowerBound), count: Int(range.count))
    }

    /// Hands `range` (the whole file by default) to `body` front to back in slices of 8 MiB, each with its
    /// offset from the start of `range`, and lets the kernel drop each slice's pages from this process
    /// once `body` is done with it: a whole file read in flat memory.
    public func slices(_ range: Range<UInt64>? = nil,
                       _ body: (UnsafeRawBufferPointer, UInt64) throws -> Void) rethrows {
        let range = range ?? 0..<size
        var offset = range.lowerBound
        while offset < range.upperBound {
            let end = min(range.upperBound, offset + (8 << 20))
            try body(bytes(offset..<end), offset - range.lowerBound)
            adviseDone(offset..<end)
            offset = end
        }
    }

    /// Tells the kernel we will read `range` front to back (larger read-ahead).
    public func adviseSequential(_ range: Range<UInt64>) {
        guard let base, !range.isEmpty else { return }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        _ = madvise(UnsafeMutableRawPointer(mutating: base + Int(start)), Int(range.upperBound - start), MADV_SEQUENTIAL)
    }

    /// Lets the kernel drop pages of `range` we are done with, so scanning a
    /// large file does not grow the resident set.
    public func adviseDone(_ range: Range<UInt64>) {
        guard let base, !range.isEmpty else { return }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page
        guard range.upperBound > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + Int(start)), Int(range.upperBound - start), MADV_DONTNEED)
    }
}
