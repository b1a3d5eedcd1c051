import Foundation
import StrictJSON

/// Paths and manifests of the committed fixtures (made by Fixtures/generate.py).
public enum Fixtures {
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("Fixtures").path
    }()

    public static func path(_ relative: String) -> String { root + "/" + relative }

    /// Parses a JSON fixture file with our strict parser.
    public static func json(_ relative: String) -> JSONValue {
        let data = FileManager.default.contents(atPath: path(relative)) ?? Data()
        do {
            return try JSONParser.parse([UInt8](data))
        } catch {
            fatalError("fixture \(relative) is not valid JSON: \(error)")
        }
    }

    /// The entries of a manifest (a JSON array of objects).
    public static func manifest(_ relative: String) -> [JSONObject] {
        json(relative).arrayValue?.compactMap(\.objectValue) ?? []
    }

    /// Names of the checkpoints recorded under Fixtures/expected/.
    public static var expectedCheckpoints: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path("expected"))) ?? []
        return names.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }

    private static let temporaryPrefix = "moetool-test-"

    /// A fresh empty directory under the system temporary directory. Remove it when done, whatever happens:
    /// `let dir = Fixtures.temporaryDirectory()` then `defer { Fixtures.removeTemporary(dir) }`.
    public static func temporaryDirectory() -> String {
        let dir = NSTemporaryDirectory() + temporaryPrefix + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Removes the directory `temporaryDirectory()` made that holds `path` (`path` itself, or `path` below it,
    /// as in `temporaryDirectory() + "/out"`), with everything in it. Nothing else is ever removed.
    public static func removeTemporary(_ path: String) {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        while !url.lastPathComponent.hasPrefix(temporaryPrefix) {
            guard url.pathComponents.count > 1 else { return }
            url.deleteLastPathComponent()
        }
        try? FileManager.default.removeItem(at: url)
    }

    public static func readBytes(_ path: String) -> [UInt8] {
        [UInt8](FileManager.default.contents(atPath: path) ?? Data())
    }
}
