import Foundation
import SafetensorsFormat
import StrictJSON

/// A checkpoint on a Hugging Face endpoint, read from its headers alone: config.json, the index, and for every
/// shard only the 8-byte prefix and the header (two range requests), never tensor data. The result is a local
/// header-only copy in which each shard has its real size but a sparse, never-written data region, so that every
/// header-only reader (inspect) runs on it unchanged.
public enum RemoteHeaders {
    /// `hf://org/name[@revision]`.
    public struct Location: Sendable, Equatable {
        public let repo: String
        public let revision: String

        public static let scheme = "hf://"

        public init?(_ text: String) {
            guard text.hasPrefix(Location.scheme) else { return nil }
            let rest = text.dropFirst(Location.scheme.count)
            let parts = rest.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
            let repo = String(parts[0])
            let segments = repo.split(separator: "/", omittingEmptySubsequences: false)
            guard (1...2).contains(segments.count), segments.allSatisfy({ !$0.isEmpty && $0 != ".." && $0 != "." }) else { return nil }
            self.repo = repo
            revision = parts.count == 2 && !parts[1].isEmpty ? String(parts[1]) : "main"
        }

        public var description: String { Location.scheme + repo + (revision == "main" ? "" : "@" + revision) }
    }

    public struct Summary: Sendable {
        public let shards: Int
        public let bytesReceived: UInt64
        public let requests: Int
        public let seconds: Double
    }

    /// Largest config.json and index fetched (as for local files).
    public static let maxConfigBytes: UInt64 = 64 << 20
    public static let maxIndexBytes: UInt64 = 1 << 30
    public static let indexName = "model.safetensors.index.json"

    /// Writes the header-only copy of `location` into the empty directory `directory`, fetching shards on
    /// `parallel` connections at once.
    public static func fetch(_ location: Location, client: HubClient, into directory: String,
                             parallel: Int = 16) throws(RemoteError) -> Summary {
        let start = Date()
        @Sendable func url(_ file: String) -> String { client.url(repo: location.repo, revision: location.revision, file: file) }
        let config = try client.get(url("config.json"), range: 0...(maxConfigBytes - 1))
        if config.status != 404 { try write(config.body, to: directory + "/config.json", url: url("config.json")) }
        let index = try client.get(url(indexName), range: 0...(maxIndexBytes - 1))
        var shards: [String]
        if index.status == 404 {
            shards = ["model.safetensors"]
        } else {
            try write(index.body, to: directory + "/" + indexName, url: url(indexName))
            shards = try shardNames(index.body, url: url(indexName))
        }
        if config.status == 404 && index.status == 404 {
            // Nothing says this is a model repository: make the first answer about the weights say so.
            let probe = try client.get(url("model.safetensors"), range: 0...7)
            if probe.status == 404 {
                throw RemoteError(url: client.url(repo: location.repo, revision: location.revision, file: ""),
                    message: "no config.json, \(indexName) or model.safetensors: not a safetensors model repository, or not this revision")
            }
        }
        // `parallel` threads of their own (each waits on the network, so they must not be pool threads, whose
        // count follows the cores), each taking the next shard; the first failure stops them.
        let state = NSLock()
        nonisolated(unsafe) var firstFailure: RemoteError? = nil
        nonisolated(unsafe) var next = 0
        let names = shards
        let group = DispatchGroup()
        for _ in 0..<max(1, min(parallel, names.count)) {
            group.enter()
            Thread {
                defer { group.leave() }
                while true {
                    state.lock()
                    let i = next
                    next += 1
                    let stop = firstFailure != nil || i >= names.count
                    state.unlock()
                    if stop { return }
                    do throws(RemoteError) {
                        try fetchShard(url(names[i]), to: directory + "/" + names[i], client: client)
                    } catch {
                        state.lock()
                        if firstFailure == nil { firstFailure = error }
                        state.unlock()
                    }
                }
            }.start()
        }
        group.wait()
        if let firstFailure { throw firstFailure }
        return Summary(shards: shards.count, bytesReceived: client.bytesReceived, requests: client.requestCount,
                       seconds: Date().timeIntervalSince(start))
    }

    /// The prefix, then exactly the header; the file is then extended (sparsely) to the shard's real size.
    static func fetchShard(_ url: String, to path: String, client: HubClient) throws(RemoteError) {
        let prefix = try client.get(url, range: 0...(SafetensorsLimits.prefixBytes - 1))
        guard prefix.status != 404 else { throw RemoteError(url: url, message: "HTTP 404: the index names this shard, but the repository does not hold it") }
        guard prefix.body.count == 8, let total = prefix.totalSize else {
            throw RemoteError(url: url, message: "the file is shorter than a safetensors prefix (8 bytes), or the server did not say its size")
        }
        let n = prefix.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
        // A header length is validated like a local one before anything is fetched for it.
        guard n <= SafetensorsLimits.maxHeaderBytes, n >= 2, 8 + n <= total else {
            throw RemoteError(url: url, message: "header length \(n) does not fit a \(total)-byte safetensors file; this is not a safetensors file, or it is damaged")
        }
        // The CDN address the first request was redirected to serves the second range without another redirect.
        let header = try client.get(prefix.finalURL ?? url, range: 8...(8 + n - 1))
        guard header.body.count == Int(n) else {
            throw RemoteError(url: url, message: "asked for \(n) header bytes, got \(header.body.count)")
        }
        try makeParents(path, url: url)
        guard FileManager.default.createFile(atPath: path, contents: prefix.body + header.body),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw RemoteError(url: url, message: "cannot write the header-only copy at \(path)")
        }
        defer { try? handle.close() }
        do {
            try handle.truncate(atOffset: total)  // sparse: the data region is never written
        } catch {
            throw RemoteError(url: url, message: "cannot size the header-only copy at \(path): \(error)")
        }
    }

    /// The shard names of an index, each a plain relative path (as a local checkpoint requires).
    static func shardNames(_ body: Data, url: String) throws(RemoteError) -> [String] {
        let document: JSONValue
        do {
            document = try JSONParser.parse([UInt8](body))
        } catch {
            throw RemoteError(url: url, message: "not a valid index: \(error)")
        }
        guard let map = document.objectValue?["weight_map"]?.objectValue else {
            throw RemoteError(url: url, message: "the index has no weight_map object")
        }
        var seen = Set<String>()
        var names: [String] = []
        for (_, value) in map.members {
            guard let name = value.stringValue else { throw RemoteError(url: url, message: "a weight_map value is not a file name") }
            if seen.insert(name).inserted { names.append(name) }
        }
        for name in names where name.isEmpty || name.hasPrefix("/") || name.utf8.contains(0)
            || name.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == ".." || $0.isEmpty }) {
            throw RemoteError(url: url, message: "the index names the shard \"\(escapeForDisplay(name))\", which is not a plain relative path")
        }
        return names.sorted()
    }

    static func write(_ data: Data, to path: String, url: String) throws(RemoteError) {
        guard FileManager.default.createFile(atPath: path, contents: data) else {
            throw RemoteError(url: url, message: "cannot write \(path)")
        }
    }

    static func makeParents(_ path: String, url: String) throws(RemoteError) {
        let parent = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            throw RemoteError(url: url, message: "cannot create \(parent): \(error)")
        }
    }
}
