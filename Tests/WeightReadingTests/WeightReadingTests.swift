import Checkpoint
import FixtureSupport
import Foundation
import NumberFormats
import SafetensorsFormat
import ShardCompression
import StrictJSON
import Testing
import WeightReading

/// Every row of `w` as float32.
func decoded(_ w: StoredWeight) throws -> [Float] {
    let rows = try w.rows()
    return [Float](unsafeUninitializedCapacity: w.rows * w.cols) { out, count in
        for r in 0..<w.rows { rows.decodeRow(r, into: out.baseAddress! + r * w.cols) }
        count = w.rows * w.cols
    }
}

/// A copy of a checkpoint directory with every shard compressed (moetool compress, shard by shard).
func compressedCopy(of source: String, in dir: String) throws -> String {
    let out = dir + "/packed"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    for name in try FileManager.default.contentsOfDirectory(atPath: source) {
        if name.hasSuffix(".safetensors") {
            _ = try ShardCompressor.compress(input: source + "/" + name, output: out + "/" + name)
        } else {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: out + "/" + name)
        }
    }
    return out
}

@Suite struct StoredBytes {
    /// Through the reader, a compressed copy gives every tensor's bytes, and every weight's rows, exactly as
    /// the original does; the units of work cover each tensor once, in order.
    @Test func aCompressedCopyReadsLikeTheOriginal() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = Fixtures.path("models/deepseek_v3-f32-sharded")
        let plain = try CheckpointReader(Checkpoint(path: source))
        let packed = try CheckpointReader(Checkpoint(path: try compressedCopy(of: source, in: dir)))
        #expect(packed.storages.allSatisfy(\.isCompressed) && !plain.storages.contains(where: \.isCompressed))
        var weights = 0
        for located in plain.checkpoint.allTensors {
            let other = try #require(packed.checkpoint.locate(located.tensor.name))
            #expect(try plain.bytes(located).array == packed.bytes(other).array, "\(located.tensor.name)")
            for storage in [plain.storage(located), packed.storage(other)] {
                let pieces = storage.pieces(located.tensor, about: 4096, granule: 4)
                #expect(pieces.first?.lowerBound == 0 && pieces.last?.upperBound == located.tensor.byteCount)
                #expect(zip(pieces, pieces.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
                #expect(pieces.allSatisfy { $0.count % 4 == 0 })
            }
            if located.tensor.shape.count <= 2 {
                #expect(try decoded(plain.weight(located)) == decoded(packed.weight(other)), "\(located.tensor.name)")
                weights += 1
            }
        }
        #expect(weights == plain.checkpoint.tensorCount)
    }

    /// A damaged chunk is an error naming the file and tensor, never wrong bytes.
    @Test func aDamagedChunkIsAnError() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = try damagedMultiChunkShard(in: dir)
        let storage = try ShardStorage(SafetensorsFile(path: bad))
        let shard = try CompressedShard(path: bad)
        let damaged = shard.tensors[Int(shard.chunks[0].tensor)]  // chunk 0 is damaged
        #expect(throws: WeightReadError.self) { _ = try storage.bytes(damaged, 0..<16) }
        do {
            _ = try storage.bytes(damaged, 0..<16)
        } catch {
            #expect(error.kind == .damagedChunk && error.file == bad && error.tensor == damaged.name, "\(error)")
            #expect(error.message.contains("checksum mismatch"), "\(error)")
        }
    }
}

@Suite struct Encodings {
    /// F32, BF16 and F16 rows widen exactly: BF16 is the top half of a float32; the fused 3-D expert stack
    /// of DeepSeek-V3 (transformers' fused layout) is read an expert at a time.
    @Test func plainRowsAndFusedExperts() throws {
        let reader = try CheckpointReader(Checkpoint(path: Fixtures.path("models/deepseek_v3-fused-bf16")))
        let name = "model.layers.1.mlp.experts.gate_up_proj"
        let stack = try #require(reader.checkpoint.locate(name))
        let raw = try reader.bytes(stack).array
        let (rows, cols) = (Int(stack.tensor.shape[1]), Int(stack.tensor.shape[2]))
        for e in [0, 7, 15] {
            let w = try reader.weight(name, expert: e)
            #expect(w.rows == rows && w.cols == cols && w.name == "\(name)[\(e)]")
            let expected = (0..<(rows * cols)).map { i in
                let at = (e * rows * cols + i) * 2
                return Float(bitPattern: UInt32(raw[at]) << 16 | UInt32(raw[at + 1]) << 24)
            }
            #expect(try decoded(w) == expected, "expert \(e)")
        }
        // The down half of gate_up read as a view of the same rows.
        let w = try reader.weight(name, expert: 3).rows()
        let half = w.rows((rows / 2)..<rows)
        var a = [Float](repeating: 0, count: cols), b = [Float](repeating: 0, count: cols)
        half.decodeRow(2, into: &a)
        w.decodeRow(rows / 2 + 2, into: &b)
        #expect(a == b && half.name.hasSuffix("[rows \(rows / 2)..<\(rows)]"))
    }

    /// Every FP8 dtype decodes as itself times its block's scale (computed here from the codes' own table and
    /// the scale tensor), and the BF16 path gives torch's `(codes.float() * scale).to(bfloat16)` bit for bit.
    @Test func fp8BlockRowsMatchTheFormulaAndTorch() throws {
        let reader = try CheckpointReader(Checkpoint(path: Fixtures.path("quant/fp8_variants")))
        let expected = try SafetensorsFile(path: Fixtures.path("quant/fp8_variants-expected.safetensors"))
        var checked = 0
        for located in reader.checkpoint.allTensors where located.tensor.dtype.isFP8 {
            let w = try reader.weight(located)
            let layout = try #require(w.layout as? FP8BlockLayout)
            #expect(layout.block == .deepSeek && layout.gridCols == 3)
            let codes = try reader.bytes(located).array
            let table = try #require(located.tensor.dtype.fp8Table)
            let values = try decoded(w)
            for i in stride(from: 0, to: codes.count, by: 97) {
                let (r, c) = (i / w.cols, i % w.cols)
                #expect(values[i] == table[Int(codes[i])] * layout.scales[(r / 128) * 3 + c / 128])
            }
            let rows = try w.rows()
            var bf16 = [UInt16](repeating: 0, count: w.rows * w.cols)
            rows.decodeRowsBF16(0..<w.rows, into: &bf16)
            let reference = try #require(expected.tensor(named: located.tensor.name))
            #expect(bf16.withUnsafeBytes { Array($0) } == Array(expected.data(reference)), "\(located.tensor.name)")
            // The generic path (float32 rows rounded once) gives the same bits as the fused kernel.
            var generic = [UInt16](repeating: 0, count: w.rows * w.cols)
            RowsOnly(rows: rows).decodeRowsBF16(0..<w.rows, cols: w.cols, into: &generic)
            #expect(generic == bf16)
            checked += 1
        }
        #expect(checked == 4)
    }

    /// A decoder that only knows float32 rows: the protocol's BF16 rounding is what it gets.
    struct RowsOnly: RowDecoder {
        let rows: StoredRows
        func decodeRow(_ r: Int, cols: Int, into out: UnsafeMutablePointer<Float>) { rows.decodeRow(r, into: out) }
    }
}

@Suite struct ReadErrors {
    func reader(_ tensors: [(String, Dtype, [UInt64])], in dir: String) throws -> CheckpointReader {
        let path = dir + "/model.safetensors"
        try SafetensorsWriter.write(to: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: $0.1, shape: $0.2) },
                                    metadata: nil) { info, sink in
            try [UInt8](repeating: 0x11, count: Int(info.end - info.begin)).withUnsafeBytes { try sink.write($0) }
        }
        return try CheckpointReader(Checkpoint(path: path))
    }

    /// Each way a weight cannot be read has its own id, and names the tensor.
    @Test func eachFailureHasItsId() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try reader([("a.weight", .F8_E4M3, [4, 4]), ("b.weight", .I32, [4, 4]), ("c.weight", .BF16, [2, 3, 4]),
                            ("d.weight", .BF16, [4, 4])], in: dir)
        func kind(_ name: String, expert: Int? = nil) -> WeightReadError.Kind? {
            do {
                _ = try r.weight(name, expert: expert)
                return nil
            } catch {
                #expect(error.tensor == name && error.description.contains("[\(error.id)]"))
                return error.kind
            }
        }
        #expect(kind("missing.weight") == .notFound)
        #expect(kind("a.weight") == .scaleMissing)
        #expect(kind("b.weight") == .unsupportedDtype)
        #expect(kind("c.weight") == .notAMatrix)
        #expect(kind("c.weight", expert: 2) == .expertOutOfRange)
        #expect(kind("c.weight", expert: 1) == nil)
        #expect(kind("d.weight", expert: 0) == .notAMatrix)
        #expect(kind("d.weight") == nil)
    }
}

@Suite struct Counting {
    func tensor(_ name: String, _ dtype: Dtype, _ shape: [UInt64]) -> TensorInfo {
        TensorInfo(name: name, dtype: dtype, shape: shape, begin: 0, end: 0)
    }

    func config(_ json: String) throws -> ModelConfig {
        ModelConfig(try #require(try JSONParser.parse(Array(json.utf8)).objectValue))
    }

    /// Packed codes count as the values they hold; scales, zero points, global scales and shapes are overhead.
    @Test func eachLayoutCountsItsValues() throws {
        let c = ParameterCounting(config: nil)
        let p = "model.layers.0.mlp.experts.3.down_proj."
        // compressed-tensors pack-quantized INT4 (8 a word), group scales, zero points, the shape.
        #expect(c.kind(tensor(p + "weight_packed", .I32, [64, 16])) == .parameters(64 * 16 * 8))
        for overhead in ["weight_scale", "weight_zero_point", "weight_shape", "weight_global_scale", "weight_scale_inv",
                         "weight_scale_2", "input_scale", "input_global_scale", "weight_g_idx"] {
            #expect(c.kind(tensor(p + overhead, .BF16, [64, 4])) == .overhead, "\(overhead)")
        }
        // NVFP4 / MXFP4 in compressed-tensors, and ModelOpt NVFP4: two FP4 codes a byte.
        #expect(c.kind(tensor(p + "weight_packed", .U8, [64, 32])) == .parameters(64 * 64))
        #expect(c.kind(tensor(p + "weight", .U8, [64, 32])) == .parameters(64 * 64))
        // gpt-oss MXFP4 experts: blocks [E, rows, cols/32, 16], E8M0 scales, BF16 biases.
        let g = "model.layers.0.mlp.experts."
        #expect(c.kind(tensor(g + "gate_up_proj_blocks", .U8, [4, 128, 2, 16])) == .parameters(4 * 128 * 64))
        #expect(c.kind(tensor(g + "gate_up_proj_scales", .U8, [4, 128, 2])) == .overhead)
        #expect(c.kind(tensor(g + "gate_up_proj_bias", .BF16, [4, 128])) == .parameters(512))
        // Plain and FP8 weights are their own elements; attention KV-cache scales are overhead.
        #expect(c.kind(tensor("model.norm.weight", .BF16, [64])) == .parameters(64))
        #expect(c.kind(tensor(p + "weight", .F8_E4M3, [64, 32])) == .parameters(64 * 32))
        #expect(c.kind(tensor("model.layers.0.self_attn.k_scale", .F32, [])) == .overhead)
    }

    /// W8A16 packs 4 integers a word: num_bits comes from quantization_config.
    @Test func packedBitsComeFromTheConfig() throws {
        let w8 = try config(#"{"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {"weights": {"num_bits": 8}}}}}"#)
        #expect(ParameterCounting(config: w8).valuesPerPackedInt32 == 4)
        let mixed = try config(#"{"quantization_config": {"config_groups": {"a": {"weights": {"num_bits": 8}}, "b": {"weights": {"num_bits": 4}}}}}"#)
        #expect(ParameterCounting(config: mixed).valuesPerPackedInt32 == 8)
        #expect(ParameterCounting(config: nil).valuesPerPackedInt32 == 8)
    }
}

/// Every quantized weight of the library-written fixtures (Fixtures/quant_formats.py) decodes bit for bit to the
/// producing library's own dequantization: compressed-tensors' dequantizer, transformers' MXFP4 conversion.
@Suite struct LibraryFormats {
    static let fixtures = ["ct-w4a16", "ct-w4a16-asym", "ct-nvfp4a16", "ct-mxfp4a16", "ct-fp8", "ct-fp8-f32", "gpt_oss-mxfp4", "modelopt-nvfp4"]

    /// `w`'s rows as BF16 bits and as float32 values.
    func decode(_ w: StoredWeight) throws -> (bf16: [UInt16], f32: [Float]) {
        let rows = try w.rows()
        var bf16 = [UInt16](repeating: 0, count: w.rows * w.cols)
        rows.decodeRowsBF16(0..<w.rows, into: &bf16)
        return (bf16, try decoded(w))
    }

    func values(_ file: SafetensorsFile, _ t: TensorInfo) -> [UInt8] { Array(file.data(t)) }

    /// Where two byte strings first differ (nil: equal), kept short for the report.
    func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String? {
        guard a != b else { return nil }
        guard a.count == b.count else { return "\(a.count) bytes against \(b.count)" }
        let i = a.indices.first { a[$0] != b[$0] }!
        return "byte \(i): \(a[i]) against \(b[i])"
    }

    @Test(arguments: fixtures)
    func decodesAsTheLibraryDoes(_ name: String) throws {
        // The format's own arithmetic (before the last rounding to the model's dtype), to compare with `.f32`.
        let reader = try CheckpointReader(Checkpoint(path: Fixtures.path("quant/formats/" + name)), values: .computed)
        let expected = try SafetensorsFile(path: Fixtures.path("quant/formats/\(name)-expected.safetensors"))
        var compared = 0
        for t in expected.tensors where t.dtype == .BF16 {
            let reference = values(expected, t)
            let f32 = expected.tensor(named: t.name + ".f32")
            if t.shape.count == 3 {
                // gpt-oss: transformers' parameter [E, in, out] is each expert's [out, in] rows transposed.
                let (experts, inner, outer) = (Int(t.shape[0]), Int(t.shape[1]), Int(t.shape[2]))
                for e in 0..<experts {
                    let w = try reader.weight(t.name, expert: e)
                    #expect(w.rows == outer && w.cols == inner)
                    let (bits, _) = try decode(w)
                    for i in 0..<inner {
                        for o in 0..<outer {
                            let at = ((e * inner + i) * outer + o) * 2
                            let want = UInt16(reference[at]) | UInt16(reference[at + 1]) << 8
                            if bits[o * inner + i] != want {
                                Issue.record("\(name) \(t.name) expert \(e) [\(i), \(o)]: \(bits[o * inner + i]) != \(want)")
                                return
                            }
                        }
                    }
                }
            } else {
                let w = try reader.weight(t.name)
                #expect([UInt64(w.rows), UInt64(w.cols)] == t.shape, "\(t.name)")
                let (bits, floats) = try decode(w)
                #expect(firstDifference(bits.withUnsafeBytes { Array($0) }, reference) == nil, "\(name) \(t.name) (\(w.layout))")
                if let f32 {
                    #expect(firstDifference(floats.withUnsafeBytes { Array($0) }, values(expected, f32)) == nil, "\(name) \(t.name) float32")
                }
            }
            compared += 1
        }
        #expect(compared >= 4, "\(name): \(compared) weights compared")
    }

    /// As the model receives them, values are rounded to its dtype (BF16 here): NVFP4's float32 products too.
    @Test func valuesReachTheModelInItsDtype() throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("quant/formats/ct-nvfp4a16"))
        let name = "model.layers.0.mlp.experts.0.down_proj.weight"
        let computed = try decoded(CheckpointReader(checkpoint, values: .computed).weight(name))
        let delivered = try decoded(CheckpointReader(checkpoint).weight(name))
        #expect(delivered == computed.map { FloatDecoding.bf16(FloatEncoding.bf16($0)) })
        #expect(delivered != computed)
    }

    /// Counted as the model has them: the parameters of the unquantized model the fixture was made from.
    @Test(arguments: fixtures)
    func countsTheModelsParameters(_ name: String) throws {
        let checkpoint = try Checkpoint(path: Fixtures.path("quant/formats/" + name))
        let params = try #require(Fixtures.json("quant/formats/\(name)-params.json").objectValue?["parameters"]?.uint64Value)
        let counting = ParameterCounting(config: checkpoint.config)
        var total: UInt64 = 0
        for located in checkpoint.allTensors {
            if case .parameters(let n) = counting.kind(located.tensor) { total += n }
        }
        // int4 rows whose in-dimension is not a multiple of 8 are padded to whole words: headers alone count the padding.
        let padding: UInt64 = name.hasPrefix("ct-w4a16") ? 2 * 4 * 64 * 4 : 0
        #expect(total == params + padding, "\(name)")
    }
}

@Suite struct HostilePackedWeights {
    /// A packed weight with no elements but a dimension of 2^64-1 (the reference reader accepts the header) is
    /// refused by every way in, never multiplied into an overflow: the shape a conversion plans with, and the rows.
    @Test func anEmptyPackedWeightWithAHugeDimensionIsRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let header = #"{"x.weight_packed":{"dtype":"U8","shape":[0,18446744073709551615],"data_offsets":[0,0]},"#
            + #""x.weight_scale":{"dtype":"F8_E4M3","shape":[0,1],"data_offsets":[0,0]},"#
            + #""x.weight_global_scale":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8)
        bytes += withUnsafeBytes(of: Float(1)) { Array($0) }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        let reader = try CheckpointReader(Checkpoint(path: dir + "/model.safetensors"))
        let logical = try #require(try reader.checkpoint.logicalWeight("x.weight"))
        #expect(throws: WeightReadError.self) { _ = try reader.matrixShape(logical) }
        #expect(throws: WeightReadError.self) { _ = try reader.weight(logical) }
        do { _ = try reader.matrixShape(logical) } catch { #expect(error.kind == .notAMatrix, "\(error)") }
    }

    /// A packed weight whose bookkeeping contradicts it is refused by id, naming the tensor, before any value
    /// is decoded (and before a tensor the shape checks bound is read).
    @Test(arguments: [
        ("weight_scale", Dtype.BF16, [UInt64(8), 3], "scale_grid_mismatch"),      // scale rows != weight rows
        ("weight_shape", Dtype.I64, [UInt64(3)], "scale_grid_mismatch"),          // three integers
        ("weight_zero_point", Dtype.I32, [UInt64(4), 1], "scale_grid_mismatch"),  // not packed along the rows
    ])
    func contradictionsAreRefused(_ bad: String, _ dtype: Dtype, _ shape: [UInt64], _ id: String) throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        var tensors: [(String, Dtype, [UInt64])] = [("m.weight_packed", .I32, [16, 4]), ("m.weight_scale", .BF16, [16, 1]),
                                                    ("m.weight_shape", .I64, [2])]
        tensors.removeAll { $0.0 == "m." + bad }
        tensors.append(("m." + bad, dtype, shape))
        let path = dir + "/model.safetensors"
        try SafetensorsWriter.write(to: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: $0.1, shape: $0.2) },
                                    metadata: nil) { info, sink in
            // weight_shape says [16, 32]; everything else zero.
            var bytes = [UInt8](repeating: 0, count: Int(info.end - info.begin))
            if info.name == "m.weight_shape" && bytes.count == 16 { bytes[0] = 16; bytes[8] = 32 }
            try bytes.withUnsafeBytes { try sink.write($0) }
        }
        let reader = try CheckpointReader(Checkpoint(path: path))
        do {
            _ = try reader.weight("m.weight")
            Issue.record("\(bad) \(shape) accepted")
        } catch {
            #expect(error.id == id && error.tensor == "m." + bad, "\(error)")
        }
    }
}

@Suite struct E8M0Scales {
    /// ue8m0 scales stored natively as F8_E8M0 (2^(byte - 127)) decode exactly as the same powers of two in F32.
    @Test func nativeE8M0ScalesDecodeAsTheirPowersOfTwo() throws {
        let source = try SafetensorsFile(path: Fixtures.path("quant/fp8_block100/model.safetensors"))
        let weightName = "model.layers.0.mlp.experts.0.down_proj.weight"
        let w = try #require(source.tensor(named: weightName))
        let codes = Array(source.data(w))
        var results: [[Float]] = []
        for (dtype, scaleBytes) in [(Dtype.F8_E8M0, [UInt8(118), 126]),
                                    (Dtype.F32, [Float(0x1p-9), 0.5].withUnsafeBytes { Array($0) })] {
            let dir = Fixtures.temporaryDirectory()
            defer { Fixtures.removeTemporary(dir) }
            try SafetensorsWriter.write(to: dir + "/model.safetensors",
                                        tensors: [TensorSpec(name: weightName, dtype: w.dtype, shape: w.shape),
                                                  TensorSpec(name: weightName + "_scale_inv", dtype: dtype, shape: [2, 1])],
                                        metadata: nil) { info, sink in
                try (info.name == weightName ? codes : scaleBytes).withUnsafeBytes { try sink.write($0) }
            }
            try Data(Fixtures.readBytes(Fixtures.path("quant/fp8_block100/config.json"))).write(to: URL(fileURLWithPath: dir + "/config.json"))
            results.append(try decoded(CheckpointReader(Checkpoint(path: dir), values: .computed).weight(weightName)))
        }
        #expect(results[0] == results[1])
        #expect(results[0].contains { $0 != 0 })
    }
}

@Suite struct DeclaredGroupSize {
    /// The group size quantization_config declares is honoured: scales of another grid are refused rather than
    /// spread over the row evenly.
    @Test func scalesOfAnotherGroupSizeAreRefused() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let source = Fixtures.path("quant/formats/ct-w4a16")
        for name in ["model.safetensors", "config.json"] {
            try FileManager.default.copyItem(atPath: source + "/" + name, toPath: dir + "/" + name)
        }
        let weight = "model.layers.0.self_attn.q_proj.weight"  // [64, 64], group 32: 2 scales a row
        #expect(try CheckpointReader(Checkpoint(path: dir)).weight(weight).cols == 64)
        let config = String(decoding: Fixtures.readBytes(dir + "/config.json"), as: UTF8.self)
        #expect(config.contains(#""group_size": 32"#))
        try FileManager.default.removeItem(atPath: dir + "/config.json")
        try Data(config.replacingOccurrences(of: #""group_size": 32"#, with: #""group_size": 16"#).utf8)
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
        let reader = try CheckpointReader(Checkpoint(path: dir))
        do throws(WeightReadError) {
            _ = try reader.weight(weight)
            Issue.record("2 scales a row accepted for group_size 16 on 64 columns")
        } catch {
            #expect(error.kind == .scaleGridMismatch && error.message.contains("group_size 16"), "\(error)")
        }
    }
}
