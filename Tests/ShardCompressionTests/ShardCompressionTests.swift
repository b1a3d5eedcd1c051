import CKernels
import Checkpoint
import FixtureSupport
import Foundation
import SafetensorsFormat
import Testing

@testable import ShardCompression
import Support

@Suite struct ChecksumAndPlanes {
    /// XXH64 against the xxhash package on lengths that exercise every tail path.
    @Test func xxh64MatchesReference() throws {
        let doc = Fixtures.json("compression/xxh64.json").objectValue!
        for c in doc["cases"]!.arrayValue! {
            let o = c.objectValue!
            let n = Int(o["length"]!.uint64Value!)
            let bytes = (0..<n).map { UInt8(($0 * 7) % 251) }
            let got = ChunkCodec.hex(moe_xxh64(bytes, n, 0))
            #expect(got == o["xxh64"]!.stringValue!, "length \(n)")
        }
    }

    /// Streaming XXH64 over pieces of any size equals the one-shot digest.
    @Test func xxh64Streaming() {
        let bytes = (0..<100_003).map { UInt8(($0 * 7) % 251) }
        let whole = moe_xxh64(bytes, bytes.count, 0)
        for piece in [1, 3, 31, 32, 33, 4096, 100_003] {
            var state = moe_xxh64_state()
            moe_xxh64_reset(&state, 0)
            var i = 0
            while i < bytes.count {
                let n = min(piece, bytes.count - i)
                bytes.withUnsafeBytes { moe_xxh64_update(&state, $0.baseAddress! + i, n) }
                i += n
            }
            #expect(moe_xxh64_digest(&state) == whole, "pieces of \(piece)")
        }
    }

    /// Every 16-bit value splits and joins back; BF16's high plane is exactly its exponent field.
    @Test func split16AllValues() {
        let values = (0...0xFFFF).map { UInt16($0) }
        var hi = [UInt8](repeating: 0, count: values.count)
        var lo = [UInt8](repeating: 0, count: values.count)
        var back = [UInt16](repeating: 0, count: values.count)
        moe_split16(values, values.count, &hi, &lo)
        moe_join16(hi, lo, values.count, &back)
        #expect(back == values)
        #expect(values.indices.allSatisfy { hi[$0] == UInt8((values[$0] >> 7) & 0xFF) })
        #expect(values.indices.allSatisfy { lo[$0] == UInt8((values[$0] & 0x7F) << 1 | values[$0] >> 15) })
    }

    @Test func split32AndNibblesRoundTrip() {
        var rng = SystemRandomNumberGenerator()
        let words = (0..<4099).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) } + [0, 0x8000_0000, 0x7F80_0000, 0xFFFF_FFFF]
        var p0 = [UInt8](repeating: 0, count: words.count), p1 = p0, p2 = p0, p3 = p0
        var back = [UInt32](repeating: 0, count: words.count)
        moe_split32(words, words.count, &p0, &p1, &p2, &p3)
        moe_join32(p0, p1, p2, p3, words.count, &back)
        #expect(back == words)
        #expect(words.indices.allSatisfy { p0[$0] == UInt8((words[$0] >> 23) & 0xFF) })  // the F32 exponent
        for n in [0, 1, 2, 255, 256, 257] {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            var hi = [UInt8](repeating: 0, count: (n + 1) / 2 + 1)
            var lo = [UInt8](repeating: 0, count: (n + 1) / 2 + 1)
            var out = [UInt8](repeating: 0, count: n + 1)
            moe_split_nibbles(bytes, n, &hi, &lo)
            moe_join_nibbles(hi, lo, n, &out)
            #expect(Array(out.prefix(n)) == bytes, "n = \(n)")
        }
    }
}

/// Every safetensors file among the fixtures (written by safetensors / transformers / torch).
let fixtureShards: [String] = {
    let root = Fixtures.root
    var out: [String] = []
    for dir in ["models", "valid", "writer", "quant"] {
        guard let e = FileManager.default.enumerator(atPath: root + "/" + dir) else { continue }
        while let p = e.nextObject() as? String {
            if p.hasSuffix(".safetensors") { out.append(root + "/" + dir + "/" + p) }
        }
    }
    return out.sorted()
}()

@Suite struct CompressedShardTests {
    /// Compress, then read every tensor by random access and restore the whole file: every byte
    /// the same, for every fixture shard.
    @Test func roundTripEveryFixture() throws {
        #expect(fixtureShards.count >= 20)
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (i, path) in fixtureShards.enumerated() {
            let packed = dir + "/\(i).stz", restored = dir + "/\(i).safetensors"
            _ = try ShardCompressor.compress(input: path, output: packed)
            let shard = try CompressedShard(path: packed)
            let original = try SafetensorsFile(path: path)
            #expect(shard.tensors.map(\.name) == original.tensors.map(\.name), "\(path)")
            for t in original.tensors {
                let bytes = try shard.data(t)
                #expect(bytes == Array(original.data(t)), "\(path) \(t.name)")
            }
            // Any byte range of a tensor, decoding only its chunks.
            var rng = SplitMix64(seed: UInt64(i))
            for t in original.tensors where t.byteCount > 2 {
                let a = rng.next() % t.byteCount, b = a + rng.next() % (t.byteCount - a + 1)
                #expect(try shard.bytes(t, a..<b) == Array(original.data(t)[Int(a)..<Int(b)]), "\(path) \(t.name) \(a)..<\(b)")
            }
            try shard.decompress(to: restored)
            #expect(Fixtures.readBytes(restored) == Fixtures.readBytes(path), "\(path)")
        }
    }

    /// Chunks are checked: one flipped payload byte fails decompression naming the chunk and
    /// tensor, and nothing is left under the output name or beside it.
    @Test func corruptionIsCaught() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("models/deepseek_v3-bf16/model.safetensors")
        let packed = dir + "/in.stz"
        _ = try ShardCompressor.compress(input: source, output: packed)
        var bytes = Fixtures.readBytes(packed)
        let shard = try CompressedShard(path: packed)
        let victim = shard.chunks[shard.chunks.count / 2]
        let name = shard.tensors[Int(victim.tensor)].name
        let target = Int(victim.planes[0].offset) + Int(victim.planes[0].storedLength) / 2
        bytes[target] ^= 0x5A
        let bad = dir + "/bad.stz"
        _ = FileManager.default.createFile(atPath: bad, contents: Data(bytes))
        let opened = try CompressedShard(path: bad)  // the table is intact: opening works
        #expect(throws: (any Error).self) { try opened.decompress(to: dir + "/out.safetensors") }
        do {
            try opened.decompress(to: dir + "/out.safetensors")
        } catch {
            #expect("\(error)".contains("tensor \(name)"), "\(error)")
            #expect("\(error)".contains("chunk"), "\(error)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["bad.stz", "in.stz"])
        // Random access to the damaged tensor fails too; its neighbours still read.
        let t = opened.tensors[Int(victim.tensor)]
        #expect(throws: CompressionError.self) { try opened.data(t) }
    }

    @Test func truncatedAndTamperedFilesAreRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let packed = dir + "/in.stz"
        _ = try ShardCompressor.compress(input: Fixtures.path("models/mixtral-bf16/model.safetensors"), output: packed)
        let bytes = Fixtures.readBytes(packed)
        // Each refusal has its stable id, the file named, and the id and hint in the text.
        func refused(_ data: [UInt8], _ failure: CompressionFailure, _ message: String, chunk: Int? = nil) {
            let p = dir + "/case.stz"
            _ = FileManager.default.createFile(atPath: p, contents: Data(data))
            do {
                _ = try CompressedShard(path: p)
                Issue.record("accepted: \(message)")
            } catch {
                #expect(error.failure == failure, "\(error)")
                #expect(error.file == p && error.chunk == chunk)
                #expect(error.description.contains(message), "\(error)")
                #expect(error.description.hasSuffix("[\(failure.rawValue)]; \(failure.hint)"), "\(error)")
            }
        }
        refused(Array(bytes.prefix(bytes.count - 1)), .truncated, "no end marker")
        refused(Array(bytes.prefix(bytes.count / 2)), .truncated, "no end marker")
        refused(Array(bytes.prefix(10)), .truncated, "too short")
        var header = bytes
        header[30] ^= 1
        refused(header, .headerChecksumMismatch, "header does not match its checksum")
        var table = bytes
        table[bytes.count - 64 - 128 + 16] ^= 1  // the last chunk's checksum
        refused(table, .damagedTable, "does not match the file checksum")
        var version = bytes
        version[8] = 9
        refused(version, .unsupportedVersion, "format version 9")
        refused(Fixtures.readBytes(Fixtures.path("models/mixtral-bf16/model.safetensors")), .notCompressed, "no magic number")

        // A chunk whose two planes are stored in the other order, offsets fixed to match: every byte
        // still decodes and checks out, but readers assume planes back to back in order (it trapped).
        let tableOffset = Int(bytes[(bytes.count - 56)..<(bytes.count - 48)].enumerated()
            .reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        func u64(_ b: [UInt8], _ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) } }
        func u32(_ b: [UInt8], _ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) } }
        func put64(_ b: inout [UInt8], _ at: Int, _ v: Int) { for k in 0..<8 { b[at + k] = UInt8((v >> (8 * k)) & 0xFF) } }
        let entry = tableOffset  // chunk 0
        #expect(bytes[entry + 25] == 2, "chunk 0 should have two planes")
        let (o0, s0) = (u64(bytes, entry + 32), u32(bytes, entry + 40))
        let (o1, s1) = (u64(bytes, entry + 56), u32(bytes, entry + 64))
        #expect(o1 == o0 + s0)
        var swapped = bytes
        swapped.replaceSubrange(o0..<(o0 + s1), with: bytes[o1..<(o1 + s1)])
        swapped.replaceSubrange((o0 + s1)..<(o0 + s1 + s0), with: bytes[o0..<(o0 + s0)])
        put64(&swapped, entry + 32, o0 + s1)
        put64(&swapped, entry + 56, o0)
        refused(swapped, .damagedTable, "chunk 0: plane 1 does not follow plane 0", chunk: 0)
    }

    /// Tensors of several chunks (a chunk holds 2 MiB): random access across chunk boundaries, partial
    /// chunks, and the whole file back.
    @Test func tensorsSpanningSeveralChunks() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SplitMix64(seed: 0x5EED)
        let big: [UInt16] = (0..<(5 * 1024 * 1024 / 2 + 37)).map { _ in UInt16(truncatingIfNeeded: 0x3C00 &+ (rng.next() & 0x7FF)) }
        let f32: [UInt32] = (0..<(3 * 1024 * 1024 / 4 + 5)).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        let path = dir + "/big.safetensors"
        try SafetensorsWriter.write(to: path, tensors: [TensorSpec(name: "a", dtype: .BF16, shape: [UInt64(big.count)]),
                                                        TensorSpec(name: "b", dtype: .F32, shape: [UInt64(f32.count)])],
                                    metadata: nil) { info, sink in
            if info.name == "a" { try big.withUnsafeBytes { try sink.write($0) } } else { try f32.withUnsafeBytes { try sink.write($0) } }
        }
        _ = try ShardCompressor.compress(input: dir + "/big.safetensors", output: dir + "/big.stz")
        let shard = try CompressedShard(path: dir + "/big.stz")
        let original = try SafetensorsFile(path: path)
        #expect(shard.chunks.count == 3 + 2, "\(shard.chunks.count) chunks")
        for t in original.tensors {
            let whole = Array(original.data(t))
            #expect(try shard.data(t) == whole)
            let chunk = UInt64(CompressedFormat.chunkBytes)
            var ranges: [Range<UInt64>] = [(chunk - 3)..<(chunk + 5), 0..<t.byteCount, (t.byteCount - 1)..<t.byteCount, chunk..<(2 * chunk)]
            for _ in 0..<20 {
                let a = rng.next() % t.byteCount
                ranges.append(a..<(a + rng.next() % (t.byteCount - a + 1)))
            }
            for r in ranges where r.upperBound <= t.byteCount {
                #expect(try shard.bytes(t, r) == Array(whole[Int(r.lowerBound)..<Int(r.upperBound)]), "\(t.name) \(r)")
            }
        }
        try shard.decompress(to: dir + "/back.safetensors")
        #expect(Fixtures.readBytes(dir + "/back.safetensors") == Fixtures.readBytes(path))
    }

    /// A checkpoint directory: shards compressed under their own names, the index and other
    /// files copied, a manifest; restored byte for byte; a non-empty output refused.
    @Test func directoryRoundTrip() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("models/qwen3_moe-f32-sharded")
        let summary = try DirectoryCompression.run(source, dir + "/packed", .compress)
        #expect(summary.files.filter { $0.action == "compressed" }.count >= 2)
        let names = try FileManager.default.contentsOfDirectory(atPath: source).sorted()
        // NAME.safetensors is stored as NAME.safetensors.mz, so that no loader takes it for safetensors.
        let stored = names.map { $0.hasSuffix(".safetensors") ? $0 + ".mz" : $0 }
        #expect(stored != names)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/packed").sorted() == (stored + [DirectoryCompression.manifestName]).sorted())
        #expect(Fixtures.readBytes(dir + "/packed/model.safetensors.index.json") == Fixtures.readBytes(source + "/model.safetensors.index.json"))
        _ = try DirectoryCompression.run(dir + "/packed", dir + "/restored", .decompress)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/restored").sorted() == names)
        for n in names { #expect(Fixtures.readBytes(dir + "/restored/" + n) == Fixtures.readBytes(source + "/" + n), "\(n)") }
        #expect(throws: CompressionError.self) { try DirectoryCompression.run(source, dir + "/packed", .compress) }
        #expect(throws: CompressionError.self) { try DirectoryCompression.run(source + "/config.json", dir + "/x", .compress) }
    }
}

@Suite struct DirectoryTreeTests {
    /// The whole tree under IN: a shard in a subdirectory named by the index, `original/x.safetensors`,
    /// `tokenizer/`, an empty directory, a hidden file and a file that is a symlink into a blob store.
    /// Compress then decompress gives every file back byte for byte at its place; a FIFO, a symlink loop,
    /// a dangling symlink and moetool's own state directory are left out and said; the manifest lists
    /// relative paths.
    @Test func wholeTreeRoundTrip() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = try CheckpointTree.make(in: dir)
        let expected = CheckpointTree.entries(input)
        #expect(expected.contains("sub/model-00005-of-00005.safetensors") && expected.contains("empty/") && expected.contains(".gitattributes"))
        #expect(mkfifo(input + "/tokenizer/pipe", 0o644) == 0)
        try FileManager.default.createSymbolicLink(atPath: input + "/original/loop", withDestinationPath: "..")
        try FileManager.default.createSymbolicLink(atPath: input + "/gone", withDestinationPath: "../blobs/missing")
        try FileManager.default.createDirectory(atPath: input + "/.moetool-convert", withIntermediateDirectories: false)

        let packed = dir + "/packed", restored = dir + "/restored"
        let summary = try DirectoryCompression.run(input, packed, .compress)
        #expect(summary.files.filter { $0.action == "compressed" }.map(\.name).sorted() == CheckpointTree.shards.sorted())
        #expect(summary.leftOut.map(\.name) == [".moetool-convert", "gone", "original/loop", "tokenizer/pipe"])
        #expect(summary.leftOut.map(\.reason) == ["moetool's own run state (a plan and a lock), not part of the checkpoint",
                                                  "a dangling symlink (its target does not exist)",
                                                  "a symlink loop (it leads back to a directory it is in)",
                                                  "a FIFO (named pipe), not a file"])
        for shard in CheckpointTree.shards {
            #expect(CompressedShard.isCompressed(path: packed + "/" + shard + ".mz"), "\(shard)")
            #expect(!FileManager.default.fileExists(atPath: packed + "/" + shard), "\(shard)")
        }
        #expect(Fixtures.readBytes(packed + "/model.safetensors.index.json") == Fixtures.readBytes(input + "/model.safetensors.index.json"))
        let manifest = String(decoding: Fixtures.readBytes(packed + "/" + DirectoryCompression.manifestName), as: UTF8.self)
        #expect(manifest.contains("\"name\": \"sub/model-00005-of-00005.safetensors\""), "\(manifest)")
        #expect(manifest.contains("\"stored_as\": \"sub/model-00005-of-00005.safetensors.mz\""), "\(manifest)")
        #expect(manifest.contains("\"name\": \"tokenizer/pipe\""), "\(manifest)")

        let back = try DirectoryCompression.run(packed, restored, .decompress)
        #expect(back.leftOut.isEmpty)
        #expect(back.files.filter { $0.action == "decompressed" }.count == CheckpointTree.shards.count)
        let differences = CheckpointTree.differences(restored, input, expected: expected)
        #expect(differences.isEmpty, "\(differences)")
    }

    /// moetool compress output given to compress again (it trapped in `MappedFile.bytes`, leaving a
    /// temporary shard, the state directory and copies behind): refused naming the file, nothing created.
    @Test func compressedInputIsRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let packed = dir + "/packed"
        _ = try DirectoryCompression.run(Fixtures.path("models/qwen3_moe-f32-sharded"), packed, .compress)
        for resume in [false, true] {
            do {
                _ = try DirectoryCompression.run(packed, dir + "/again", .compress, resume: resume)
                Issue.record("compressed output accepted (resume: \(resume))")
            } catch let error as CompressionError {
                #expect(error.file == packed + "/model-00001-of-00005.safetensors.mz")
                #expect(error.failure == .alreadyCompressed)
                #expect(error.message.hasPrefix("already compressed"), "\(error)")
            }
        }
        let shard = packed + "/model-00002-of-00005.safetensors.mz"
        #expect(throws: CompressionError.self) { try ShardCompressor.compress(input: shard, output: dir + "/one.stz") }
        #expect(throws: CompressionError.self) { try DirectoryCompression.run(shard, dir + "/one.stz", .compress) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["packed"])
    }
}

/// A compressed shard written by hand: a safetensors header with one tensor, then the given chunks
/// (each plane as its stored bytes), the table and the tail, with the header and file checksums right,
/// so that only what a test means to be wrong is wrong.
struct CraftedShard {
    struct Plane { var stored: [UInt8]; var raw: UInt32; var method: CompressedFormat.Method }
    struct Chunk { var offset: UInt64; var length: UInt32; var encoding: CompressedFormat.Encoding; var planes: [Plane] }

    static func bytes(dtype: String, tensorBytes: UInt64, chunks: [Chunk]) -> [UInt8] {
        let valueBytes = UInt64(Dtype(rawValue: dtype)!.bits / 8)
        var json = Array("{\"w\":{\"dtype\":\"\(dtype)\",\"shape\":[\(tensorBytes / valueBytes)],\"data_offsets\":[0,\(tensorBytes)]}}".utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var out = CompressedFormat.magic
        out.appendLE(CompressedFormat.version)
        out.appendLE(UInt32(0))
        out.appendLE(UInt64(json.count))
        out += json
        let headerChecksum = moe_xxh64(json, json.count, 0)
        var entries: [CompressedFormat.Chunk] = []
        for c in chunks {
            var planes: [CompressedFormat.Plane] = []
            for p in c.planes {
                planes.append(.init(offset: UInt64(out.count), storedLength: UInt32(p.stored.count), rawLength: p.raw, method: p.method))
                out += p.stored
            }
            entries.append(.init(dataOffset: c.offset, length: c.length, tensor: 0, checksum: 0, encoding: c.encoding, planes: planes))
        }
        let tableOffset = UInt64(out.count)
        for e in entries { e.serialize(into: &out) }
        out.appendLE(UInt64(entries.count))
        out.appendLE(tableOffset)
        out.appendLE(tensorBytes)
        out.appendLE(ShardCompressor.fileChecksum(header: headerChecksum, chunks: entries.map(\.checksum)))
        out.appendLE(headerChecksum)
        out += [UInt8](repeating: 0, count: 16)
        out += CompressedFormat.endMagic
        return out
    }

    /// The header of a zstd frame declaring `size` bytes of content (single segment, 8-byte size field),
    /// then one empty raw block that ends it.
    static func zstdFrame(declaring size: UInt64) -> [UInt8] {
        var frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xE0]
        frame.appendLE(size)
        return frame + [0x01, 0x00, 0x00]
    }

    /// A zstd frame whose header does not say how much it holds.
    static let zstdFrameOfUnknownSize: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x00, 0x01, 0x00, 0x00]
}

@Suite struct BoundedChunks {
    func refusal(_ bytes: [UInt8]) throws -> String {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/crafted.stz"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        do {
            _ = try CompressedShard(path: path)
        } catch {
            #expect(error.file == path)
            return error.message
        }
        Issue.record("a crafted shard was accepted")
        return ""
    }

    /// A chunk of 3 GiB (the writer's are 2 MiB) behind 16 stored bytes: decompress allocated that much
    /// per chunk and core (7.8 GB RSS from a 244 KB file), inspect --scan decoded it once per unit. Now
    /// refused when the table is read.
    @Test func oversizedChunkIsRefusedOnOpen() throws {
        let size: UInt64 = 3 << 30
        let crafted = CraftedShard.bytes(dtype: "U8", tensorBytes: size, chunks: [
            .init(offset: 0, length: UInt32(size), encoding: .bytes,
                  planes: [.init(stored: CraftedShard.zstdFrame(declaring: size), raw: UInt32(size), method: .zstd)])])
        #expect(crafted.count < 400)
        #expect(try refusal(crafted) == "chunk 0: holds 3221225472 bytes, more than the 2097152 a chunk may hold (damaged or not made by moetool)")
    }

    /// Chunks of legal size whose zstd frames declare another size, or none: refused on open, before
    /// anything is decompressed.
    @Test func zstdFrameSizeIsChecked() throws {
        let n: UInt32 = 1 << 20
        func file(_ frame: [UInt8]) -> [UInt8] {
            CraftedShard.bytes(dtype: "U8", tensorBytes: UInt64(n), chunks: [
                .init(offset: 0, length: n, encoding: .bytes, planes: [.init(stored: frame, raw: n, method: .zstd)])])
        }
        #expect(try refusal(file(CraftedShard.zstdFrame(declaring: 4 << 30))) == "chunk 0: plane 0 is a zstd frame of 4294967296 bytes, not 1048576")
        #expect(try refusal(file(CraftedShard.zstdFrameOfUnknownSize)) == "chunk 0: plane 0 is a zstd frame that does not declare its size")
        #expect(try refusal(file(Array("not zstd at all".utf8))) == "chunk 0: plane 0 is not a zstd frame")
        // A zstd plane is only stored when it is smaller than the plane.
        #expect(try refusal(file(CraftedShard.zstdFrame(declaring: UInt64(n)) + [UInt8](repeating: 0, count: Int(n))))
                == "chunk 0: plane 0 is out of bounds or has the wrong length")
    }

    /// Chunks that cut values apart (the writer cuts at 2 MiB, a multiple of every value size): refused,
    /// so that a reader can take whole chunks as units of work.
    @Test func chunksHoldWholeValues() throws {
        let crafted = CraftedShard.bytes(dtype: "F32", tensorBytes: 16, chunks: [
            .init(offset: 0, length: 6, encoding: .bytes, planes: [.init(stored: [UInt8](repeating: 1, count: 6), raw: 6, method: .raw)]),
            .init(offset: 6, length: 10, encoding: .bytes, planes: [.init(stored: [UInt8](repeating: 2, count: 10), raw: 10, method: .raw)])])
        #expect(try refusal(crafted) == "chunk 0: bytes 0..<6 of tensor w cut its F32 values apart")
    }

    /// Units of whole chunks, each chunk in exactly one, covering the tensor.
    @Test func chunkAlignedRangesCoverEveryChunkOnce() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try multiChunkShard(in: dir)
        let shard = try CompressedShard(path: path)
        let chunk = UInt64(CompressedFormat.chunkBytes)
        for t in shard.tensors {
            let starts = Set(shard.chunks.filter { shard.tensors[Int($0.tensor)] == t }.map { $0.dataOffset - t.begin })
            for about: UInt64 in [1, chunk, 3 * chunk, 1 << 40] {
                let ranges = shard.chunkAlignedRanges(t, about: about)
                #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == t.byteCount)
                #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
                #expect(ranges.allSatisfy { starts.contains($0.lowerBound) }, "\(t.name) \(about)")
                let expected = about <= chunk ? starts.count : about >= t.byteCount ? 1 : (starts.count + 2) / 3
                #expect(ranges.count == expected, "\(t.name) \(about)")
            }
        }
    }

    /// decompress stops at the first damaged chunk (it went on decoding the rest): with one thread and
    /// chunk 0 damaged, nothing more is decoded, and the error names the file, the chunk and the tensor.
    @Test func decompressStopsAtTheFirstDamagedChunk() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = try damagedMultiChunkShard(in: dir)
        let shard = try CompressedShard(path: bad)
        let decoded = Locked<UInt64>(0)
        do {
            try shard.decompress(to: dir + "/out.safetensors", threads: 1, progress: { n in decoded.withLock { $0 += n } })
            Issue.record("a damaged shard was restored")
        } catch let error as CompressionError {
            #expect(error.file == bad)
            let name = shard.tensors[Int(shard.chunks[0].tensor)].name
            #expect(error.failure == .damagedChunk && error.chunk == 0 && error.tensor == name, "\(error)")
            #expect(error.message.hasPrefix("chunk 0 (tensor \(name), bytes 0..<2097152 of the data): checksum mismatch"), "\(error)")
        }
        #expect(decoded.withLock { $0 } == 0)
        #expect(!FileManager.default.fileExists(atPath: dir + "/out.safetensors"))
    }
}

@Suite struct CompressionFailures {
    /// The ids are an interface (`--json` errors): pinned here, so a rename is a decision, not an accident.
    @Test func idsAreStable() {
        #expect(CompressionFailure.allCases.map(\.rawValue) == [
            "input_missing", "not_file_or_directory", "unreadable", "not_safetensors", "already_compressed",
            "nothing_to_compress", "not_compressed", "output_conflict", "output_exists", "safetensors_name", "output_in_use",
            "cannot_create_directory", "truncated", "unsupported_version", "header_checksum_mismatch", "invalid_header",
            "damaged_table", "damaged_chunk",
        ])
        #expect(Set(CompressionFailure.allCases.map(\.hint)).count == CompressionFailure.allCases.count - 2)  // 3 damage cases share one
    }

    /// A single compressed file under a .safetensors name would be taken for safetensors by loaders: refused,
    /// nothing written; NAME.safetensors.mz is fine.
    @Test func compressedFileIsNotNamedSafetensors() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("models/mixtral-bf16/model.safetensors")
        do {
            _ = try DirectoryCompression.run(source, dir + "/m.safetensors", .compress)
            Issue.record("a compressed file named .safetensors was written")
        } catch let error as CompressionError {
            #expect(error.failure == .safetensorsName && error.file == dir + "/m.safetensors", "\(error)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
        _ = try DirectoryCompression.run(source, dir + "/m.safetensors.mz", .compress)
        #expect(CompressedShard.isCompressed(path: dir + "/m.safetensors.mz"))
    }
}
