import SafetensorsFormat

/// Why a weight cannot be read as its format says: one case per failure, each with a stable id, a message
/// naming the file and tensor, and what to do about it.
public struct WeightReadError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// No tensor of that name in the checkpoint.
        case notFound = "weight_not_found"
        /// The tensor's shape is not a matrix (or a stack of them when an expert is asked for).
        case notAMatrix = "weight_not_a_matrix"
        /// An expert index past the end of a fused stack.
        case expertOutOfRange = "expert_out_of_range"
        /// A dtype no encoding reads as weight values (integers, booleans).
        case unsupportedDtype = "weight_dtype_unsupported"
        /// An FP8 weight read as values but no scale beside it.
        case scaleMissing = "scale_missing"
        /// An FP8 block weight that is not 2-D, or a scale of a dtype that is not read.
        case unsupportedLayout = "weight_layout_unsupported"
        /// The scale's grid contradicts the declared block size.
        case scaleGridMismatch = "scale_grid_mismatch"
        /// A compressed shard's chunk failed its checks while being read.
        case damagedChunk = "compressed_chunk_damaged"
    }

    public let kind: Kind
    public let file: String
    public let tensor: String
    public let message: String
    public let hint: String

    public init(_ kind: Kind, file: String, tensor: String, _ message: String, hint: String = "") {
        self.kind = kind
        self.file = file
        self.tensor = tensor
        self.message = message
        self.hint = hint
    }

    /// The stable id of the failure, as reports and `--json` name it.
    public var id: String { kind.rawValue }

    public var description: String {
        "\(escapeForDisplay(file)): tensor \"\(escapeForDisplay(tensor))\": \(message)\(hint.isEmpty ? "" : "; " + hint) [\(id)]"
    }
}
