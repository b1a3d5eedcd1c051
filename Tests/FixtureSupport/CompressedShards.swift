import Checkpoint
import Foundation
import SafetensorsFormat
import ShardCompression
import Support

/// A shard of a BF16 tensor `a` of 5 chunks and an F32 tensor `b` of 2, compressed (returns its path).
/// Their mantissa planes are random, so stored raw.
public func multiChunkShard(in dir: String) throws -> String {
    var rng = SplitMix64(seed: 0xC0FFEE)
    let a: [UInt16] = (0..<(9 * 1024 * 1024 / 2 + 3)).map { _ in UInt16(truncatingIfNeeded: rng.next()) & 0xBFFF }
    let b: [Float] = (0..<(3 * 1024 * 1024 / 4)).map { _ in Float(bitPattern: 0x3F80_0000 | UInt32(truncatingIfNeeded: rng.next()) & 0x807F_FFFF) }
    try SafetensorsWriter.write(to: dir + "/multi.safetensors", tensors: [TensorSpec(name: "a", dtype: .BF16, shape: [UInt64(a.count)]),
                                                                         TensorSpec(name: "b", dtype: .F32, shape: [UInt64(b.count)])],
                                metadata: nil) { info, sink in
        if info.name == "a" { try a.withUnsafeBytes { try sink.write($0) } } else { try b.withUnsafeBytes { try sink.write($0) } }
    }
    _ = try ShardCompressor.compress(input: dir + "/multi.safetensors", output: dir + "/multi.stz")
    return dir + "/multi.stz"
}

/// `multiChunkShard` with a byte of chunk 0 and of chunk 3 flipped in their last plane (stored raw: the
/// chunk's checksum catches it; the table is intact).
public func damagedMultiChunkShard(in dir: String) throws -> String {
    let path = try multiChunkShard(in: dir)
    let shard = try CompressedShard(path: path)
    var bytes = Fixtures.readBytes(path)
    for k in [0, 3] {
        let p = shard.chunks[k].planes.last!
        precondition(p.method == .raw, "the damage is meant for a raw plane (caught by the checksum, not by zstd)")
        bytes[Int(p.offset) + Int(p.storedLength) / 2] ^= 0x5A
    }
    let bad = dir + "/bad.stz"
    _ = FileManager.default.createFile(atPath: bad, contents: Data(bytes))
    return bad
}
