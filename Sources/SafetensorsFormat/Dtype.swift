/// The element types of the safetensors format, declared in the reference
/// library's order: that order is its layout rank (the writer puts higher ranks first).
public enum Dtype: String, CaseIterable, Sendable, Comparable {
    case BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ
    case I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64

    /// Position in the reference order.
    public var rank: Int { Dtype.rankTable[self]! }
    private static let rankTable: [Dtype: Int] = Dictionary(
        uniqueKeysWithValues: Dtype.allCases.enumerated().map { ($1, $0) })

    public static func < (a: Dtype, b: Dtype) -> Bool { a.rank < b.rank }

    /// Bits per element. BOOL is stored in a byte; F4 and F6 are packed.
    public var bits: Int {
        switch self {
        case .F4: return 4
        case .F6_E2M3, .F6_E3M2: return 6
        case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ: return 8
        case .I16, .U16, .F16, .BF16: return 16
        case .I32, .U32, .F32: return 32
        case .C64, .F64, .I64, .U64: return 64
        }
    }

    /// Packed types whose elements do not each fill whole bytes.
    public var isPacked: Bool { bits % 8 != 0 }

    /// Floating-point types whose values `inspect --scan` can read.
    public var isScannableFloat: Bool {
        switch self {
        case .F16, .BF16, .F32, .F64, .F8_E4M3, .F8_E5M2, .F8_E4M3FNUZ, .F8_E5M2FNUZ, .F8_E8M0: return true
        default: return false
        }
    }

    /// 8-bit float types (FP8 weights in block-quantized checkpoints).
    public var isFP8: Bool {
        switch self {
        case .F8_E4M3, .F8_E5M2, .F8_E4M3FNUZ, .F8_E5M2FNUZ: return true
        default: return false
        }
    }

    public enum SizeError: Error, Equatable {
        case overflow
        case notByteAligned(bits: UInt64)
    }

    /// Bytes taken by `elements` elements, overflow-checked; packed types must end on a byte.
    public func byteSize(elements: UInt64) -> Result<UInt64, SizeError> {
        let (high, low) = elements.multipliedFullWidth(by: UInt64(bits))
        guard high == 0 else { return .failure(.overflow) }
        guard low % 8 == 0 else { return .failure(.notByteAligned(bits: low)) }
        return .success(low / 8)
    }
}

/// Product of a shape's dimensions, overflow-checked. `[]` (a scalar) has one element.
public func elementCount(_ shape: [UInt64]) -> UInt64? {
    var n: UInt64 = 1
    for d in shape {
        let (m, o) = n.multipliedReportingOverflow(by: d)
        if o { return shape.contains(0) ? 0 : nil }
        n = m
    }
    return n
}
