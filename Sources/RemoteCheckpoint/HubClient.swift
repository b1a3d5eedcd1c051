import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Why a remote read failed.
public struct RemoteError: Error, Sendable, CustomStringConvertible {
    public let url: String
    public let message: String
    public var description: String { "\(url): \(message)" }
}

/// Blocking HTTP GETs against a Hugging Face endpoint (the Hub, or a mirror named by HF_ENDPOINT), with a token,
/// redirects followed (the Hub answers `/resolve/` with a redirect to its CDN), retries with backoff on 429, 5xx
/// and dropped connections (honouring Retry-After), and a timeout on every request: an error, never a hang.
///
/// FoundationNetworking's URLSession is used: it ships with the Swift toolchain on Linux (over libcurl), so it
/// adds no dependency, and it follows redirects and reuses connections by itself.
public final class HubClient: @unchecked Sendable {
    public struct Options: Sendable {
        public var endpoint: String
        public var token: String?
        public var timeoutSeconds: Double = 30
        public var retries = 5
        /// First backoff; doubled at each retry (Retry-After wins when the server sends one).
        public var backoffSeconds: Double = 0.25
        public init(endpoint: String, token: String?) {
            self.endpoint = endpoint
            self.token = token
        }

        /// From the environment as the Hugging Face tools read it: HF_ENDPOINT (default the Hub), HF_TOKEN, else
        /// the token file the CLI writes (HF_TOKEN_PATH, else HF_HOME/token, else ~/.cache/huggingface/token).
        public static func fromEnvironment(_ env: [String: String]) -> Options {
            let endpoint = env["HF_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? "https://huggingface.co"
            var token = env["HF_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            if token == nil {
                let home = env["HOME"] ?? "/"
                let hfHome = env["HF_HOME"].flatMap { $0.isEmpty ? nil : $0 }
                    ?? (env["XDG_CACHE_HOME"].map { $0 + "/huggingface" } ?? home + "/.cache/huggingface")
                let path = env["HF_TOKEN_PATH"] ?? hfHome + "/token"
                token = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                if token?.isEmpty == true { token = nil }
            }
            return Options(endpoint: endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint, token: token)
        }
    }

    public struct Response: Sendable {
        public let status: Int
        public let body: Data
        /// The whole file's size, from Content-Range (a range request) or the body (a full one).
        public let totalSize: UInt64?
        /// Where the bytes came from after redirects (a second range of the same file goes straight there).
        public var finalURL: String? = nil
    }

    public let options: Options
    let session: URLSession
    /// Body bytes received and requests sent, for the report and the tests.
    private let counters = NSLock()
    private var received: UInt64 = 0
    private var requests = 0

    public var bytesReceived: UInt64 { counters.lock(); defer { counters.unlock() }; return received }
    public var requestCount: Int { counters.lock(); defer { counters.unlock() }; return requests }

    public init(_ options: Options) {
        self.options = options
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = options.timeoutSeconds
        configuration.timeoutIntervalForResource = options.timeoutSeconds * 4
        configuration.httpMaximumConnectionsPerHost = 16
        session = URLSession(configuration: configuration, delegate: RedirectPolicy(), delegateQueue: nil)
    }

    /// The token goes to the endpoint's host only: a redirect elsewhere (the Hub's CDN, whose URLs are signed)
    /// is followed without it, as huggingface_hub and `requests` do.
    final class RedirectPolicy: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            var next = request
            if next.url?.host != task.originalRequest?.url?.host { next.setValue(nil, forHTTPHeaderField: "Authorization") }
            completionHandler(next)
        }
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`.
    public func url(repo: String, revision: String, file: String) -> String {
        "\(options.endpoint)/\(repo)/resolve/\(revision.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? revision)/\(file)"
    }

    /// GET `url`, only `range` of it when given. 404 comes back as a response; other failures throw after retries.
    public func get(_ url: String, range: ClosedRange<UInt64>? = nil) throws(RemoteError) -> Response {
        guard let target = URL(string: url) else { throw RemoteError(url: url, message: "not a valid URL") }
        var request = URLRequest(url: target)
        if let range { request.setValue("bytes=\(range.lowerBound)-\(range.upperBound)", forHTTPHeaderField: "Range") }
        if let token = options.token, target.host == URL(string: options.endpoint)?.host {
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        }
        var attempt = 0
        while true {
            attempt += 1
            let (data, response, failure) = send(request)
            counters.lock()
            requests += 1
            received += UInt64(data?.count ?? 0)
            counters.unlock()
            var retryAfter: Double? = nil
            var why: String
            if let http = response as? HTTPURLResponse {
                switch http.statusCode {
                case 200, 206:
                    guard let data else { throw RemoteError(url: url, message: "empty answer") }
                    if let range, http.statusCode == 200, UInt64(data.count) > range.upperBound - range.lowerBound + 1 {
                        // A server that ignores Range would send whole shards: refuse rather than download them.
                        throw RemoteError(url: url, message: "the server ignored the byte range and sent the whole file; header-only reading needs Range support")
                    }
                    return Response(status: http.statusCode, body: data, totalSize: totalSize(http, bodyCount: data.count),
                                    finalURL: http.url?.absoluteString)
                case 404:
                    return Response(status: 404, body: Data(), totalSize: nil)
                case 401, 403:
                    throw RemoteError(url: url, message: "HTTP \(http.statusCode): the repository is gated or private, or the token is missing or wrong; accept its terms on the Hub and set HF_TOKEN (or run `hf auth login`)")
                case 429, 500...599:
                    why = "HTTP \(http.statusCode)"
                    retryAfter = (http.value(forHTTPHeaderField: "Retry-After")).flatMap(Double.init)
                default:
                    throw RemoteError(url: url, message: "HTTP \(http.statusCode)")
                }
            } else {
                why = failure.map { "\($0.localizedDescription)" } ?? "no answer"
            }
            guard attempt <= options.retries else {
                throw RemoteError(url: url, message: "\(why), still after \(options.retries) retries")
            }
            let wait = min(retryAfter ?? options.backoffSeconds * Double(1 << min(attempt - 1, 10)), 60)
            Thread.sleep(forTimeInterval: max(wait, 0))
        }
    }

    func send(_ request: URLRequest) -> (Data?, URLResponse?, Error?) {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: (Data?, URLResponse?, Error?) = (nil, nil, nil)
        session.dataTask(with: request) { data, response, error in
            result = (data, response, error)
            done.signal()
        }.resume()
        done.wait()
        return result
    }

    func totalSize(_ http: HTTPURLResponse, bodyCount: Int) -> UInt64? {
        if let range = http.value(forHTTPHeaderField: "Content-Range"), let slash = range.lastIndex(of: "/") {
            return UInt64(range[range.index(after: slash)...])
        }
        return http.statusCode == 200 ? UInt64(bodyCount) : nil
    }
}
