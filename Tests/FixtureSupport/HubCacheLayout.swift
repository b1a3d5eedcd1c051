import Foundation

/// A Hugging Face hub cache built the way `hf download` leaves one: `models--org--name/blobs/<sha256>`,
/// `refs/main` holding the commit, and `snapshots/<commit>/<file>` as relative symlinks into `../../blobs`.
public enum HubCacheLayout {
    public static let commit = "0123456789abcdef0123456789abcdef01234567"

    /// Puts the files of `model` (a fixture directory) under `cache` as model `id`; returns the snapshot directory.
    @discardableResult
    public static func add(model: String, id: String, to cache: String, revision: String = "main") throws -> String {
        let repo = cache + "/models--" + id.replacingOccurrences(of: "/", with: "--")
        let snapshot = repo + "/snapshots/" + commit
        try FileManager.default.createDirectory(atPath: repo + "/blobs", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: repo + "/refs", withIntermediateDirectories: true)
        try Data(commit.utf8).write(to: URL(fileURLWithPath: repo + "/refs/" + revision))
        for relative in try FileManager.default.subpathsOfDirectory(atPath: model).sorted() {
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: model + "/" + relative, isDirectory: &isDirectory)
            let link = snapshot + "/" + relative
            if isDirectory.boolValue {
                try FileManager.default.createDirectory(atPath: link, withIntermediateDirectories: true)
                continue
            }
            let blob = try sha256(model + "/" + relative)
            if !FileManager.default.fileExists(atPath: repo + "/blobs/" + blob) {
                try FileManager.default.copyItem(atPath: model + "/" + relative, toPath: repo + "/blobs/" + blob)
            }
            try FileManager.default.createDirectory(atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let depth = relative.split(separator: "/").count + 1  // snapshots/<commit>/<relative>
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: String(repeating: "../", count: depth) + "blobs/" + blob)
        }
        return snapshot
    }

    /// The SHA-256 of a file, as the cache names blobs (by `sha256sum`, a second implementation to ours).
    static func sha256(_ path: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = [path]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(String(decoding: out, as: UTF8.self).prefix(64))
    }
}
