import ExpertPlacement
import SafetensorsFormat
import StrictJSON

/// The drift table: each window's imbalance (max / mean GPU load) under the one placement planned
/// for all windows, under EPLB's placement of the mean load, and under a placement re-planned for
/// that window alone; with a previous placement, the slots each re-plan changes.
public struct DriftReport: Sendable {
    public let plan: DriftPlan
    /// [window]: the profile each window came from.
    public let names: [String]

    public static let schema = "moetool.drift/1"

    public init(plan: DriftPlan, names: [String]) {
        self.plan = plan
        self.names = names
    }

    /// The three placements, as the table and the JSON name them.
    public enum Column: CaseIterable, Sendable {
        case robust, eplbMean, replanned

        public var name: String { self == .robust ? "robust" : self == .eplbMean ? "eplb-mean" : "re-planned" }
        public var key: String { self == .robust ? "robust" : self == .eplbMean ? "eplb_mean" : "replanned" }
        public var path: KeyPath<WindowImbalance, [Double]> & Sendable {
            self == .robust ? \.robust : self == .eplbMean ? \.eplbMean : \.replanned
        }
    }
    public static var columns: [Column] { Column.allCases }

    /// Per column: the worst window and the mean over windows (of each window's mean over
    /// layers), and the objective over windows per layer, averaged over layers.
    public func summary(_ path: KeyPath<WindowImbalance, [Double]>) -> (worstWindow: Double, mean: Double, objective: Double) {
        let perWindow = plan.windows.map { WindowImbalance.mean($0[keyPath: path]) }
        let objective = plan.objectivePerLayer(path)
        return (perWindow.max() ?? 1, WindowImbalance.mean(perWindow), WindowImbalance.mean(objective))
    }

    public func json() -> JSONValue {
        func figures(_ v: [Double]) -> JSONValue {
            var o = JSONObject()
            o.append("mean", PlacementFile.num(WindowImbalance.mean(v)))
            o.append("worst_layer", PlacementFile.num(v.max() ?? 1))
            o.append("layers", .array(v.map(PlacementFile.num)))
            return .object(o)
        }
        var o = JSONObject()
        o.append("schema", .string(Self.schema))
        o.append("robust", .string(plan.objective.description))
        o.append("windows", .array(plan.windows.enumerated().map { w, window in
            var m = JSONObject()
            m.append("window", .number(JSONNumber(w)))
            m.append("profile", .string(names[w]))
            for c in Self.columns { m.append(c.key, figures(window[keyPath: c.path])) }
            m.append("moved_slots", window.moved.map { .number(JSONNumber($0)) } ?? .null)
            return .object(m)
        }))
        var s = JSONObject()
        for c in Self.columns {
            let f = summary(c.path)
            var m = JSONObject()
            m.append("worst_window", PlacementFile.num(f.worstWindow))
            m.append("mean", PlacementFile.num(f.mean))
            m.append("objective", PlacementFile.num(f.objective))
            s.append(c.key, .object(m))
        }
        o.append("summary", .object(s))
        return .object(o)
    }

    public func text() -> String {
        func f(_ v: Double) -> String { PlanReport.fixed(v, 4) }
        let moves = plan.windows.contains { $0.moved != nil }
        var out = "drift: one placement for \(plan.windows.count) windows (--robust \(plan.objective)); imbalance per window, mean over layers\n"
        out += "window" + Self.columns.map { $0.name.leftPadded(12) }.joined() + (moves ? "moved".leftPadded(7) : "") + "  profile\n"
        for (w, window) in plan.windows.enumerated() {
            out += String(w).leftPadded(6) + Self.columns.map { f(WindowImbalance.mean(window[keyPath: $0.path])).leftPadded(12) }.joined()
            if moves { out += (window.moved.map(String.init) ?? "-").leftPadded(7) }
            out += "  \(escapeForDisplay(names[w]))\n"
        }
        let summaries = Self.columns.map { summary($0.path) }
        out += "worst " + summaries.map { f($0.worstWindow).leftPadded(12) }.joined() + "\n"
        out += "mean  " + summaries.map { f($0.mean).leftPadded(12) }.joined() + "\n"
        out += "\(plan.objective) over windows, per layer, mean over layers:" + "\n"
        out += "      " + summaries.map { f($0.objective).leftPadded(12) }.joined() + "\n"
        return out
    }
}
