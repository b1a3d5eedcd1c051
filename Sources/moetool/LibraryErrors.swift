import Conversion
import ExpertPlacement
import ForwardPass
import SafetensorsFormat
import WeightReading

/// Each library's closed error becomes a CommandError at the command's boundary, keeping its stable id.
extension CommandError {
    init(_ error: WeightReadError) {
        self.init(error.id, "\(escapeForDisplay(error.file)): tensor \"\(escapeForDisplay(error.tensor))\": \(error.message)",
                  hint: error.hint.isEmpty ? nil : error.hint)
    }

    init(_ error: ConversionError) {
        self.init(error.id, error.description)
    }

    init(_ error: ForwardError) {
        self.init(error.id, error.message, hint: error.hint)
    }

    /// As placement prints its errors: `file: message [id]; hint`.
    init(_ error: PlacementError) {
        self.init(error.rule.rawValue, (error.file.map { escapeForDisplay($0) + ": " } ?? "") + "\(error.message) [\(error.rule.rawValue)]",
                  hint: error.rule.hint)
    }
}
