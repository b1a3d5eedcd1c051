/// Every way an input can be refused, one case per rule. The raw values are the
/// stable identifiers shown in messages and in `--json` output.
public enum Rule: String, Sendable, CaseIterable {
    // A safetensors file.
    case unreadable = "unreadable"
    case notSafetensors = "not_safetensors"
    case fileTooSmall = "file_too_small"
    case headerTooLarge = "header_too_large"
    case headerOutOfBounds = "header_out_of_bounds"
    case headerNotUTF8 = "header_not_utf8"
    case headerInvalidJSON = "header_invalid_json"
    case headerTooDeep = "header_too_deep"
    case invalidInteger = "invalid_integer"
    case invalidMetadata = "invalid_metadata"
    case duplicateMetadataKey = "duplicate_metadata_key"
    case missingField = "missing_field"
    case invalidField = "invalid_field"
    case unknownDtype = "unknown_dtype"
    case duplicateTensor = "duplicate_tensor"
    case invalidOffsets = "invalid_offsets"
    case offsetsNotContiguous = "offsets_not_contiguous"
    case sizeOverflow = "size_overflow"
    case packedSizeNotByteAligned = "packed_size_not_byte_aligned"
    case sizeMismatch = "size_mismatch"
    case trailingBytes = "trailing_bytes"
    case dataTruncated = "data_truncated"
    // A checkpoint directory.
    case noWeights = "no_weights"
    case indexInvalidJSON = "index_invalid_json"
    case indexInvalid = "index_invalid"
    case indexEmpty = "index_empty"
    case invalidShardName = "invalid_shard_name"
    case shardMissing = "shard_missing"
    case shardNotDownloaded = "shard_not_downloaded"
    case shardPathEscapes = "shard_path_escapes"
    case binShard = "bin_shard"
    case tensorMissingFromShard = "tensor_missing_from_shard"
    case tensorInTwoShards = "tensor_in_two_shards"
    case configInvalid = "config_invalid"
    // A checkpoint that loads, but not as its config describes (inspect).
    case expertCountMismatch = "expert_count_mismatch"
    case layerCountMismatch = "layer_count_mismatch"
    case scaleMissing = "scale_missing"
    case scaleGridMismatch = "scale_grid_mismatch"
    case tensorMissing = "tensor_missing"
    case tensorWrongShape = "tensor_wrong_shape"

    /// What the user can do about it.
    public var hint: String {
        switch self {
        case .unreadable: return "check the path and its permissions"
        case .notSafetensors: return "point at the .safetensors file itself, or fetch it again"
        case .fileTooSmall, .headerOutOfBounds, .dataTruncated:
            return "the file looks truncated: download or copy it again"
        case .headerTooLarge: return "this is not a safetensors file, or it is corrupted (headers are at most 100,000,000 bytes)"
        case .headerNotUTF8, .headerInvalidJSON, .headerTooDeep, .invalidInteger, .invalidMetadata,
            .duplicateMetadataKey, .missingField, .invalidField, .unknownDtype, .duplicateTensor:
            return "the header is malformed: re-export the file with the safetensors library"
        case .invalidOffsets, .offsetsNotContiguous, .sizeOverflow, .packedSizeNotByteAligned, .sizeMismatch:
            return "the header does not describe the data: re-export the file with the safetensors library"
        case .trailingBytes: return "the file has bytes after its last tensor: it was corrupted or appended to"
        case .noWeights: return "point at a .safetensors file or a checkpoint directory holding model.safetensors or model.safetensors.index.json"
        case .indexInvalidJSON, .indexInvalid: return "fix or regenerate model.safetensors.index.json"
        case .indexEmpty: return "the index's weight_map lists no tensor, so a loader would load nothing: regenerate the index from the shards"
        case .invalidShardName: return "a shard name must be a plain relative file name without NUL bytes; fix the index"
        case .shardMissing: return "the checkpoint is incomplete: fetch the missing shard"
        case .shardNotDownloaded: return "download the checkpoint again (e.g. `hf download ORG/NAME`), which fetches what is missing"
        case .shardPathEscapes: return "the index must name shards by paths relative to the checkpoint directory, without \"..\"; fix the index"
        case .binShard: return "convert the checkpoint to safetensors first (pickled .bin files are not read)"
        case .tensorMissingFromShard, .tensorInTwoShards:
            return "the index and the shards disagree: regenerate the index or fetch the shards again"
        case .configInvalid: return "fix config.json"
        case .expertCountMismatch, .layerCountMismatch, .tensorMissing, .tensorWrongShape:
            return "a loader would initialise the missing weights at random: fetch or convert the checkpoint again, or fix config.json"
        case .scaleMissing, .scaleGridMismatch:
            return "FP8 weights need their block scales, shaped as the block grid: fetch or convert the checkpoint again"
        }
    }
}

/// One problem found in an input: which file, which tensor (if one is at fault),
/// which rule, and the details.
public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let tensor: String?
    public let rule: Rule
    public let message: String

    public init(file: String, tensor: String? = nil, rule: Rule, _ message: String) {
        self.file = file
        self.tensor = tensor
        self.rule = rule
        self.message = message
    }

    public var description: String {
        location(file, tensor) + "\(message) [\(rule.rawValue)]; \(rule.hint)"
    }
}

/// An input was refused; every problem found is listed.
public struct InvalidInput: Error, Sendable, CustomStringConvertible {
    public var problems: [Problem]

    public init(_ problems: [Problem]) { self.problems = problems }
    public init(_ problem: Problem) { self.problems = [problem] }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Something accepted but worth telling the user.
public struct Warning: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case leadingWhitespace = "leading_whitespace"
        case unknownMember = "unknown_member"
        case noTotalSize = "no_total_size"
        case expertCountMismatch = "expert_count_mismatch"
        case configMissing = "config_missing"
        case unlistedShard = "unlisted_shard"
        case tensorNotInWeightMap = "tensor_not_in_weight_map"
        case unexpectedTensor = "unexpected_tensor"
        case totalSizeMismatch = "total_size_mismatch"
    }

    public let file: String
    public let tensor: String?
    public let kind: Kind
    public let message: String

    public init(file: String, tensor: String? = nil, kind: Kind, _ message: String) {
        self.file = file
        self.tensor = tensor
        self.kind = kind
        self.message = message
    }

    public var description: String { location(file, tensor) + message }
}

/// `file: tensor "name": ` — where a problem or warning is, with the name made safe to print.
func location(_ file: String, _ tensor: String?) -> String {
    var s = escapeForDisplay(file) + ": "
    if let tensor { s += "tensor \"\(escapeForDisplay(tensor))\": " }
    return s
}

/// Makes a name safe to print on a terminal: control characters (C0, DEL, C1)
/// and the backslash become escapes, so a hostile tensor name cannot move the
/// cursor or rewrite earlier output.
public func escapeForDisplay(_ s: String) -> String {
    var needs = false
    for u in s.unicodeScalars where u.value < 0x20 || (u.value >= 0x7F && u.value < 0xA0) || u == "\\" || isBidiControl(u) {
        needs = true
        break
    }
    guard needs else { return s }
    var out = ""
    for u in s.unicodeScalars {
        switch u {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        default:
            if u.value < 0x20 || (u.value >= 0x7F && u.value < 0xA0) || isBidiControl(u) {
                out += "\\u{" + String(u.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out
}

private func isBidiControl(_ u: Unicode.Scalar) -> Bool {
    (0x202A...0x202E).contains(u.value) || (0x2066...0x2069).contains(u.value)
}
