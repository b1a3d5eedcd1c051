import SafetensorsFormat

/// The compressed shard format, version 1 (Docs/compress.md). All integers little-endian.
///
///     magic (8)  "\x89MZST\r\n\x1a"
///     version u32 = 1, flags u32 = 0
///     N u64: the original header length (the safetensors 8-byte prefix)
///     the original header, N bytes, verbatim
///     chunk payloads (the stored planes, back to back)
///     chunk table: one 128-byte entry per chunk, in data order
///     tail (64): chunk count u64, table offset u64, original data bytes u64, file checksum u64,
///                header checksum u64, 16 reserved bytes, end magic "MZSTEND\0"
///
/// A chunk is a run of up to `chunkBytes` original bytes of one tensor, split into planes by
/// the tensor's dtype; each plane is stored raw or as one zstd frame, whichever is smaller.
/// Checksums are XXH64 (seed 0): of each chunk's original bytes, of the header, and of the
/// file = XXH64 over the header checksum followed by every chunk checksum (8 bytes each, LE).
public enum CompressedFormat {
    public static let magic = CompressedLayout.magic
    public static let endMagic = CompressedLayout.endMagic
    public static let version: UInt32 = 1
    public static let prefixBytes = Int(CompressedLayout.prefixBytes)
    public static let entryBytes = 128
    public static let tailBytes = Int(CompressedLayout.tailBytes)
    public static let maxPlanes = 4
    /// Original bytes per chunk (the last chunk of a tensor may be shorter): what the writer cuts, and
    /// the most a reader accepts, so that decoding a chunk never needs more than this (and its planes).
    public static let chunkBytes = 2 << 20

    /// How a chunk's bytes are split into planes.
    public enum Encoding: UInt8, Sendable {
        /// One plane: the bytes as they are.
        case bytes = 0
        /// 16-bit values rotated left one bit, high and low byte planes (BF16, F16).
        case split16 = 1
        /// 32-bit values rotated left one bit, four byte planes (F32).
        case split32 = 2
        /// Bytes rotated left one bit, high and low nibble planes (FP8).
        case nibbles = 3

        public var planes: Int {
            switch self {
            case .bytes: 1
            case .split16, .nibbles: 2
            case .split32: 4
            }
        }

        /// Candidate encodings for a dtype, the first being the default.
        static func candidates(for dtype: Dtype) -> [Encoding] {
            switch dtype {
            case .BF16, .F16: [.split16]
            case .F32: [.split32]
            // Nibble planes never beat the plain bytes on DeepSeek-style FP8 weights (measured:
            // Docs/compress.md), so they are not tried; the decoder still reads them.
            case .F8_E4M3, .F8_E5M2: [.bytes]
            default: [.bytes]
            }
        }

        /// Bytes in each plane for `n` original bytes.
        func planeLengths(_ n: Int) -> [Int] {
            switch self {
            case .bytes: [n]
            case .split16: [n / 2, n / 2]
            case .split32: [n / 4, n / 4, n / 4, n / 4]
            case .nibbles: [(n + 1) / 2, (n + 1) / 2]
            }
        }
    }

    public enum Method: UInt8, Sendable {
        case raw = 0
        case zstd = 1
    }

    public struct Plane: Sendable, Equatable {
        public var offset: UInt64
        public var storedLength: UInt32
        public var rawLength: UInt32
        public var method: Method
    }

    /// One chunk's entry in the table.
    public struct Chunk: Sendable, Equatable {
        /// Offset in the original data section (after the header).
        public var dataOffset: UInt64
        public var length: UInt32
        /// Index of its tensor in the header (sorted by data offset).
        public var tensor: UInt32
        public var checksum: UInt64
        public var encoding: Encoding
        public var planes: [Plane]

        var storedBytes: UInt64 { planes.reduce(0) { $0 + UInt64($1.storedLength) } }

        func serialize(into out: inout [UInt8]) {
            out.appendLE(dataOffset)
            out.appendLE(length)
            out.appendLE(tensor)
            out.appendLE(checksum)
            out.append(encoding.rawValue)
            out.append(UInt8(planes.count))
            out.append(contentsOf: [UInt8](repeating: 0, count: 6))
            for p in planes {
                out.appendLE(p.offset)
                out.appendLE(p.storedLength)
                out.appendLE(p.rawLength)
                out.append(p.method.rawValue)
                out.append(contentsOf: [UInt8](repeating: 0, count: 7))
            }
            out.append(contentsOf: [UInt8](repeating: 0, count: (maxPlanes - planes.count) * 24))
        }
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
}

extension UnsafeRawBufferPointer {
    func le<T: FixedWidthInteger>(_ offset: Int, as: T.Type) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
