import SafetensorsFormat

/// Every way compressing, opening or restoring a shard can fail, one case per failure. The raw values are
/// the stable identifiers shown in messages and in `--json` errors.
public enum CompressionFailure: String, Sendable, CaseIterable {
    // What the run was given.
    case inputMissing = "input_missing"
    case notFileOrDirectory = "not_file_or_directory"
    case unreadable = "unreadable"
    case notSafetensors = "not_safetensors"
    case alreadyCompressed = "already_compressed"
    case nothingToCompress = "nothing_to_compress"
    case notCompressed = "not_compressed"
    // Where it writes.
    case outputConflict = "output_conflict"
    case outputExists = "output_exists"
    case safetensorsName = "safetensors_name"
    case outputInUse = "output_in_use"
    case cannotCreateDirectory = "cannot_create_directory"
    // A compressed shard, from its prefix to its table.
    case truncated = "truncated"
    case unsupportedVersion = "unsupported_version"
    case headerChecksumMismatch = "header_checksum_mismatch"
    case invalidHeader = "invalid_header"
    case damagedTable = "damaged_table"
    case damagedChunk = "damaged_chunk"

    /// What the user can do about it.
    public var hint: String {
        switch self {
        case .inputMissing: return "check the path"
        case .notFileOrDirectory: return "give a .safetensors file or a checkpoint directory"
        case .unreadable: return "check the path and its permissions"
        case .notSafetensors: return "compress takes safetensors files: fix or fetch the file again"
        case .alreadyCompressed: return "restore it with moetool decompress, or compress the original checkpoint"
        case .nothingToCompress: return "point at a checkpoint directory that holds .safetensors files"
        case .notCompressed: return "decompress takes moetool compress output (*.safetensors.mz files or their directory)"
        case .outputConflict: return "choose an output apart from the input (not it, not inside it, not holding it)"
        case .outputExists: return "moetool never overwrites a file: choose a new output, or --resume a killed run into the same one"
        case .safetensorsName: return "end the output's name in .safetensors.mz"
        case .outputInUse: return "a run killed there is finished by --resume with the same input and options"
        case .cannotCreateDirectory: return "check that the output's parent exists and is writable"
        case .truncated: return "the file is incomplete: copy it again, or compress the original again"
        case .unsupportedVersion: return "restore it with the moetool version that wrote it"
        case .headerChecksumMismatch, .invalidHeader, .damagedTable:
            return "the file is damaged: copy it again, or compress the original again"
        case .damagedChunk: return "the chunk's bytes are damaged: copy the file again, or compress the original again"
        }
    }
}

/// One failure of a compression run: which file, which tensor and chunk if one is at fault, which case,
/// and the details.
public struct CompressionError: Error, Sendable, CustomStringConvertible {
    public let failure: CompressionFailure
    public let file: String
    /// The tensor at fault, for a program; `message` names it for a person.
    public let tensor: String?
    /// The chunk's index in the shard's table, for a program; `message` names it for a person.
    public let chunk: Int?
    /// The details, naming the chunk and tensor when one is at fault; the file is in `description`.
    public let message: String

    public init(_ failure: CompressionFailure, file: String, tensor: String? = nil, chunk: Int? = nil, _ message: String) {
        self.failure = failure
        self.file = file
        self.tensor = tensor
        self.chunk = chunk
        self.message = message
    }

    public var id: String { failure.rawValue }
    public var hint: String { failure.hint }

    /// `file: message [id]; hint`, the file name escaped for a terminal (messages escape the names they quote).
    public var description: String { "\(escapeForDisplay(file)): \(message) [\(id)]; \(hint)" }
}
