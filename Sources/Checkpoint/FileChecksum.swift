import CLibcrypto
import SafetensorsFormat
import Support

/// An incremental SHA-256 by the system's libcrypto (OpenSSL), which picks its SHA-NI, AVX2 or portable
/// code for the CPU at run time. One object per stream; not shared between threads.
public final class SHA256Hasher {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new() else { fatalError("libcrypto could not allocate a digest context") }
        self.context = context
        // Fails only without memory or with a broken libcrypto: nothing a caller could do about it.
        precondition(EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1, "libcrypto refused SHA-256")
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        precondition(EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) == 1, "libcrypto refused SHA-256 input")
    }

    /// The digest as 64 lowercase hex digits (as sha256sum prints it); the hasher is finished after this.
    public func hexDigest() -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        precondition(EVP_DigestFinal_ex(context, &digest, &length) == 1 && length == 32, "libcrypto refused to finish SHA-256")
        return hexString(digest[0..<32])
    }

    /// SHA-256 of bytes in memory, as hex.
    public static func hexDigest(of bytes: some Collection<UInt8>) -> String {
        let hasher = SHA256Hasher()
        Array(bytes).withUnsafeBytes { hasher.update($0) }
        return hasher.hexDigest()
    }
}

/// SHA-256 of whole files, read through the memory map in slices so memory stays flat.
public enum FileChecksum {
    /// Hex digest of the mapped file; `progress` gets bytes hashed since the last call.
    public static func sha256(_ mapping: MappedFile, progress: (@Sendable (UInt64) -> Void)? = nil) -> String {
        let hasher = SHA256Hasher()
        mapping.adviseSequential(0..<mapping.size)
        mapping.slices { slice, _ in
            hasher.update(slice)
            progress?(UInt64(slice.count))
        }
        return hasher.hexDigest()
    }

    /// Digests of several files, hashed in parallel (`threads`: 0 for all cores).
    public static func sha256(_ files: [SafetensorsFile], threads: Int = 0,
                              progress: (@Sendable (UInt64) -> Void)? = nil) -> [String] {
        parallelMap(files.count, threads: threads) { i in sha256(files[i].mapping, progress: progress) }
    }
}
