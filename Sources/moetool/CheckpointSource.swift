import ArgumentParser
import Checkpoint
import Foundation

/// Where a command's checkpoints come from: local paths, or model ids found in the Hugging Face cache.
struct CheckpointSource: ParsableArguments {
    @Option(help: ArgumentHelp("With a model id (org/name) in the Hugging Face cache: the branch, tag or commit (default main).",
                               valueName: "rev"))
    var revision: String?

    /// Each path as given when it exists, else the cache snapshot of the model id it names. Exit 1 with a
    /// message naming what was looked for when a model id is not in the cache.
    func locate(_ paths: [String]) throws -> [String] { try CheckpointSource.locate(paths, revision: revision) }

    func locate(_ path: String) throws -> String { try locate([path])[0] }

    /// The same for a command without --revision (a model id then means its main branch).
    static func locate(_ path: String) throws -> String { try locate([path], revision: nil)[0] }

    static func locate(_ paths: [String], revision: String?) throws -> [String] {
        var located: [String] = []
        var fromCache = false
        for path in paths {
            do throws(HubCache.NotFound) {
                let found = try HubCache.locate(path, revision: revision, environment: ProcessInfo.processInfo.environment)
                located.append(found.path)
                fromCache = fromCache || found.fromCache
            } catch {
                throw CommandError("not_found", "\(error)")
            }
        }
        if revision != nil && !fromCache {
            throw CommandError.usage("--revision applies to a model id in the Hugging Face cache, and \(paths.joined(separator: ", ")) is a local path")
        }
        return located
    }
}
