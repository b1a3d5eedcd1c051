import ExpertPlacement

extension LoadSeries {
    /// The profiles named on the command line as a series: each file a window, in the order
    /// given; or, with `sum`, all of them added into one window (one profile per rank, or per
    /// recorder, of the same period). The one place where files become windows.
    public static func read(paths: [String], sum: Bool, expectedExperts: Int? = nil) throws(PlacementError) -> LoadSeries {
        var profiles: [LoadProfile] = []
        for path in paths { profiles.append(try LoadProfile.read(path: path, expectedExperts: expectedExperts)) }
        guard sum, profiles.count > 1 else { return try LoadSeries(profiles, names: paths) }
        var total = profiles[0].loads
        for (p, path) in zip(profiles, paths).dropFirst() {
            guard p.layers == profiles[0].layers, p.experts == profiles[0].experts else {
                throw PlacementError(.windowsDiffer, file: path, "\(p.layers) x \(p.experts) loads, but \(paths[0]) has \(profiles[0].layers) x \(profiles[0].experts): files summed must have the same shape")
            }
            for i in total.indices { for j in total[i].indices { total[i][j] += p.loads[i][j] } }
        }
        let name = paths.joined(separator: " + ")
        try LoadProfile.check(total, file: name)
        return try LoadSeries([LoadProfile(loads: total)], names: [name])
    }
}
