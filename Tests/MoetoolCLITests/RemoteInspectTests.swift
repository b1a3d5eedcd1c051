import FixtureSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import StrictJSON
import Testing

/// A local stand-in for the Hub (Tests/HubServer/hub_server.py): redirects, Range, a gated repository, failures.
final class HubServer {
    let process = Process()
    let port: Int
    let root: String

    /// Serves `repos` (id "org/name" -> fixture directory) from a fresh root.
    init(repos: [String: String], flaky: Bool = false) throws {
        root = Fixtures.temporaryDirectory()
        for (id, dir) in repos {
            try FileManager.default.copyItem(atPath: dir, toPath: root + "/" + id.replacingOccurrences(of: "/", with: "--"))
        }
        let script = URL(fileURLWithPath: Fixtures.root).deletingLastPathComponent().appendingPathComponent("Tests/HubServer/hub_server.py").path
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "--root", root] + (flaky ? ["--flaky"] : [])
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        // The first line says where it listens.
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let p = Int(text.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            Fixtures.removeTemporary(root)
            throw CocoaError(.fileReadCorruptFile)
        }
        port = p
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: root)
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// The endpoint under another name than the CDN it redirects to.
    var namedEndpoint: String { "http://localhost:\(port)" }

    /// Body bytes the server sent for file requests.
    func bodyBytes() throws -> UInt64 { try stat("body_bytes") }

    func stat(_ key: String) throws -> UInt64 {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var body: Data? = nil
        URLSession.shared.dataTask(with: URL(string: endpoint + "/_stats")!) { d, _, _ in body = d; done.signal() }.resume()
        done.wait()
        let data = try #require(body)
        return try #require(try JSONParser.parse([UInt8](data)).objectValue?[key]?.uint64Value)
    }

    static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/env") && (try? pythonWorks()) == true }
    static func pythonWorks() throws -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "import http.server"]
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}

@Suite(.enabled(if: HubServer.available, "python3 is needed for the local Hub stand-in"))
struct RemoteInspect {
    /// Bytes of a local checkpoint's config, index and every shard's prefix and header: all a header-only read needs.
    static func headerBytes(_ dir: String) throws -> UInt64 {
        var total: UInt64 = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
            let path = dir + "/" + name
            if name.hasSuffix(".safetensors") {
                let prefix = Fixtures.readBytes(path).prefix(8)
                total += 8 + prefix.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
            } else if name == "config.json" || name.hasSuffix(".index.json") {
                total += UInt64(Fixtures.readBytes(path).count)
            }
        }
        return total
    }

    @Test(arguments: ["models/qwen3_moe-f32-sharded", "models/deepseek_v3-bf16"])
    func theSameReportAsLocallyFromHeadersAlone(_ fixture: String) throws {
        let server = try HubServer(repos: ["tiny/model": Fixtures.path(fixture)])
        let remote = try CLI.run(["inspect", "--json", "hf://tiny/model"], environment: ["HF_ENDPOINT": server.endpoint])
        #expect(remote.status == 0, "\(remote.stderr)")
        let local = try CLI.run(["inspect", "--json", Fixtures.path(fixture)])
        #expect(remote.stdout.replacingOccurrences(of: "hf://tiny/model", with: "P") == local.stdout.replacingOccurrences(of: Fixtures.path(fixture), with: "P"))
        // Exactly the headers moved: config.json, the index, each shard's 8-byte prefix and header, no tensor byte.
        #expect(try server.bodyBytes() == (try Self.headerBytes(Fixtures.path(fixture))))
        let text = try CLI.run(["inspect", "hf://tiny/model"], environment: ["HF_ENDPOINT": server.endpoint])
        #expect(text.stdout.hasPrefix("checkpoint        hf://tiny/model ("), "\(text.stdout)")
    }

    @Test func aGatedRepositoryNeedsTheToken() throws {
        let server = try HubServer(repos: ["org/gated-model": Fixtures.path("models/mixtral-bf16")])
        let emptyHome = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(emptyHome) }
        let denied = try CLI.run(["inspect", "hf://org/gated-model"], environment: ["HF_ENDPOINT": server.endpoint, "HF_TOKEN": "", "HF_HOME": emptyHome])
        #expect(denied.status == 1)
        #expect(denied.stderr.contains("HTTP 401") && denied.stderr.contains("HF_TOKEN"), "\(denied.stderr)")
        let allowed = try CLI.run(["inspect", "hf://org/gated-model"], environment: ["HF_ENDPOINT": server.endpoint, "HF_TOKEN": "secret"])
        #expect(allowed.status == 0, "\(allowed.stderr)")
        // Asked under another host name than its CDN's, the token stays with the endpoint.
        let before = try server.stat("cdn_with_token")
        let named = try CLI.run(["inspect", "hf://org/gated-model"], environment: ["HF_ENDPOINT": server.namedEndpoint, "HF_TOKEN": "secret"])
        #expect(named.status == 0, "\(named.stderr)")
        #expect(try server.stat("cdn_with_token") == before)
        // The token file the Hugging Face CLI writes is read too.
        let home = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(home) }
        try Data("secret\n".utf8).write(to: URL(fileURLWithPath: home + "/token"))
        let fromFile = try CLI.run(["inspect", "hf://org/gated-model"], environment: ["HF_ENDPOINT": server.endpoint, "HF_TOKEN": "", "HF_HOME": home])
        #expect(fromFile.status == 0, "\(fromFile.stderr)")
    }

    @Test func failuresAreRetried() throws {
        let server = try HubServer(repos: ["tiny/model": Fixtures.path("models/qwen2_moe-f32-sharded")], flaky: true)
        let r = try CLI.run(["inspect", "--json", "hf://tiny/model"], environment: ["HF_ENDPOINT": server.endpoint])
        #expect(r.status == 0, "\(r.stderr)")
        let local = try CLI.run(["inspect", "--json", Fixtures.path("models/qwen2_moe-f32-sharded")])
        #expect(r.stdout.replacingOccurrences(of: "hf://tiny/model", with: "P")
                == local.stdout.replacingOccurrences(of: Fixtures.path("models/qwen2_moe-f32-sharded"), with: "P"))
    }

    @Test func whatCannotBeDoneIsSaid() throws {
        let server = try HubServer(repos: ["tiny/model": Fixtures.path("models/mixtral-bf16")])
        let missing = try CLI.run(["inspect", "hf://nobody/nothing"], environment: ["HF_ENDPOINT": server.endpoint])
        #expect(missing.status == 1 && missing.stderr.contains("not a safetensors model repository"), "\(missing.stderr)")
        let scan = try CLI.run(["inspect", "--scan", "hf://tiny/model"], environment: ["HF_ENDPOINT": server.endpoint])
        #expect(scan.status == 2 && scan.stderr.contains("headers only"), "\(scan.stderr)")
        // Nothing listens there: a clear error after the retries, never a hang.
        let closed = try CLI.run(["inspect", "hf://tiny/model"], environment: ["HF_ENDPOINT": "http://127.0.0.1:9"])
        #expect(closed.status == 1 && closed.stderr.contains("retries"), "\(closed.stderr)")
    }
}
