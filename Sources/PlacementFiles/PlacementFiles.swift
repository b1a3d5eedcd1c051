import CZstd
import ExpertPlacement
import SafetensorsFormat
import StrictJSON
#if canImport(Glibc)
import Glibc
#endif

/// The file layer of expert placement. ExpertPlacement holds the algorithms and, beside them, the
/// profile and placement formats as pure functions (bytes in, values out; values in, documents
/// out), so all of it is testable without files and needs neither libzstd nor the safetensors
/// machinery. This module opens files, decompresses zstd, writes placements atomically and
/// shapes the report the user reads (whose file names are escaped for the terminal here). It is a
/// target of its own, not part of the CLI, because the tests, the fuzz replayer and the CLI all
/// read profiles the same way; it stays small, and its functions extend the format types
/// (`LoadProfile.read`, `PlacementFile.read`, `PlacementFile.write`) so callers name the format,
/// not the layer.
///
/// Profiles: a JSON or CSV file, parsed by `LoadProfile.parse`, or SGLang's torch.save dump
/// (`SGLangDump`, read by TorchArchive), zstd-compressed or not; several as windows (`readWindows`).
extension LoadProfile {
    /// Reads a JSON or CSV profile or an SGLang dump, zstd-compressed or not (recognised by
    /// content, not name: `FileFormat`), and parses and checks it. A dump's windows are summed and
    /// its dense layers dropped as `readWindows` does without a config.
    public static func read(path: String, expectedExperts: Int? = nil) throws(PlacementError) -> LoadProfile {
        switch try readAny(path: path, expectedExperts: expectedExperts) {
        case .profile(let p): return p
        case .dump: return try readWindows(paths: [path], expectedExperts: expectedExperts).total()
        }
    }

    /// The first bytes of every zstd frame.
    public static let zstdMagic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

    /// Streams a zstd frame (or several) through libzstd, refusing output beyond `maxBytes` as
    /// soon as it is produced (a small file can expand to terabytes).
    public static func decompress(_ input: [UInt8], path: String) throws(PlacementError) -> [UInt8] {
        guard let stream = ZSTD_createDStream() else { throw PlacementError(.zstdInvalid, file: path, "zstd: out of memory") }
        defer { ZSTD_freeDStream(stream) }
        ZSTD_initDStream(stream)
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: ZSTD_DStreamOutSize())
        let failure: PlacementError? = input.withUnsafeBytes { src -> PlacementError? in
            var inBuf = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
            while true {
                let (result, produced) = buffer.withUnsafeMutableBytes { dst -> (Int, Int) in
                    var outBuf = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
                    let r = ZSTD_decompressStream(stream, &outBuf, &inBuf)
                    return (r, outBuf.pos)
                }
                if ZSTD_isError(result) != 0 {
                    return PlacementError(.zstdInvalid, file: path, "zstd: \(String(cString: ZSTD_getErrorName(result)))")
                }
                guard out.count + produced <= maxBytes else {
                    return PlacementError(.fileTooLarge, file: path, "zstd: decompresses to more than \(maxBytes) bytes, more than a load profile can be")
                }
                out.append(contentsOf: buffer[0..<produced])
                let consumed = inBuf.pos == inBuf.size
                if consumed && result == 0 { return nil }  // the last frame is complete and flushed
                if consumed && produced == 0 { return PlacementError(.zstdInvalid, file: path, "zstd: truncated (the last frame is incomplete)") }
            }
        }
        if let failure { throw failure }
        return out
    }
}

extension PlacementFile {
    /// Reads a deployed placement (moetool's or SGLang's) and checks it against the plan's shape
    /// (`parse`).
    public static func read(path: String, topology: Topology, layers: Int, decoderLayers: DecoderLayers? = nil) throws(PlacementError) -> [LayerPlacement] {
        try parse(FileBytes.read(path), path: path, topology: topology, layers: layers, decoderLayers: decoderLayers)
    }

    /// Writes a placement document to a temporary name beside `path` and renames it into place
    /// once complete: an existing file is untouched if anything fails.
    public static func write(_ document: JSONValue, to path: String) throws(PlacementError) {
        try writeAtomically(Array((JSONSerializer.pretty(document) + "\n").utf8), to: path)
    }
}

extension PlanHTML {
    /// Writes the HTML report the same way: whole, then renamed into place.
    public static func write(_ report: PlanHTML, to path: String) throws(PlacementError) {
        try writeAtomically(Array(report.render().utf8), to: path)
    }
}

/// `bytes` to a temporary name beside `path`, renamed into place once complete.
func writeAtomically(_ bytes: [UInt8], to path: String) throws(PlacementError) {
    do {
        let file = try AtomicFile(path: path)
        do {
            try file.write(bytes)
            try file.commit()
        } catch {
            file.abort()
            throw error
        }
    } catch let e as IOError {
        throw PlacementError(.unwritable, file: e.path, e.message)
    } catch {
        throw PlacementError(.unwritable, file: path, "\(error)")
    }
}

/// A whole regular file, at most `LoadProfile.maxBytes`, read into memory (profiles and
/// placements are small; the limit is checked before anything is allocated).
enum FileBytes {
    static func read(_ path: String) throws(PlacementError) -> [UInt8] {
        func failure(_ what: String) -> PlacementError {
            PlacementError(.unreadable, file: path, "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("cannot open") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw failure("cannot stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw PlacementError(.unreadable, file: path, "not a regular file") }
        let limit = LoadProfile.maxBytes
        guard st.st_size <= limit else {
            throw PlacementError(.fileTooLarge, file: path, "\(st.st_size) bytes is larger than a load profile can be (\(limit))")
        }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw PlacementError(.unreadable, file: path,
                                     "read failed after \(done) bytes: \(n < 0 ? String(cString: strerror(errno)) : "the file shrank")")
            }
            done += n
        }
        return out
    }
}
