/// Facts of DeepSeek-V3's FP8 block format, defined once.
public enum BlockQuantization {
    /// Weights are scaled in square blocks of this many rows and columns.
    public static let blockSize = 128
    /// Largest finite E4M3FN value.
    public static let e4m3Max: Float = 448
    /// `<module>.weight` is paired with `<module>.weight` + this suffix (an F32 dequantization multiplier).
    public static let scaleSuffix: StaticString = "_scale_inv"
    /// compressed-tensors' name for the same scale.
    public static let compressedTensorsScaleSuffix: StaticString = "_scale"

    /// Scale grid for a [rows, cols] weight: ceil(rows/block) x ceil(cols/block).
    public static func scaleShape(rows: UInt64, cols: UInt64, block: (UInt64, UInt64) = (128, 128)) -> [UInt64] {
        [(rows + block.0 - 1) / block.0, (cols + block.1 - 1) / block.1]
    }
}
