import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Checkpoint
import Inspection
import SafetensorsFormat
import RemoteCheckpoint
import StrictJSON
import WeightReading
import Support

struct Inspect: ReportsErrorsAsJSON {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Validate a safetensors file or checkpoint from its headers and summarise it.",
        discussion: """
            PATH is a .safetensors file, a directory holding model.safetensors, or a sharded \
            checkpoint directory with model.safetensors.index.json (and config.json for the MoE view). \
            Every header is validated completely; an invalid input exits 1 with every problem listed, \
            a usage error exits 2. --json prints schema moetool.inspect/1 (see Docs/inspect.md); \
            --threads is for --scan and --checksum.
            """)

    @Argument(help: "A .safetensors file, a checkpoint directory, a model id (org/name) in the Hugging Face cache, or hf://org/name[@rev] (headers read over HTTP).")
    var path: String

    @OptionGroup var source: CheckpointSource

    @Flag(help: "List tensors (names collapsed into patterns unless --no-collapse).")
    var tensors = false

    @Option(help: ArgumentHelp("Only list or scan tensors whose name matches this POSIX extended regular expression.", valueName: "regex"))
    var filter: String?

    @Flag(help: "With --tensors: list every name instead of collapsing numbered names into patterns.")
    var noCollapse = false

    @Flag(help: "With --tensors --no-collapse: show each tensor's file and data offsets.")
    var offsets = false

    @Flag(help: "Read the data: NaN/Inf counts, min, max, mean and std for every float tensor, encoded weights decoded (and their bad scales counted).")
    var scan = false

    @Flag(help: "Read the data: SHA-256 of every file.")
    var checksum = false

    @OptionGroup var common: CommonOptions

    @Flag(help: "Treat warnings (inconsistencies that load correctly) as errors: exit 1 when there is any.")
    var strict = false

    var json: Bool { common.json }
    var quiet: Bool { common.quiet }
    var threads: Int { common.threads }

    func validate() throws {
        if offsets && !noCollapse { throw ValidationError("--offsets needs --tensors --no-collapse") }
        if noCollapse && !tensors { throw ValidationError("--no-collapse applies to --tensors: add --tensors") }
        if filter != nil && !tensors && !scan {
            throw ValidationError("--filter chooses the tensors --tensors lists or --scan reads: add one of them")
        }
        if let filter { _ = try makeFilter(filter) }
        if common.threads != 0 && !scan && !checksum {
            throw ValidationError("--threads sets the cores --scan and --checksum read with; headers alone need no threads: add one of them")
        }
    }

    func makeFilter(_ pattern: String) throws -> NameFilter {
        do {
            return try NameFilter(pattern)
        } catch {
            throw ValidationError("--filter: \(error)")
        }
    }

    func run() throws {
        if let remote = RemoteHeaders.Location(path) { return try runRemote(remote) }
        try inspect(try source.locate(path))
    }

    /// `hf://org/name[@rev]`: the headers are fetched into a temporary header-only copy, which is inspected like a
    /// local checkpoint, every path in the output shown as the remote one.
    func runRemote(_ location: RemoteHeaders.Location) throws {
        if scan || checksum {
            throw CommandError.usage("--scan and --checksum read tensor data, and hf:// reads headers only",
                                     hint: "download the checkpoint (hf download \(location.repo)) and inspect it locally")
        }
        if source.revision != nil {
            throw CommandError.usage("give the revision in the address (hf://\(location.repo)@REV), not with --revision")
        }
        let scratch = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/moetool-remote-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false)
        } catch {
            throw CommandError("scratch_directory", "cannot create a scratch directory for the headers: \(error)", hint: "check TMPDIR")
        }
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let client = HubClient(.fromEnvironment(ProcessInfo.processInfo.environment))
        let summary: RemoteHeaders.Summary
        do {
            summary = try RemoteHeaders.fetch(location, client: client, into: scratch)
        } catch {
            throw CommandError("remote_headers", "\(error)")
        }
        if !quiet && !json {
            FileHandleOutput.stderr("fetched the headers of \(counted(summary.shards, "file")): \(counted(summary.bytesReceived, "byte")) in \(counted(summary.requests, "request")), \(fixedText(summary.seconds, places: 2)) s\n")
        }
        try inspect(scratch, shownAs: location.description, cleanUp: scratch)
    }

    /// `shownAs`: the name printed for `located` (and its files) instead of its path; `cleanUp`: removed before exit.
    func inspect(_ located: String, shownAs: String? = nil, cleanUp: String? = nil) throws {
        let rename: (String) -> String = { text in shownAs.map { text.replacingOccurrences(of: located, with: $0) } ?? text }
        let checkpoint: Checkpoint
        do {
            checkpoint = try Checkpoint(path: located)
        } catch {
            if json {
                FileHandleOutput.document(rename(JSONSerializer.pretty(InspectReport.invalidJSON(path: path, problems: error.problems))))
            }
            let shown = error.problems.prefix(200)
            for p in shown { FileHandleOutput.stderr(rename("error: \(p)\n")) }
            if error.problems.count > shown.count {
                FileHandleOutput.stderr("error: ... and \(error.problems.count - shown.count) more problems (see --json)\n")
            }
            FileHandleOutput.stderr("\(escapeForDisplay(path)): invalid (\(counted(error.problems.count, "problem")))\n")
            throw ExitStatus.invalidInput
        }

        var report = InspectReport(checkpoint: checkpoint)
        let include: ((String) -> Bool)? = try filter.map(makeFilter).map { f in { f.matches($0) } }

        if scan {
            report.scan = try scanData(checkpoint, include: include, scaleFindings: &report.scaleFindings)
        }
        if checksum {
            let bar = ProgressBar(label: "sha256", total: checkpoint.fileBytes, quiet: quiet)
            let digests = FileChecksum.sha256(checkpoint.files, threads: threads, progress: { bar.advance($0) })
            bar.finish()
            report.checksums = digests.enumerated().map { (file: checkpoint.storedFileName($0.offset), sha256: $0.element) }
        }

        let listing = tensors ? TensorListing(checkpoint: checkpoint, include: include, collapse: !noCollapse) : nil
        if json {
            FileHandleOutput.document(rename(JSONSerializer.pretty(report.json(tensorList: listing?.json(offsets: offsets), strict: strict))))
            finish(report, rename: rename, cleanUp: cleanUp)
        }
        FileHandleOutput.stdout(rename(report.text()))
        if let listing {
            FileHandleOutput.stdout("\ntensors\(listing.collapsed ? " (numbered names collapsed; --no-collapse for all)" : "")\n")
            FileHandleOutput.stdout(listing.text(offsets: offsets))
        }
        if let scanned = report.scan {
            FileHandleOutput.stdout("\nscan\n")
            FileHandleOutput.stdout(ScanTable.render(scanned))
            for (name, f) in report.scaleFindings {
                let parts = [(f.zero, "zero"), (f.negative, "negative"), (f.nonFinite, "not finite"), (f.notPowerOfTwo, "not a power of two (ue8m0)")]
                    .filter { $0.0 > 0 }.map { "\($0.0) \($0.1)" }
                FileHandleOutput.stdout("scales of \(escapeForDisplay(name)): \(parts.joined(separator: ", "))\n")
            }
        }
        finish(report, rename: rename, cleanUp: cleanUp)
    }

    /// Output is written (unbuffered); skip tearing down ~100k names and shapes.
    /// Exit 1 when the checkpoint would load wrongly (or, with --strict, when anything was worth a warning).
    private func finish(_ report: InspectReport, rename: (String) -> String, cleanUp: String?) -> Never {
        let problems = report.problems
        let warnings = strict ? report.warnings : []
        for p in problems.prefix(200) { FileHandleOutput.stderr(rename("error: \(p)\n")) }
        for w in warnings.prefix(200) { FileHandleOutput.stderr(rename("error: \(w) [\(w.kind.rawValue)] (--strict)\n")) }
        if let cleanUp { try? FileManager.default.removeItem(atPath: cleanUp) }
        let count = problems.count + warnings.count
        if count > 0 {
            FileHandleOutput.stderr("\(escapeForDisplay(path)): invalid (\(counted(count, "problem")))\n")
        }
        withExtendedLifetime(report) { Glibc.exit(count > 0 ? 1 : 0) }
    }
}

extension Inspect {
    /// --scan: encoded weights (FP8 blocks, packed integers, FP4) decoded as the model receives them, under their
    /// logical names; their scales and other bookkeeping folded into them; every other float tensor as stored.
    func scanData(_ checkpoint: Checkpoint, include: ((String) -> Bool)?,
                  scaleFindings: inout [(name: String, findings: TensorScan.ScaleFindings)]) throws -> [(name: String, kind: String, stats: TensorStats)] {
        let reader: CheckpointReader
        let encoded: (weights: [LogicalWeight], foldedInto: [String: String])
        do throws(WeightReadError) {
            reader = try CheckpointReader(checkpoint)
            encoded = try reader.encodedWeights()
        } catch {
            throw CommandError(error)
        }
        let weights = encoded.weights.filter { include?($0.name) ?? true }
        let codes = Set(encoded.weights.map(\.codes.tensor.name))
        let targets = checkpoint.allTensors
            .filter { !codes.contains($0.tensor.name) && encoded.foldedInto[$0.tensor.name] == nil && (include?($0.tensor.name) ?? true) }
            .map { TensorScan.Target(file: checkpoint.file($0), tensor: $0.tensor) }
        let total = targets.filter { $0.tensor.dtype.isScannableFloat }.reduce(UInt64(0)) { $0 + $1.tensor.byteCount }
            + weights.reduce(UInt64(0)) { $0 + $1.codes.tensor.byteCount }
        let bar = ProgressBar(label: "scan", total: total, quiet: quiet)
        defer { bar.finish() }
        do throws(WeightReadError) {
            let stored = try TensorScan.scan(targets, threads: threads, progress: { bar.advance($0) })
            let decoded = try TensorScan.scanDecoded(weights, reader: reader, threads: threads, progress: { bar.advance($0) })
            // In file order, an encoded weight where its codes are.
            var byName: [String: (name: String, kind: String, stats: TensorStats)] = [:]
            for (t, r) in zip(targets, stored) { if let r { byName[t.tensor.name] = (t.tensor.name, t.tensor.dtype.rawValue, r) } }
            for (w, r) in zip(weights, decoded) { byName[w.codes.tensor.name] = (w.name, w.encoding.name, r.stats) }
            scaleFindings = zip(weights, decoded).filter { !$1.scales.isEmpty }.map { (name: $0.name, findings: $1.scales) }
            return checkpoint.allTensors.compactMap { byName[$0.tensor.name] }
        } catch {
            throw CommandError(error)
        }
    }
}

enum ScanTable {
    static func render(_ rows: [(name: String, kind: String, stats: TensorStats)]) -> String {
        func num(_ x: Double, _ ok: Bool) -> String {
            guard ok else { return "-" }
            return significantText(x, digits: 6)
        }
        let width = min(80, rows.map { escapeForDisplay($0.name).count }.max() ?? 4)
        // Wide enough for an encoding's name (`int4-pack-asym`), as narrow as a dtype's otherwise.
        let kindWidth = max(9, rows.map(\.kind.count).max() ?? 0)
        var out = "name".leftAligned(width, truncating: true) + "  " + "dtype".leftAligned(kindWidth) + "nan".rightAligned(6) + " "
            + "inf".rightAligned(6) + " " + "min".rightAligned(12) + " " + "max".rightAligned(12) + " "
            + "mean".rightAligned(12) + " " + "std".rightAligned(12) + "\n"
        for r in rows {
            let s = r.stats
            let ok = s.finite > 0
            out += escapeForDisplay(r.name).leftAligned(width, truncating: true) + "  "
            out += r.kind.leftAligned(kindWidth)
            out += String(s.nan).rightAligned(6) + " " + String(s.posInf + s.negInf).rightAligned(6) + " "
            out += num(s.min, ok).rightAligned(12) + " " + num(s.max, ok).rightAligned(12) + " "
            out += num(s.mean, ok).rightAligned(12) + " " + num(s.std, ok).rightAligned(12) + "\n"
        }
        return out
    }
}
