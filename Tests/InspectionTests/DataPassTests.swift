import Checkpoint
import FixtureSupport
import Foundation
import Inspection
import NumberFormats
import SafetensorsFormat
import ShardCompression
import Testing
import WeightReading

@Suite struct ScanTests {
    /// Naive two-pass statistics over decoded values (the oracle).
    func reference(_ values: [Double]) -> (nan: Int, inf: Int, min: Double, max: Double, mean: Double, std: Double) {
        let finite = values.filter(\.isFinite)
        let mean = finite.reduce(0, +) / Double(finite.count)
        let variance = finite.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(finite.count)
        return (values.filter(\.isNaN).count, values.filter(\.isInfinite).count, finite.min()!, finite.max()!, mean,
                variance.squareRoot())
    }

    @Test func statisticsMatchATwoPassOracleAcrossChunks() throws {
        // Values with a large offset (a one-pass sum of squares without a shift would lose precision),
        // NaN and infinities, written as F32 with our writer and scanned back.
        let n = 5_000_000  // more than one scan chunk
        var values = (0..<n).map { i in 1000.0 + Double(Float(sin(Double(i)) * 0.01)) }
        values[7] = .nan
        values[n - 1] = .infinity
        values[n / 2] = -.infinity
        let floats = values.map { Float($0) }
        let path = Fixtures.temporaryDirectory() + "/scan.safetensors"
        defer { Fixtures.removeTemporary(path) }
        try SafetensorsWriter.write(to: path, tensors: [TensorSpec(name: "x", dtype: .F32, shape: [UInt64(n)])], metadata: nil) { _, sink in
            try floats.withUnsafeBytes { try sink.write($0) }
        }
        let f = try SafetensorsFile(path: path)
        let stats = try #require(try TensorScan.scan([TensorScan.Target(file: f, tensor: f.tensors[0])], threads: 2)[0])
        let r = reference(floats.map(Double.init))
        #expect(stats.count == UInt64(n))
        #expect(stats.nan == 1 && stats.posInf == 1 && stats.negInf == 1)
        #expect(stats.min == r.min && stats.max == r.max)
        #expect(abs(stats.mean - r.mean) < 1e-9)
        #expect(abs(stats.std - r.std) / r.std < 1e-6)
    }

    @Test func scansEveryFloatDtypeOfTheValidFixture() throws {
        let f = try SafetensorsFile(path: Fixtures.path("valid/all_dtypes.safetensors"))
        let targets = f.tensors.map { TensorScan.Target(file: f, tensor: $0) }
        let results = try TensorScan.scan(targets)
        for (t, r) in zip(targets, results) {
            #expect((r != nil) == t.tensor.dtype.isScannableFloat, "\(t.tensor.name)")
            guard let r, t.tensor.dtype == .BF16 || t.tensor.dtype == .F8_E4M3 else { continue }
            let data = f.data(t.tensor)
            let decoded: [Double] = t.tensor.dtype == .BF16
                ? (0..<Int(t.tensor.elementCount)).map { Double(FloatDecoding.bf16(data.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) }
                : data.map { Double(FloatDecoding.e4m3Table[Int($0)]) }
            let finite = decoded.filter(\.isFinite)
            #expect(r.finite == UInt64(finite.count))
            if let lo = finite.min() { #expect(r.min == lo) }
        }
    }

    /// A compressed shard scans to the same statistics as the original (in units of whole chunks, each
    /// decoded once: `BoundedChunks.chunkAlignedRangesCoverEveryChunkOnce`); the first damaged chunk stops
    /// the scan (it went on through every unit) and is the error, naming file, chunk and tensor.
    @Test func compressedShardsScanOnceAndStopAtTheFirstDamage() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = try damagedMultiChunkShard(in: dir)
        let original = try SafetensorsFile(path: dir + "/multi.safetensors")
        let packed = try SafetensorsFile(path: dir + "/multi.stz")
        let expected = try TensorScan.scan(original.tensors.map { TensorScan.Target(file: original, tensor: $0) })
        #expect(try TensorScan.scan(packed.tensors.map { TensorScan.Target(file: packed, tensor: $0) }) == expected)

        let damaged = try SafetensorsFile(path: bad)
        let scanned = Locked<UInt64>(0)
        do {
            _ = try TensorScan.scan(damaged.tensors.map { TensorScan.Target(file: damaged, tensor: $0) }, threads: 1,
                                    progress: { n in scanned.withLock { $0 += n } })
            Issue.record("a damaged shard was scanned")
        } catch {
            let shard = try CompressedShard(path: bad)
            let name = shard.tensors[Int(shard.chunks[0].tensor)].name
            #expect(error.file == bad)
            #expect(error.message.hasPrefix("chunk 0 (tensor \(name), bytes 0..<2097152 of the data): checksum mismatch"), "\(error)")
        }
        #expect(scanned.withLock { $0 } == 0)
    }
}

@Suite struct ChecksumTests {
    /// Every file of every fixture model, hashed by libcrypto, against coreutils' own implementation.
    @Test(arguments: ["deepseek_v3-bf16", "deepseek_v3-f32-sharded", "qwen3_moe-bf16", "qwen3_moe-f32-sharded",
                      "qwen2_moe-bf16", "qwen2_moe-f32-sharded", "mixtral-bf16", "mixtral-f32-sharded"])
    func sha256MatchesCoreutils(_ model: String) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("models/" + model))
        let digests = FileChecksum.sha256(checkpoint.files, threads: 2)
        for (file, digest) in zip(checkpoint.files, digests) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
            p.arguments = [file.path]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            p.waitUntilExit()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(out.hasPrefix(digest + " "), "\(file.path)")
        }
    }
}

@Suite struct DecodedScan {
    /// --scan of an encoded weight gives the statistics of the values it stands for: those of the producing
    /// library's BF16 dequantization (compressed-tensors', transformers'), not of the codes.
    @Test(arguments: ["ct-w4a16-asym", "ct-nvfp4a16", "ct-mxfp4a16", "ct-fp8", "modelopt-nvfp4"])
    func encodedWeightsScanAsTheirValues(_ name: String) throws {
        let reader = try CheckpointReader(Checkpoint(path: Fixtures.path("quant/formats/" + name)))
        let weights = try reader.encodedWeights().weights
        let quantized = Fixtures.json("quant/formats/\(name)-params.json").objectValue?["quantized_modules"]?.arrayValue
        #expect(weights.count == quantized?.count && weights.count >= 16)
        let stats = try TensorScan.scanDecoded(weights, reader: reader, threads: 2)
        let expected = try SafetensorsFile(path: Fixtures.path("quant/formats/\(name)-expected.safetensors"))
        for (w, (s, scales)) in zip(weights, stats) {
            #expect(scales.isEmpty, "\(w.name): \(scales)")
            let t = try #require(expected.tensor(named: w.name))
            let reference = TensorScan.scanRange(expected.data(t), dtype: .BF16, range: 0..<Int(t.elementCount))
            #expect(s.count == reference.count && s.nan == reference.nan && s.min == reference.min && s.max == reference.max, "\(w.name)")
            #expect(abs(s.mean - reference.mean) <= 1e-12 * max(1, abs(reference.mean)) && abs(s.std - reference.std) <= 1e-9 * reference.std, "\(w.name)")
        }
    }
}


@Suite struct ScaleFindingsOfScan {
    /// Scales that cannot be right are counted per weight: zero, negative, not finite, and for ue8m0 scales any
    /// that is not a power of two.
    @Test func badScalesAreCounted() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let source = Fixtures.path("quant/fp8_block100")
        var bytes = Fixtures.readBytes(source + "/model.safetensors")
        let file = try SafetensorsFile(path: source + "/model.safetensors")
        let scale = try #require(file.tensor(named: "model.layers.0.mlp.experts.0.down_proj.weight_scale_inv"))
        let at = Int(file.fileRange(scale).lowerBound)
        for (i, v) in [Float(0.3), -0.5].enumerated() { withUnsafeBytes(of: v) { for k in 0..<4 { bytes[at + i * 4 + k] = $0[k] } } }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        let config = String(decoding: Fixtures.readBytes(source + "/config.json"), as: UTF8.self)
        #expect(config.contains("\"quant_method\": \"fp8\""))
        try Data(config.replacingOccurrences(of: "\"quant_method\": \"fp8\"", with: "\"quant_method\": \"fp8\", \"scale_fmt\": \"ue8m0\"").utf8)
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
        let reader = try CheckpointReader(Checkpoint(path: dir))
        let weights = try reader.encodedWeights().weights
        let found = try TensorScan.scanDecoded(weights, reader: reader)
        let f = try #require(found.first?.scales)
        #expect(f.negative == 1 && f.zero == 0 && f.nonFinite == 0 && f.notPowerOfTwo == 1, "\(f)")
    }
}
