import Checkpoint
import Dispatch
import NumberFormats
import SafetensorsFormat
import ShardCompression
import Synchronization
import WeightReading
import Support

/// Statistics of one tensor's values: non-finite counts, and min, max, mean and
/// standard deviation (population) over the finite values.
public struct TensorStats: Sendable, Equatable {
    public var count: UInt64 = 0
    public var nan: UInt64 = 0
    public var posInf: UInt64 = 0
    public var negInf: UInt64 = 0
    public var min: Double = .infinity
    public var max: Double = -.infinity
    /// Finite values seen, their mean and sum of squared deviations (Chan et al.'s M2).
    public var finite: UInt64 = 0
    public var mean: Double = 0
    public var m2: Double = 0

    public init() {}

    public var std: Double { finite > 0 ? (m2 / Double(finite)).squareRoot() : .nan }
    public var nonFinite: UInt64 { nan + posInf + negInf }

    /// Combines the statistics of two disjoint parts (Chan, Golub and LeVeque).
    public mutating func merge(_ o: TensorStats) {
        count += o.count
        nan += o.nan
        posInf += o.posInf
        negInf += o.negInf
        min = Swift.min(min, o.min)
        max = Swift.max(max, o.max)
        guard o.finite > 0 else { return }
        guard finite > 0 else {
            finite = o.finite
            mean = o.mean
            m2 = o.m2
            return
        }
        let n = Double(finite + o.finite)
        let delta = o.mean - mean
        mean += delta * Double(o.finite) / n
        m2 += o.m2 + delta * delta * Double(finite) * Double(o.finite) / n
        finite += o.finite
    }
}

/// Scans tensor values on all cores, reading through the memory map a chunk at
/// a time and releasing pages behind it, so memory stays flat on large files.
public enum TensorScan {
    /// Elements per unit of parallel work.
    static let chunkElements = 1 << 22

    public struct Target: Sendable {
        public let file: SafetensorsFile
        public let tensor: TensorInfo
        public init(file: SafetensorsFile, tensor: TensorInfo) {
            self.file = file
            self.tensor = tensor
        }
    }

    /// Returns one result per target (nil for dtypes that are not floats).
    /// `progress` is called with bytes done so far, from any thread.
    /// Bytes come through the one reader: compressed shards (moetool compress) are read a few whole chunks
    /// per unit of work, each chunk decompressed once; the first damaged chunk stops the scan and is the
    /// error (naming the file, the chunk and the tensor).
    public static func scan(_ targets: [Target], threads: Int = 0,
                            progress: (@Sendable (UInt64) -> Void)? = nil) throws(WeightReadError) -> [TensorStats?] {
        // Each file's bytes through the one reader (a compressed shard's frame opened once).
        var storages: [String: ShardStorage] = [:]
        for t in targets where storages[t.file.path] == nil {
            do throws(CompressionError) {
                storages[t.file.path] = try ShardStorage(t.file)
            } catch {
                throw WeightReadError(.damagedChunk, file: t.file.path, tensor: t.tensor.name, error.message,
                                      hint: "the compressed shard is damaged: compress the original again")
            }
        }
        struct Work: Sendable { let target: Int; let bytes: Range<UInt64> }
        var work: [Work] = []
        for (i, t) in targets.enumerated() where t.tensor.dtype.isScannableFloat {
            let size = UInt64(t.tensor.dtype.bits / 8)
            for r in storages[t.file.path]!.pieces(t.tensor, about: UInt64(chunkElements) * size, granule: size) {
                work.append(Work(target: i, bytes: r))
            }
        }
        let units = work
        let shards = storages
        let failed = Atomic<Bool>(false)
        // nil: not scanned, because a unit failed before.
        let partials = parallelMap(units.count, threads: threads) { w -> Result<TensorStats, WeightReadError>? in
            guard !failed.load(ordering: .relaxed) else { return nil }
            let unit = units[w]
            let t = targets[unit.target]
            let size = t.tensor.dtype.bits / 8
            do throws(WeightReadError) {
                let bytes = try shards[t.file.path]!.bytes(t.tensor, unit.bytes)
                let stats = bytes.withUnsafeBytes { scanRange($0, dtype: t.tensor.dtype, range: 0..<($0.count / size)) }
                bytes.release()
                progress?(UInt64(unit.bytes.count))
                return .success(stats)
            } catch {
                // The first damaged chunk is the answer: stop.
                failed.store(true, ordering: .relaxed)
                return .failure(error)
            }
        }
        if let failure = partials.lazy.compactMap({ (p: Result<TensorStats, WeightReadError>?) -> WeightReadError? in
            if case .failure(let e) = p { return e }
            return nil
        }).first { throw failure }
        var results = [TensorStats?](repeating: nil, count: targets.count)
        for (i, t) in targets.enumerated() where t.tensor.dtype.isScannableFloat {
            results[i] = TensorStats()
        }
        for (w, p) in zip(units, partials) { results[w.target]!.merge(try p!.get()) }
        return results
    }

    /// Rows of an encoded weight decoded per unit of work.
    static let bandRows = 256

    /// Scales that cannot be right, counted: zero, negative, not finite, and (for ue8m0 scales, which must be
    /// powers of two) any other.
    public struct ScaleFindings: Sendable, Equatable {
        public var zero: UInt64 = 0
        public var negative: UInt64 = 0
        public var nonFinite: UInt64 = 0
        public var notPowerOfTwo: UInt64 = 0
        public init() {}
        public var isEmpty: Bool { zero == 0 && negative == 0 && nonFinite == 0 && notPowerOfTwo == 0 }

        /// `powersOfTwo`: the format says every scale is one (DeepSeek's `scale_fmt: ue8m0`).
        init(_ scales: [Float], powersOfTwo: Bool) {
            for x in scales {
                if !x.isFinite { nonFinite += 1 } else if x == 0 { zero += 1 } else if x < 0 { negative += 1 }
                if powersOfTwo && x.isFinite && x != 0 && x.significandBitPattern != 0 { notPowerOfTwo += 1 }
            }
        }

        mutating func merge(_ o: ScaleFindings) {
            zero += o.zero
            negative += o.negative
            nonFinite += o.nonFinite
            notPowerOfTwo += o.notPowerOfTwo
        }
    }

    /// Statistics of the values encoded weights stand for, decoded through the reader as a loader would hand
    /// them to the model (each expert of a gpt-oss stack in turn), and findings about their scales. A weight's
    /// scales are read once; its rows go in bands over all cores. `progress` gets the stored bytes of each band.
    public static func scanDecoded(_ weights: [LogicalWeight], reader: CheckpointReader, threads: Int = 0,
                                   progress: (@Sendable (UInt64) -> Void)? = nil) throws(WeightReadError) -> [(stats: TensorStats, scales: ScaleFindings)] {
        let ue8m0 = reader.checkpoint.config?.quantizationConfig?["scale_fmt"]?.stringValue == "ue8m0"
        var results: [(stats: TensorStats, scales: ScaleFindings)] = []
        for logical in weights {
            var stats = TensorStats()
            var findings = ScaleFindings()
            let experts: [Int?]
            if case .gptOssMXFP4 = logical.encoding { experts = (0..<Int(logical.codes.tensor.shape[0])).map { $0 } } else { experts = [nil] }
            for e in experts {
                let w = try reader.weight(logical, expert: e)
                findings.merge(ScaleFindings(scaleValues(w.layout), powersOfTwo: ue8m0 && logical.encoding.name == "fp8-block"))
                let bands = stride(from: 0, to: w.rows, by: bandRows).map { $0..<min(w.rows, $0 + bandRows) }
                let partials = parallelMap(bands.count, threads: threads) { k -> Result<TensorStats, WeightReadError> in
                    do throws(WeightReadError) {
                        let band = try w.rows(bands[k])
                        let values = [Float](unsafeUninitializedCapacity: band.rows * band.cols) { out, count in
                            for r in 0..<band.rows { band.decodeRow(r, into: out.baseAddress! + r * band.cols) }
                            count = band.rows * band.cols
                        }
                        band.release()
                        progress?(UInt64(band.rows * w.layout.bytesPerRow))
                        return .success(values.withUnsafeBytes { scanRange($0, dtype: .F32, range: 0..<values.count) })
                    } catch {
                        return .failure(error)
                    }
                }
                for p in partials { stats.merge(try p.get()) }
            }
            results.append((stats, findings))
        }
        return results
    }

    /// The scales a layout multiplies by (NVFP4's divided by its global scale, MX's as powers of two).
    static func scaleValues(_ layout: any StoredLayout) -> [Float] {
        switch layout {
        case let l as FP8BlockLayout: return l.scales
        case let l as PackedIntLayout: return l.scales
        case let l as FP4Layout: return l.multipliers
        case let l as RoundedLayout: return scaleValues(l.inner)
        default: return []
        }
    }

    /// Statistics of elements `range` of a tensor's bytes (which may be unaligned).
    public static func scanRange(_ data: UnsafeRawBufferPointer, dtype: Dtype, range: Range<Int>) -> TensorStats {
        switch dtype {
        case .F32: return accumulate(range) { Double(Float(bitPattern: data.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        case .F64: return accumulate(range) { Double(bitPattern: data.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        case .BF16: return accumulate(range) { Double(FloatDecoding.bf16(data.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))) }
        case .F16:
            return FloatDecoding.f16Table.withUnsafeBufferPointer { table in
                accumulate(range) { Double(table[Int(data.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))]) }
            }
        case .F8_E4M3: return byteTable(FloatDecoding.e4m3Table, data, range)
        case .F8_E5M2: return byteTable(FloatDecoding.e5m2Table, data, range)
        case .F8_E4M3FNUZ: return byteTable(FloatDecoding.e4m3fnuzTable, data, range)
        case .F8_E5M2FNUZ: return byteTable(FloatDecoding.e5m2fnuzTable, data, range)
        case .F8_E8M0: return byteTable(FloatDecoding.e8m0Table, data, range)
        default: return TensorStats()
        }
    }

    private static func byteTable(_ table: [Float], _ data: UnsafeRawBufferPointer, _ range: Range<Int>) -> TensorStats {
        table.withUnsafeBufferPointer { t in accumulate(range) { Double(t[Int(data[$0])]) } }
    }

    /// One pass with a shift (the first finite value) so that sums of squares stay accurate.
    @inline(__always)
    private static func accumulate(_ range: Range<Int>, _ value: (Int) -> Double) -> TensorStats {
        var s = TensorStats()
        s.count = UInt64(range.count)
        var shift = Double.nan
        var sum = 0.0
        var sumSquares = 0.0
        var lo = Double.infinity
        var hi = -Double.infinity
        var finite: UInt64 = 0
        for i in range {
            let x = value(i)
            if x.isFinite {
                if shift.isNaN { shift = x }
                let d = x - shift
                sum += d
                sumSquares += d * d
                lo = Swift.min(lo, x)
                hi = Swift.max(hi, x)
                finite += 1
            } else if x.isNaN {
                s.nan += 1
            } else if x > 0 {
                s.posInf += 1
            } else {
                s.negInf += 1
            }
        }
        s.finite = finite
        s.min = lo
        s.max = hi
        if finite > 0 {
            let n = Double(finite)
            s.mean = shift + sum / n
            s.m2 = Swift.max(0, sumSquares - sum * sum / n)
        }
        return s
    }
}
