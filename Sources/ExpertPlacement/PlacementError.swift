/// Why a plan, or a file it reads or writes, was refused: the rule broken (its raw value is a
/// stable id, shown in messages), the file at fault and where in it, the details, and through
/// the rule what to do. The one error type of expert placement and its file layer, as `Problem`
/// is for the safetensors format.
public struct PlacementError: Error, Sendable, Equatable, CustomStringConvertible {
    public let rule: Rule
    /// The file at fault, with the line for CSV rows (`loads.csv:12`); nil for parameters and
    /// for loads handed to the planner directly.
    public let file: String?
    /// What is wrong, naming the place in the file (`layers[3][17]`) where there is one.
    public let message: String

    public init(_ rule: Rule, file: String? = nil, _ message: String) {
        self.rule = rule
        self.file = file
        self.message = message
    }

    /// `file: message [id]; hint`, as `Problem` prints.
    public var description: String {
        (file.map { "\($0): " } ?? "") + "\(message) [\(rule.rawValue)]; \(rule.hint)"
    }

    /// Every way a plan or its inputs can be refused.
    public enum Rule: String, Sendable, CaseIterable {
        // Files, whatever they hold.
        case unreadable = "unreadable"
        case unwritable = "unwritable"
        case fileTooLarge = "file_too_large"
        case zstdInvalid = "zstd_invalid"
        case unsupportedFormat = "unsupported_format"
        case invalidTorchFile = "invalid_torch_file"
        case invalidJSON = "invalid_json"
        case duplicateMember = "duplicate_member"
        // A load profile.
        case noLoads = "no_loads"
        case invalidLoad = "invalid_load"
        case layersDiffer = "layers_differ"
        case invalidCSVRow = "invalid_csv_row"
        case profileTooLarge = "profile_too_large"
        case layerTotalTooLarge = "layer_total_too_large"
        case expertCountMismatch = "expert_count_mismatch"
        case notAnSGLangDump = "not_an_sglang_dump"
        case ranksDiffer = "ranks_differ"
        case windowsDiffer = "windows_differ"
        // A deployed placement to re-plan from.
        case notAPlacement = "not_a_placement"
        case otherDeployment = "other_deployment"
        case invalidSlot = "invalid_slot"
        case expertWithoutSlot = "expert_without_slot"
        // The deployment and the plan.
        case invalidTopology = "invalid_topology"
        case hierarchicalImpossible = "hierarchical_impossible"
        case invalidRouting = "invalid_routing"
        case planTooLarge = "plan_too_large"
        // A placement for a serving engine.
        case sglangIncompatible = "sglang_incompatible"

        /// What the user can do about it, in the planner's terms.
        public var hint: String {
            switch self {
            case .unreadable: return "check the path and its permissions"
            case .unwritable: return "check that the directory exists, is writable and has room; nothing was written"
            case .fileTooLarge: return "a profile or a placement is read whole, at most \(LoadProfile.maxBytes) bytes once decompressed: sum passes into one profile"
            case .zstdInvalid: return "the compressed file is damaged or cut short: compress or copy it again"
            case .unsupportedFormat:
                return "a profile is JSON, CSV or SGLang's torch.save dump (.pt), optionally zstd-compressed: convert the file to one of them"
            case .invalidTorchFile:
                return "moetool reads what torch.load(weights_only=True) reads (dicts, lists, numbers, strings, tensors) and never runs code from a file: give the .pt SGLang's recorder wrote, unchanged"
            case .invalidJSON: return "the file is not valid JSON: write it again"
            case .duplicateMember: return "a JSON object names each member once: remove the repeated one"
            case .noLoads:
                return "a profile is {\"layers\": [[load per expert], ...]}, SGLang's {\"logical_count\": [pass][layer][expert]}, or CSV rows layer,expert,load"
            case .invalidLoad: return "loads count tokens: finite numbers, 0 or more"
            case .layersDiffer: return "every layer needs one load per expert, and layers are numbered 0, 1, 2, ... without gaps"
            case .invalidCSVRow: return "a CSV row is layer,expert,load, the indices counted from 0"
            case .profileTooLarge: return "plan fewer layers or experts at a time"
            case .layerTotalTooLarge: return "divide every load by one factor (only their ratios matter)"
            case .expertCountMismatch: return "the profile must come from the model whose config is given"
            case .notAnSGLangDump:
                return "record with --expert-distribution-recorder-mode stat (or stat_approx): its dump holds logical_count [passes][num_hidden_layers][experts]"
            case .ranksDiffer: return "give every rank's dumps of the same windows: as many files per rank, in the same order, of the same shape"
            case .windowsDiffer: return "the windows of a series are profiles of one model: the same layers and experts per layer"
            case .notAPlacement: return "give a placement moetool wrote (phy2log) or SGLang's file (physical_to_logical_map)"
            case .otherDeployment: return "re-plan from a placement of the same deployment, or plan without a previous placement"
            case .invalidSlot: return "a slot holds the index of a logical expert of the layer"
            case .expertWithoutSlot: return "every expert needs a slot: the file is not a whole placement"
            case .invalidTopology:
                return "change the deployment: slots at least the experts and a multiple of the GPUs, GPUs a multiple of the nodes, experts a multiple of the groups"
            case .hierarchicalImpossible: return "use the global policy, or nodes that divide the expert groups"
            case .invalidRouting: return "a token picks 1 to the experts per layer, in 1 to the expert groups"
            case .planTooLarge: return "plan fewer layers at a time, or use fewer slots"
            case .sglangIncompatible:
                return "SGLang's --init-expert-location takes a .json file with a row for each of the config's num_hidden_layers and experts + --ep-num-redundant-experts slots per row"
            }
        }
    }
}
