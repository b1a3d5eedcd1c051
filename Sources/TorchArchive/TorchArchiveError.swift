/// Why a torch.save file was refused: the rule broken (its raw value is a stable id), the file,
/// what is wrong and where (`data.pkl` at byte 39, `data/0`), and through the rule what to do.
public struct TorchArchiveError: Error, Sendable, Equatable, CustomStringConvertible {
    public let rule: Rule
    public let file: String
    public let message: String

    public init(_ rule: Rule, file: String, _ message: String) {
        self.rule = rule
        self.file = file
        self.message = message
    }

    /// `file: message [id]; hint`, as moetool's other readers print.
    public var description: String { "\(file): \(message) [\(rule.rawValue)]; \(rule.hint)" }

    public enum Rule: String, Sendable, CaseIterable {
        /// The zip container: its directory, local headers, sizes and checksums.
        case zipInvalid = "zip_invalid"
        /// A zip member torch does not write: compressed, encrypted, split.
        case zipUnsupported = "zip_unsupported"
        /// The members torch.save writes: one top directory holding data.pkl and data/<key>.
        case archiveLayout = "archive_layout"
        /// A pickle stream that is cut short or uses an opcode wrongly (stack, mark, memo).
        case pickleInvalid = "pickle_invalid"
        /// An opcode torch.load(weights_only=True) does not run.
        case opcodeRefused = "pickle_opcode_refused"
        /// A global (a class or function to call) that torch.load(weights_only=True) does not allow.
        case globalRefused = "pickle_global_refused"
        /// A tensor whose shape, strides or offset reach outside its storage, or a storage of the wrong size.
        case tensorInvalid = "tensor_invalid"
        /// More members, memo entries, nesting, stack or elements than a reader of load files needs.
        case tooLarge = "torch_file_too_large"

        public var hint: String {
            switch self {
            case .zipInvalid: return "the file is damaged or cut short: copy or write it again"
            case .zipUnsupported: return "write the file with torch.save, which stores its members uncompressed"
            case .archiveLayout: return "give a file written by torch.save (a zip holding <name>/data.pkl and <name>/data/<key>)"
            case .pickleInvalid: return "the pickle stream is damaged: write the file again with torch.save"
            case .opcodeRefused, .globalRefused:
                return "moetool reads only what torch.load(weights_only=True) reads (dicts, lists, tuples, strings, numbers, tensors) and never runs code from a file"
            case .tensorInvalid: return "the tensor does not fit its storage: the file is damaged, write it again"
            case .tooLarge: return "a load file is small: this file is not one, or save fewer passes into it"
            }
        }
    }
}
