import Support

/// Loads observed in successive windows of time (a recorder's windows, or profiles taken hours
/// apart): one profile per window, in order, every one of the same layers x experts.
public struct LoadSeries: Sendable {
    /// [window] of [layer][expert].
    public let windows: [LoadProfile]
    /// The file (or part of one) each window came from, for reports and errors.
    public let names: [String]

    public var layers: Int { windows[0].layers }
    public var experts: Int { windows[0].experts }

    /// The most windows a series may have: every window is planned again on its own for the
    /// report, and the robust search weighs every window per candidate swap.
    public static let maxWindows = 1024

    /// Checks that there is at least one window, not more than `maxWindows`, and that every
    /// window has the first one's layers and experts (the profiles themselves are checked when
    /// they are read).
    public init(_ windows: [LoadProfile], names: [String]) throws(PlacementError) {
        precondition(windows.count == names.count, "a name per window")
        guard let first = windows.first else { throw PlacementError(.noLoads, "no load profile") }
        guard windows.count <= Self.maxWindows else {
            throw PlacementError(.profileTooLarge, "\(windows.count) windows is more than moetool plans (\(Self.maxWindows))")
        }
        for (w, name) in zip(windows, names) where w.layers != first.layers || w.experts != first.experts {
            throw PlacementError(.windowsDiffer, file: name, "\(counted(w.layers, "layer")) x \(counted(w.experts, "expert")), but \(names[0]) has \(first.layers) x \(first.experts)")
        }
        self.windows = windows
        self.names = names
    }

    /// The mean load of each expert over the windows: what a recorder running through all of
    /// them would have counted, divided by the windows (only ratios matter to a plan).
    public var mean: LoadProfile {
        var sum = windows[0].loads
        for w in windows.dropFirst() {
            for i in sum.indices { for j in sum[i].indices { sum[i][j] += w.loads[i][j] } }
        }
        let n = Double(windows.count)
        return LoadProfile(loads: sum.map { $0.map { $0 / n } })
    }
}

/// What a placement that must serve every window is asked to keep low, per layer: the worst
/// window's imbalance, or a quantile of the windows' imbalances (some windows may be let go).
public enum RobustObjective: Sendable, Equatable, CustomStringConvertible {
    /// The worst window.
    case max
    /// The p-th percentile (1...99) by nearest rank: the ceil(p/100 x windows)-th smallest.
    case percentile(Int)

    /// `max` or `p1` ... `p99`.
    public init?(_ text: String) {
        if text == "max" { self = .max; return }
        guard text.first == "p", let p = Int(text.dropFirst()), (1...99).contains(p), text.count <= 3 else { return nil }
        self = .percentile(p)
    }

    public var description: String {
        switch self {
        case .max: return "max"
        case .percentile(let p): return "p\(p)"
        }
    }

    /// The 0-based position, in ascending order, of the value that is the objective of `n` values.
    func rank(_ n: Int) -> Int {
        switch self {
        case .max: return n - 1
        case .percentile(let p): return Swift.max(0, (p * n + 99) / 100 - 1)
        }
    }

    /// The objective of `values` (any order; not empty).
    public func of(_ values: [Double]) -> Double {
        switch self {
        case .max: return values.max() ?? 1
        case .percentile: return values.sorted()[rank(values.count)]
        }
    }
}
