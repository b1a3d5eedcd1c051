/// A value read from a torch.save file: only the kinds torch.load(weights_only=True) can produce
/// from it. Nothing here can run code; a tensor is its numbers, not a torch object.
public indirect enum PickleValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int64)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    /// A dict or an OrderedDict, its entries in the file's order.
    case dict([Entry])
    case tensor(TorchTensor)

    public struct Entry: Sendable, Equatable {
        public let key: PickleValue
        public let value: PickleValue
    }

    /// The value of a string key of a dict.
    public subscript(key: String) -> PickleValue? {
        guard case .dict(let entries) = self else { return nil }
        return entries.first { $0.key == .string(key) }?.value
    }

    /// What kind of value this is, for messages ("a tensor", "a list").
    public var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .float: return "a float"
        case .string: return "a string"
        case .bytes: return "bytes"
        case .list: return "a list"
        case .tuple: return "a tuple"
        case .dict: return "a dict"
        case .tensor(let t): return "a \(t.dtype.rawValue) tensor of shape [\(t.shape.map(String.init).joined(separator: ", "))]"
        }
    }
}

/// The element types of torch's typed storages (`torch.IntStorage` ...), with their sizes.
public enum TorchDtype: String, Sendable, CaseIterable {
    case float64, float32, float16, bfloat16, int64, int32, int16, int8, uint8, bool

    /// The storage class torch.save names for each (`torch.<name>`); `UntypedStorage` holds bytes.
    init?(storageClass: String) {
        switch storageClass {
        case "DoubleStorage": self = .float64
        case "FloatStorage": self = .float32
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "LongStorage": self = .int64
        case "IntStorage": self = .int32
        case "ShortStorage": self = .int16
        case "CharStorage": self = .int8
        case "ByteStorage", "UntypedStorage": self = .uint8
        case "BoolStorage": self = .bool
        default: return nil
        }
    }

    public var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }
}

/// A tensor rebuilt from its storage as `torch._utils._rebuild_tensor_v2` would, without torch:
/// the storage's bytes, and the offset, shape and strides (in elements) that view them. Every
/// element the view reaches was checked to lie inside the storage when it was made.
public struct TorchTensor: Sendable, Equatable {
    public let dtype: TorchDtype
    public let shape: [Int]
    public let strides: [Int]
    public let offset: Int
    let storage: Storage
    let bigEndian: Bool

    public var count: Int { shape.reduce(1, *) }

    /// Element `index` (row-major over `shape`) as a Double (exact for integers up to 2^53).
    public func element(_ index: Int) -> Double {
        var rest = index
        var at = offset
        for d in shape.indices.reversed() {
            at += (rest % shape[d]) * strides[d]
            rest /= shape[d]
        }
        return storage.element(at, dtype, bigEndian: bigEndian)
    }

    /// Every element, row-major.
    public func values() -> [Double] {
        (0..<count).map(element)
    }

    public static func == (a: TorchTensor, b: TorchTensor) -> Bool {
        a.dtype == b.dtype && a.shape == b.shape && a.values() == b.values()
    }
}

/// A storage's bytes (shared by every tensor that views it).
final class Storage: @unchecked Sendable {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func element(_ i: Int, _ dtype: TorchDtype, bigEndian: Bool) -> Double {
        let n = dtype.size
        var bits: UInt64 = 0
        for k in 0..<n {
            let b = UInt64(bytes[i * n + (bigEndian ? n - 1 - k : k)])
            bits |= b << (8 * UInt64(k))
        }
        switch dtype {
        case .float64: return Double(bitPattern: bits)
        case .float32: return Double(Float(bitPattern: UInt32(bits)))
        case .float16: return Double(Float16(bitPattern: UInt16(bits)))
        case .bfloat16: return Double(Float(bitPattern: UInt32(bits) << 16))
        case .int64: return Double(Int64(bitPattern: bits))
        case .int32: return Double(Int32(truncatingIfNeeded: bits))
        case .int16: return Double(Int16(truncatingIfNeeded: bits))
        case .int8: return Double(Int8(truncatingIfNeeded: bits))
        case .uint8: return Double(bits)
        case .bool: return bits == 0 ? 0 : 1
        }
    }
}
