import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A checkpoint laid out as a tree, the way real ones are: a shard in a subdirectory named by the
/// index, `tokenizer/` and `original/` directories, an empty directory, a hidden file, and a file that
/// is a symlink into a blob store beside the checkpoint (as in the Hugging Face cache). Made from the
/// 5-shard DeepSeek-V3 fixture.
public enum CheckpointTree {
    /// Files every copy of the tree holds (relative paths), and the shards among them.
    public static let shards = ["model-00001-of-00005.safetensors", "model-00002-of-00005.safetensors",
                                "model-00003-of-00005.safetensors", "model-00004-of-00005.safetensors",
                                "sub/model-00005-of-00005.safetensors", "original/x.safetensors"]

    /// Makes the tree at `root/IN` (and its blob store at `root/blobs`); returns the path of IN.
    public static func make(in root: String) throws -> String {
        let fm = FileManager.default
        let source = Fixtures.path("models/deepseek_v3-f32-sharded")
        let input = root + "/IN"
        for dir in ["blobs", "IN/sub", "IN/original", "IN/tokenizer", "IN/empty"] {
            try fm.createDirectory(atPath: root + "/" + dir, withIntermediateDirectories: true)
        }
        for n in 1...4 {
            let name = "model-0000\(n)-of-00005.safetensors"
            try fm.copyItem(atPath: source + "/" + name, toPath: input + "/" + name)
        }
        try fm.copyItem(atPath: source + "/model-00005-of-00005.safetensors", toPath: input + "/sub/model-00005-of-00005.safetensors")
        try fm.copyItem(atPath: source + "/model-00005-of-00005.safetensors", toPath: input + "/original/x.safetensors")
        let index = String(decoding: Fixtures.readBytes(source + "/model.safetensors.index.json"), as: UTF8.self)
            .replacingOccurrences(of: "\"model-00005-of-00005", with: "\"sub/model-00005-of-00005")
        _ = fm.createFile(atPath: input + "/model.safetensors.index.json", contents: Data(index.utf8))
        _ = fm.createFile(atPath: root + "/blobs/3f2a", contents: Fixtures.readBytes(source + "/config.json").withUnsafeBytes { Data($0) })
        try fm.createSymbolicLink(atPath: input + "/config.json", withDestinationPath: "../blobs/3f2a")
        _ = fm.createFile(atPath: input + "/tokenizer/tokenizer.json", contents: Data("{\"version\": \"1.0\"}\n".utf8))
        _ = fm.createFile(atPath: input + "/.gitattributes", contents: Data("*.safetensors filter=lfs\n".utf8))
        return input
    }

    /// Every file and directory under `dir` (relative paths, hidden ones included), directories marked with a final "/".
    public static func entries(_ dir: String) -> [String] {
        (FileManager.default.enumerator(atPath: dir)?.allObjects as? [String] ?? []).map { name in
            var isDir: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: dir + "/" + name, isDirectory: &isDir)
            return isDir.boolValue ? name + "/" : name
        }.sorted()
    }

    /// What differs between `copy` and `original`: the entries of `copy` against `expected` (entries as
    /// `entries` gives them; the original may hold more, such as sockets), and every file's bytes.
    public static func differences(_ copy: String, _ original: String, expected: [String]) -> [String] {
        var out: [String] = []
        let names = entries(copy)
        if names != expected { out.append("entries: \(names), expected \(expected)") }
        for name in names where !name.hasSuffix("/") && Fixtures.readBytes(copy + "/" + name) != Fixtures.readBytes(original + "/" + name) {
            out.append("\(name) differs")
        }
        return out
    }
}
