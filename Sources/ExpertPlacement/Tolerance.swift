/// How much better a candidate must be to count as better. Loads per GPU are sums of quotients
/// (an expert's load over its replicas) added in different orders by different candidates, so
/// two placements with the same true peak can differ in the last bits; taking such a difference
/// as a gain would make searches chase rounding (and swap forever between equal placements).
enum Tolerance {
    /// A relative margin far above double rounding (about 1e-16 per operation, a few hundred
    /// operations per sum) and far below any load difference that matters.
    static let relative = 1e-12
    /// An absolute margin, for a peak of 0 (every load 0) to have a threshold below it.
    static let absolute = 1e-300
}

extension Double {
    /// Lower than `other` by more than rounding can explain (see `Tolerance`).
    func isClearlyBelow(_ other: Double) -> Bool { self < other * (1 - Tolerance.relative) }
}
