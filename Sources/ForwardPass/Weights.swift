import CKernels
import Checkpoint
import NumberFormats
import SafetensorsFormat
import WeightReading
import Support

/// Why a forward pass cannot run or a comparison cannot be made: one case per failure, each with a stable
/// id, a message naming the file, tensor or config field, and what to do where the message does not say.
public struct ForwardError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// config.json lacks a field the model needs, or holds an impossible value.
        case configInvalid = "config_invalid"
        /// An architecture, activation or rope type verify does not run.
        case unsupportedModel = "model_unsupported"
        /// A tensor's shape disagrees with config.json or with the tensors it works with.
        case shapeMismatch = "shape_mismatch"
        /// A layer asked for is not an MoE layer (or there is none).
        case notAnMoELayer = "not_an_moe_layer"
        /// The two checkpoints are not the same model.
        case checkpointsDiffer = "checkpoints_differ"
        /// Token ids outside the vocabulary, or more tokens than a run takes.
        case inputOutOfRange = "input_out_of_range"
        /// A weight that cannot be read (WeightReadError; `id` is its own).
        case weightUnreadable = "weight_unreadable"
        /// The outputs cannot be written where asked.
        case outputUnwritable = "output_unwritable"
    }

    public let kind: Kind
    public let message: String
    public let hint: String?
    /// The stable id: the kind's, or, for an unreadable weight, the reader's own (e.g. scale_grid_mismatch).
    public let id: String

    public init(_ kind: Kind, _ message: String, hint: String? = nil) {
        self.kind = kind
        self.message = message
        self.hint = hint ?? ForwardError.defaultHints[kind]
        id = kind.rawValue
    }

    public init(_ error: WeightReadError) {
        kind = .weightUnreadable
        message = error.description
        hint = nil
        id = error.id
    }

    /// What to do, for the kinds whose messages cannot say it themselves.
    static let defaultHints: [Kind: String] = [
        .unsupportedModel: "model types that reuse one of these architectures are read as it (\(ModelConfig.architectureAliases.sorted { $0.key < $1.key }.map { "\($0.key) as \($0.value)" }.joined(separator: ", "))); see Docs/verify.md",
        .shapeMismatch: "the checkpoint does not match its config.json: check that they belong together",
    ]

    public var description: String { message + (hint.map { "; " + $0 } ?? "") }
}

/// A row-major float32 matrix.
public struct Matrix: Sendable {
    public let rows: Int
    public let cols: Int
    public var values: [Float]

    public init(rows: Int, cols: Int, values: [Float]) {
        precondition(values.count == rows * cols)
        self.rows = rows
        self.cols = cols
        self.values = values
    }
}

/// A Linear layer's weight (out x in), read a row at a time as float32 through the checkpoint's one
/// reader (WeightReading): straight from the memory map (or the decompressed chunks of a compressed shard)
/// whatever the encoding, so a 2048x7168 expert never exists as a float32 matrix.
public struct Weight: Sendable {
    public let rows: Int
    public let cols: Int
    /// Values held in memory start at row `firstRow` of their array, so that a range of rows shares it.
    enum Storage: Sendable {
        case dense([Float], firstRow: Int)
        /// BF16 values, row-major (a transposed BF16 stack: half the bytes of float32, the same values).
        case bf16([UInt16], firstRow: Int)
        case stored(StoredRows)
    }
    let storage: Storage
    /// The tensor it came from, for error messages.
    public var name: String = "weight"

    public init(_ m: Matrix) {
        rows = m.rows
        cols = m.cols
        storage = .dense(m.values, firstRow: 0)
    }

    init(bf16 values: [UInt16], rows: Int, cols: Int) {
        precondition(values.count == rows * cols)
        self.rows = rows
        self.cols = cols
        storage = .bf16(values, firstRow: 0)
    }

    private init(rows: Int, cols: Int, storage: Storage, name: String) {
        self.rows = rows
        self.cols = cols
        self.storage = storage
        self.name = name
    }

    init(_ stored: StoredRows) {
        rows = stored.rows
        cols = stored.cols
        storage = .stored(stored)
        name = stored.name
    }

    /// Rows `range` of this weight, read from the same place (no copy): the gate and up halves of a
    /// fused gate_up projection.
    public func rows(_ range: Range<Int>) -> Weight {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of \(rows)")
        switch storage {
        case .dense(let v, let first):
            return Weight(rows: range.count, cols: cols, storage: .dense(v, firstRow: first + range.lowerBound),
                          name: "\(name)[rows \(range.lowerBound)..<\(range.upperBound)]")
        case .bf16(let v, let first):
            return Weight(rows: range.count, cols: cols, storage: .bf16(v, firstRow: first + range.lowerBound),
                          name: "\(name)[rows \(range.lowerBound)..<\(range.upperBound)]")
        case .stored(let s):
            return Weight(s.rows(range))
        }
    }

    /// Lets the kernel drop the mapped pages of this weight (done with it), so that running a
    /// layer of hundreds of experts keeps memory at one expert's worth.
    public func release() {
        if case .stored(let s) = storage { s.release() }
    }

    /// Row `r` as float32 into `out` (cols floats).
    func decodeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case .dense(let v, let first):
            v.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + (first + r) * cols, count: cols) }
        case .bf16(let v, let first):
            v.withUnsafeBufferPointer { moe_bf16_to_f32($0.baseAddress! + (first + r) * cols, out, cols) }
        case .stored(let s):
            s.decodeRow(r, into: out)
        }
    }
}

/// Reads weights from a checkpoint as float32 through its CheckpointReader, whatever they are stored as
/// (Docs/formats.md lists the encodings) and wherever (plain or compressed shards).
public struct WeightReader: Sendable {
    public let reader: CheckpointReader
    public var checkpoint: Checkpoint { reader.checkpoint }

    public init(_ checkpoint: Checkpoint) throws(ForwardError) {
        do throws(WeightReadError) {
            reader = try CheckpointReader(checkpoint)
        } catch {
            throw ForwardError(error)
        }
    }

    public func has(_ name: String) -> Bool { reader.has(name) }

    /// A 1-D or 2-D tensor, or one expert's slice of a 3-D fused tensor (`index`), as float32.
    public func matrix(_ name: String, index: Int? = nil) throws(ForwardError) -> Matrix {
        let w = try weight(name, index: index)
        let values = [Float](unsafeUninitializedCapacity: w.rows * w.cols) { out, count in
            for r in 0..<w.rows { w.decodeRow(r, into: out.baseAddress! + r * w.cols) }
            count = w.rows * w.cols
        }
        return Matrix(rows: w.rows, cols: w.cols, values: values)
    }

    public func vector(_ name: String) throws(ForwardError) -> [Float] { try matrix(name).values }

    /// One expert of a stack that transformers holds transposed, [experts, in, out] (gpt-oss's experts), as a
    /// Linear weight [out, in]: gpt-oss's MXFP4 blocks already store each expert's output rows and are read in
    /// place; a plain stack is transposed here, into float32.
    public func expertRows(_ name: String, expert: Int) throws(ForwardError) -> Weight {
        do throws(WeightReadError) {
            let logical = try reader.checkpoint.logicalWeight(name)
            // Not stored at all: the reader says so, naming it.
            guard let logical else { return Weight(try reader.weight(name, expert: expert).rows()) }
            let stored = try reader.weight(logical, expert: expert)
            if case .gptOssMXFP4 = logical.encoding { return Weight(try stored.rows()) }
            let rows = try stored.rows()
            defer { rows.release() }
            let (inputs, outputs) = (stored.rows, stored.cols)
            if case .plain = logical.encoding, stored.tensor.dtype == .BF16 {
                // BF16 values transposed as they are stored (the same floats, half the bytes of float32), bands of
                // input rows shared over the cores, then decoded row by row as they are used.
                let band = 256
                let transposed = [UInt16](unsafeUninitializedCapacity: inputs * outputs) { out, count in
                    nonisolated(unsafe) let out = out
                    rows.withStoredBytes { (raw: UnsafeRawBufferPointer) in
                        nonisolated(unsafe) let src = raw.baseAddress!.assumingMemoryBound(to: UInt16.self)
                        _ = parallelMap((inputs + band - 1) / band, threads: Math.threads) { task in
                            let start = task * band, n = min(band, inputs - start)
                            moe_transpose_u16_into(src + start * outputs, n, outputs, out.baseAddress! + start, inputs)
                        }
                    }
                    count = inputs * outputs
                }
                var w = Weight(bf16: transposed, rows: outputs, cols: inputs)
                w.name = stored.name
                return w
            }
            // Transposed a band of input rows at a time, the bands shared over the cores: each output row then
            // receives `band` consecutive values and the band's columns are read from a few pages, instead of one
            // scattered store per value (a 5120 x 16384 Llama 4 stack took 2.5 s transposed value by value).
            let band = 64
            var values = [Float](repeating: 0, count: inputs * outputs)
            values.withUnsafeMutableBufferPointer { out in
                nonisolated(unsafe) let out = out
                _ = parallelMap((inputs + band - 1) / band, threads: Math.threads) { task in
                    let start = task * band, n = min(band, inputs - start)
                    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: n * outputs)
                    defer { buffer.deallocate() }
                    for b in 0..<n { rows.decodeRow(start + b, into: buffer + b * outputs) }
                    moe_transpose_band_f32(buffer, n, outputs, out.baseAddress! + start, inputs)
                }
            }
            var w = Weight(Matrix(rows: outputs, cols: inputs, values: values))
            w.name = stored.name
            return w
        } catch {
            throw ForwardError(error)
        }
    }

    /// A 1-D or 2-D tensor of integers (I64, I32 or their unsigned forms; DeepSeek-V4's tid2eid) as [rows, cols]
    /// and its values, row-major.
    public func integers(_ name: String) throws(ForwardError) -> (rows: Int, cols: Int, values: [Int]) {
        guard let located = reader.checkpoint.locate(name) else {
            throw ForwardError(WeightReadError(.notFound, file: reader.checkpoint.path, tensor: name, "no tensor of that name in the checkpoint",
                                               hint: "the checkpoint is incomplete or not this model"))
        }
        let t = located.tensor
        let width: Int
        switch t.dtype {
        case .I64, .U64: width = 8
        case .I32, .U32: width = 4
        default:
            throw ForwardError(.shapeMismatch, "\(name) is \(t.dtype.rawValue); integers (I64 or I32) are expected")
        }
        guard t.shape.count == 1 || t.shape.count == 2 else {
            throw ForwardError(.shapeMismatch, "\(name) is \(t.shape.count)-D; a table [rows, cols] is expected")
        }
        let rows = t.shape.count == 2 ? Int(t.shape[0]) : 1, cols = Int(t.shape.last!)
        do throws(WeightReadError) {
            let bytes = try reader.bytes(located)
            defer { bytes.release() }
            let values = bytes.withUnsafeBytes { raw in
                (0..<(rows * cols)).map { i in
                    width == 8 ? Int(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: i * 8, as: Int64.self))
                        : t.dtype == .I32 ? Int(raw.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
                        : Int(raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
                }
            }
            return (rows, cols, values)
        } catch {
            throw ForwardError(error)
        }
    }

    /// A Linear weight (or a 1-D tensor as one row) read row by row, or one expert's slice of a fused stack.
    public func weight(_ name: String, index: Int? = nil) throws(ForwardError) -> Weight {
        do throws(WeightReadError) {
            return Weight(try reader.weight(name, expert: index).rows())
        } catch {
            throw ForwardError(error)
        }
    }
}
