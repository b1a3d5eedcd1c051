import ExpertPlacement

extension LoadSeries {
    /// The profiles named on the command line as a series: the windows `LoadProfile.readWindows` makes of them
    /// (each JSON or CSV file a window, in the order given; SGLang dumps by rank, summed per window), or, with
    /// `sum`, all of them added into one window (one profile per rank, or per recorder, of the same period). The
    /// one place where files become windows. Returns the windows read, too (SGLang's decoder layers).
    public static func read(paths: [String], sum: Bool, layers: DecoderLayers? = nil,
                            expectedExperts: Int? = nil) throws(PlacementError) -> (series: LoadSeries, read: ProfileWindows) {
        let read = try LoadProfile.readWindows(paths: paths, layers: layers, expectedExperts: expectedExperts)
        if sum && read.windows.count > 1 {
            return (try LoadSeries([try read.total()], names: [paths.joined(separator: " + ")]), read)
        }
        // A window per file keeps the file's name; windows of SGLang dumps from several ranks are numbered.
        let names = read.windows.count == paths.count ? paths
            : read.windows.indices.map { "window \($0 + 1) of \(paths.count == 1 ? paths[0] : "\(paths.count) dumps")" }
        return (try LoadSeries(read.windows, names: names), read)
    }
}
