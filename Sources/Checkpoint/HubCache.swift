#if canImport(Glibc)
import Glibc
#endif

/// Finds a model downloaded by the Hugging Face tools (`hf download org/name`) in their cache, laid out as
/// `<cache>/models--org--name/{refs/<revision>, snapshots/<commit>/<files>, blobs/<sha256>}`, where each
/// snapshot file is a relative symlink into `blobs/`.
public enum HubCache {
    /// Why a model id could not be resolved.
    public struct NotFound: Error, Sendable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// The cache directory the Hugging Face tools use: `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`),
    /// else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    public static func directory(environment: [String: String]) -> String {
        func nonEmpty(_ key: String) -> String? { environment[key].flatMap { $0.isEmpty ? nil : expandHome($0, environment) } }
        if let cache = nonEmpty("HF_HUB_CACHE") ?? nonEmpty("HUGGINGFACE_HUB_CACHE") { return cache }
        if let home = nonEmpty("HF_HOME") { return join(home, "hub") }
        if let xdg = nonEmpty("XDG_CACHE_HOME") { return join(join(xdg, "huggingface"), "hub") }
        return join(expandHome("~/.cache/huggingface", environment), "hub")
    }

    /// Whether `text` has the form of a model id (`org/name` or `name`: letters, digits, `.`, `_`, `-`).
    public static func looksLikeModelID(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else { return false }
        return parts.allSatisfy { part in
            !part.isEmpty && !part.hasPrefix(".") && part.utf8.count <= 96
                && part.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("A"..."Z").contains($0)
                    || ("0"..."9").contains($0) || $0 == "." || $0 == "_" || $0 == "-" }
        }
    }

    /// The snapshot directory of model `id` at `revision` (a branch or tag in `refs/`, or a commit hash;
    /// `main` when nil).
    public static func resolve(_ id: String, revision: String?, environment: [String: String]) throws(NotFound) -> String {
        let cache = directory(environment: environment)
        let repo = join(cache, "models--" + id.split(separator: "/").joined(separator: "--"))
        let revision = revision ?? "main"
        let download = "hf download \(id)" + (revision == "main" ? "" : " --revision \(revision)")
        guard fileKind(repo) == .directory else {
            throw NotFound(message: "\(id): no such file or directory, and not in the Hugging Face cache (looked for \(repo)); download it with `\(download)`, or give a local path")
        }
        var commit = revision
        if !isCommitHash(revision) {
            guard !revision.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0.isEmpty || $0 == ".." || $0 == "." }),
                  let text = readSmallFile(join(join(repo, "refs"), revision))
            else {
                throw NotFound(message: "\(id): the Hugging Face cache has no revision \"\(revision)\" (no \(join(join(repo, "refs"), revision))); download it with `\(download)`")
            }
            commit = text.trimmingWhitespace()
            guard isCommitHash(commit) else {
                throw NotFound(message: "\(join(join(repo, "refs"), revision)): holds \"\(commit.prefix(80))\", not a commit hash; download it again with `\(download)`")
            }
        }
        let snapshot = join(join(repo, "snapshots"), commit)
        guard fileKind(snapshot) == .directory else {
            throw NotFound(message: "\(id): the Hugging Face cache has no snapshot \(commit) (no \(snapshot)); download it with `\(download)`")
        }
        return snapshot
    }

    /// `path` itself when it exists (or is not a model id), else the snapshot of the model id in the cache;
    /// `fromCache` says which. `revision` applies to a model id only.
    public static func locate(_ path: String, revision: String?,
                              environment: [String: String]) throws(NotFound) -> (path: String, fromCache: Bool) {
        if fileKind(path) != nil || isSymlink(path) || !looksLikeModelID(path) { return (path, false) }
        return (try resolve(path, revision: revision, environment: environment), true)
    }

    static func isCommitHash(_ s: String) -> Bool {
        s.utf8.count == 40 && s.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
    }

    static func expandHome(_ path: String, _ environment: [String: String]) -> String {
        guard path == "~" || path.hasPrefix("~/") else { return path }
        let home = environment["HOME"] ?? "/"
        return home + path.dropFirst()
    }

    static func readSmallFile(_ path: String) -> String? {
        guard fileKind(path) == .regular, let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = fread(&buffer, 1, buffer.count, f)
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
