import Crypto
import SafetensorsFormat
import Support

/// SHA-256 of whole files, read through the memory map in slices so memory stays flat.
public enum FileChecksum {
    /// Hex digest of the mapped file; `progress` gets bytes hashed since the last call.
    public static func sha256(_ mapping: MappedFile, progress: (@Sendable (UInt64) -> Void)? = nil) -> String {
        var hasher = SHA256()
        mapping.adviseSequential(0..<mapping.size)
        mapping.slices { slice, _ in
            hasher.update(bufferPointer: slice)
            progress?(UInt64(slice.count))
        }
        return hasher.finalize().map { b in
            let s = String(b, radix: 16)
            return b < 16 ? "0" + s : s
        }.joined()
    }

    /// Digests of several files, hashed in parallel (`threads`: 0 for all cores).
    public static func sha256(_ files: [SafetensorsFile], threads: Int = 0,
                              progress: (@Sendable (UInt64) -> Void)? = nil) -> [String] {
        parallelMap(files.count, threads: threads) { i in sha256(files[i].mapping, progress: progress) }
    }
}
