import NumberFormats
import SafetensorsFormat
import StrictJSON

/// The rows x cols of the blocks that share one scale.
public struct BlockShape: Sendable, Equatable, CustomStringConvertible {
    public let rows: Int
    public let cols: Int

    public init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
    }

    /// DeepSeek-V3's 128x128 blocks, assumed when quantization_config declares none.
    public static let deepSeek = BlockShape(rows: BlockQuantization.blockSize, cols: BlockQuantization.blockSize)
    /// Largest block side accepted from a config (a block larger than any weight is a per-tensor scale).
    public static let maximumSide = 1 << 20

    /// The scale grid of a [rows, cols] weight: ceil(rows/block.rows) x ceil(cols/block.cols), without overflow
    /// for any dimension a header can hold.
    public func grid(rows: UInt64, cols: UInt64) -> [UInt64] {
        [BlockShape.ceilDiv(rows, UInt64(self.rows)), BlockShape.ceilDiv(cols, UInt64(self.cols))]
    }

    static func ceilDiv(_ a: UInt64, _ b: UInt64) -> UInt64 { a / b + (a % b == 0 ? 0 : 1) }

    public var description: String { "\(rows)x\(cols)" }
}

extension ModelConfig {
    /// quantization_config.weight_block_size as declared, or nil when absent.
    /// Throws a description of what is wrong when it is not two integers from 1 to `BlockShape.maximumSide`.
    public func declaredBlockShape() throws(Problem) -> BlockShape? {
        guard let value = quantizationConfig?["weight_block_size"], value != .null else { return nil }
        let sides = value.arrayValue?.map { $0.uint64Value } ?? []
        guard sides.count == 2, let r = sides[0], let c = sides[1],
              (1...UInt64(BlockShape.maximumSide)).contains(r), (1...UInt64(BlockShape.maximumSide)).contains(c)
        else {
            throw Problem(file: "config.json", rule: .configInvalid,
                "quantization_config.weight_block_size is \(String(decoding: JSONSerializer.compact(value), as: UTF8.self)); it must be two integers from 1 to \(BlockShape.maximumSide), e.g. [128, 128]")
        }
        return BlockShape(rows: Int(r), cols: Int(c))
    }
}
