#if canImport(Glibc)
import Glibc
#endif

/// Everything under a checkpoint directory, for the commands that carry a checkpoint over to a new directory
/// (convert, compress, decompress): every regular file at any depth, symlinks followed (a Hugging Face cache
/// snapshot is a directory of links into `../../blobs`), and what cannot be carried, with the reason.
public struct DirectoryTree: Sendable {
    /// Regular files (or links to them), relative to the root, in name order, parents' files first.
    public var files: [String] = []
    /// Every directory under the root, relative, parents before children (empty ones too).
    public var directories: [String] = []
    /// Paths (absolute as given) of the symlinks met: their targets are inputs too.
    public var symlinks: [String] = []
    public var leftOut: [LeftOut] = []
    /// The root resolved, to keep the walk inside it.
    var realRoot = ""

    /// Something under the root that is not carried over, and why.
    public struct LeftOut: Sendable, Equatable {
        /// The path relative to the root.
        public var name: String
        public var reason: String
        public init(name: String, reason: String) {
            self.name = name
            self.reason = reason
        }
    }

    /// moetool's own run state (a plan and a lock under `.moetool-convert`, `.moetool-compress`): never carried.
    public static let statePrefix = ".moetool-"

    /// Walks `root` depth-first in name order.
    public static func walk(_ root: String) throws(IOError) -> DirectoryTree {
        var tree = DirectoryTree()
        var st = stat()
        guard stat(root, &st) == 0 else { throw IOError(path: root, "cannot read the directory", errno: errno) }
        tree.realRoot = realPathOf(root) ?? root
        try tree.visit(root, relative: "", ancestors: [Identity(st)])
        return tree
    }

    struct Identity: Hashable {
        let device: UInt64
        let inode: UInt64
        init(_ st: stat) {
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }
    }

    mutating func visit(_ directory: String, relative: String, ancestors: Set<Identity>) throws(IOError) {
        guard let handle = opendir(directory) else { throw IOError(path: directory, "cannot read the directory", errno: errno) }
        closedir(handle)
        for name in listDirectory(directory).sorted() {
            let path = directory + "/" + name
            let rel = relative.isEmpty ? name : relative + "/" + name
            if name.hasPrefix(DirectoryTree.statePrefix) {
                leftOut.append(LeftOut(name: rel, reason: "moetool's own run state (a plan and a lock), not part of the checkpoint"))
                continue
            }
            var link = stat()
            let isLink = lstat(path, &link) == 0 && link.st_mode & S_IFMT == S_IFLNK
            if isLink { symlinks.append(path) }
            var st = stat()
            guard stat(path, &st) == 0 else {
                let code = errno
                let reason = code == ELOOP ? "a symlink loop"
                    : code == ENOENT ? "a dangling symlink (its target does not exist)"
                    : "cannot be read: \(String(cString: strerror(code)))"
                leftOut.append(LeftOut(name: rel, reason: reason))
                continue
            }
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                files.append(rel)
            case S_IFDIR:
                // A linked file may live anywhere (the Hugging Face cache links into ../../blobs), but a linked
                // directory outside the checkpoint (`x -> /`) would carry a whole other tree along.
                if isLink, let real = realPathOf(path), real != realRoot, !real.hasPrefix(realRoot.hasSuffix("/") ? realRoot : realRoot + "/") {
                    leftOut.append(LeftOut(name: rel, reason: "a link to a directory outside the checkpoint (\(escapeForDisplay(real)))"))
                    continue
                }
                let id = Identity(st)
                guard !ancestors.contains(id) else {
                    leftOut.append(LeftOut(name: rel, reason: "a symlink loop (it leads back to a directory it is in)"))
                    continue
                }
                directories.append(rel)
                try visit(path, relative: rel, ancestors: ancestors.union([id]))
            case S_IFIFO: leftOut.append(LeftOut(name: rel, reason: "a FIFO (named pipe), not a file"))
            case S_IFSOCK: leftOut.append(LeftOut(name: rel, reason: "a socket, not a file"))
            case S_IFCHR, S_IFBLK: leftOut.append(LeftOut(name: rel, reason: "a device, not a file"))
            default: leftOut.append(LeftOut(name: rel, reason: "not a regular file or directory"))
            }
        }
    }
}

func realPathOf(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
}
