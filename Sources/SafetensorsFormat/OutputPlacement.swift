#if canImport(Glibc)
import Glibc
#endif

/// Where a command may write: never onto one of its inputs nor inside an input directory.
///
/// Paths are compared as the file system sees them, by device and inode, so that a symlink,
/// a hard link, `..` or a bind mount cannot disguise an input: the output and each of its
/// existing ancestors (symlinks followed) are compared with every input. An output that does
/// not exist yet is placed by its nearest existing ancestor.
public enum OutputPlacement {
    /// A file system object: (device, inode).
    struct Identity: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    /// Why `output` may not be written, or nil when it is apart from every input.
    ///
    /// - `inputs`: every file or directory the command reads.
    /// - `outputIsDirectory`: the output is a directory the command fills; then an input inside
    ///   it is refused too (the command would write beside, or over, what it reads).
    public static func conflict(output: String, inputs: [String], outputIsDirectory: Bool = false) -> String? {
        let chain = identityChain(output)
        for input in inputs {
            guard let id = identity(input) else { continue }
            if chain.first == id {
                return "is the input \(escapeForDisplay(input)) (the same file); inputs are never written to"
            }
            if chain.dropFirst().contains(id) {
                return "is inside the input \(escapeForDisplay(input)); inputs are never written to"
            }
            if outputIsDirectory, let outputId = chain.first, identityChain(input).dropFirst().contains(outputId) {
                return "holds the input \(escapeForDisplay(input)); write to a directory apart from the inputs"
            }
        }
        return nil
    }

    static func identity(_ path: String) -> Identity? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Identity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// The identities of `path` (when it exists) and of every directory above it, nearest first.
    /// A path that does not exist yet contributes a placeholder first entry that matches nothing.
    static func identityChain(_ path: String) -> [Identity] {
        var chain: [Identity] = []
        var current = path.isEmpty ? "." : path
        var first = true
        // Climb the path as written until something exists, then the resolved directories above it.
        while true {
            if let id = identity(current) {
                if first { chain.append(id) } else { chain.append(Identity(device: .max, inode: .max)); chain.append(id) }
                break
            }
            first = false
            let parent = parentPath(current)
            if parent == current { return chain }
            current = parent
        }
        guard var resolved = realPathOf(current) else { return chain }
        while resolved != "/" {
            resolved = parentPath(resolved)
            if let id = identity(resolved) { chain.append(id) }
        }
        return chain
    }

    static func parentPath(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        guard let slash = p.lastIndex(of: "/") else { return "." }
        let parent = String(p[..<slash])
        return parent.isEmpty ? "/" : parent
    }
}
