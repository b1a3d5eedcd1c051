import ExpertPlacement
import SafetensorsFormat
import Support

/// The HTML report of a plan (`--report plan.html`): one self-contained page, readable offline in
/// any browser. Its charts are inline SVG drawn here rather than by a charting library: bars,
/// lines and a grid of cells are all this report needs, a few dozen lines each; nothing is
/// fetched, vendored or licensed, and the output is plain text the tests can read. The page's
/// one script only marks it rendered (`data-rendered` on `<body>`: the number of layer
/// sections), for the browser test.
///
/// Per layer: GPU loads before and after (bars; the lower bound a dashed line), the placement's
/// figures, and in folded sections each GPU's replicas with its node and the slots moved from
/// `--previous`. Over all layers: the summary next to EPLB's, a layers x experts heat map of load
/// and, with several windows, the drift table and its chart. Sizes: 61 layers x 256 experts on 32
/// GPUs make a page of about 1 MB (see Docs/plan-experts.md).
public struct PlanHTML {
    public let report: PlanReport
    /// [layer][expert]: the loads the plan's figures are measured on (the mean over windows for a series).
    public let loads: [[Double]]
    /// [layer]: the deployed placement planned from, if any: the "before" of the bars.
    public let previous: [LayerPlacement]?

    public init(report: PlanReport, loads: [[Double]], previous: [LayerPlacement]?) {
        self.report = report
        self.loads = loads
        self.previous = previous
    }

    /// The colour that marks each layer section (its left border), and that nothing else on the
    /// page uses: the browser test counts the layers in a screenshot by it.
    public static let layerMarker = (red: 0x7B, green: 0x2C, blue: 0xBF)
    /// Heat map colours, lightest first (load / the layer's mean load below `heatSteps[i]`).
    static let heatColours = ["#fff7e0", "#ffe8a8", "#fed070", "#fdae4b", "#f9823a", "#ec5530", "#cf2a25", "#a50f15", "#67000d"]
    static let heatSteps = [0.25, 0.5, 0.8, 1.25, 2, 3, 5, 8]

    var plan: Plan { report.plan }
    var topology: Topology { plan.request.topology }

    public func render() -> String {
        var out = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>moetool plan-experts: \(Self.escape(report.profile))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; color: #222; margin: 0; padding: 0 24px 24px; }
            h1 { font-size: 20px; margin: 16px 0 4px; }
            h2 { font-size: 16px; margin: 0 0 4px; }
            table { border-collapse: collapse; margin: 6px 0; }
            td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
            th { background: #f3f3f3; }
            td.l, th.l { text-align: left; }
            section.layer { border-left: 10px solid rgb(\(Self.layerMarker.red), \(Self.layerMarker.green), \(Self.layerMarker.blue)); padding: 6px 0 6px 12px; margin: 16px 0; }
            .note { color: #555; }
            svg text { font: 11px system-ui, sans-serif; fill: #333; }
            details { margin: 4px 0; }
            </style>
            </head>
            <body>

            """
        out += header()
        if let drift = report.drift { out += driftSection(drift) }
        out += heatMap()
        out += "<h1>Layers</h1>\n"
        for l in plan.layers.indices { out += layerSection(l) }
        out += """
            <script>
            document.body.setAttribute("data-rendered", String(document.querySelectorAll("section.layer").length));
            </script>
            </body>
            </html>

            """
        return out
    }

    /// Text for HTML text and attribute values.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default:
                // Control characters are not allowed in HTML text: shown as escapes, as in the terminal.
                if c.value < 0x20 && c != "\n" && c != "\t" || c.value == 0x7F { out += "\\u{\(String(c.value, radix: 16))}" } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }

    static func f(_ v: Double, _ digits: Int = 4) -> String { PlanReport.fixed(v, digits) }

    func header() -> String {
        let t = topology
        var out = "<h1>moetool plan-experts</h1>\n<p>"
        if let drift = report.drift {
            out += "Profiles: \(drift.names.map { "<code>\(Self.escape($0))</code>" }.joined(separator: ", ")) (\(drift.names.count) windows; figures below are for their mean load)"
        } else {
            out += "Profile: <code>\(Self.escape(report.profile))</code>"
        }
        out += ". \(counted(plan.layers.count, "layer")) x \(counted(t.experts, "expert")) &rarr; \(counted(t.slots, "slot")) on \(counted(t.gpus, "GPU")) (\(counted(t.nodes, "node")) x \(t.gpusPerNode)), \(counted(t.groups, "group")); algorithm \(plan.request.algorithm.rawValue).</p>\n"
        var rows: [(String, String, String?)] = []
        let b = report.baseline
        rows.append(("imbalance (max/mean GPU), mean", Self.f(plan.meanImbalance), b.map { Self.f($0.meanImbalance) }))
        rows.append(("imbalance, worst layer", Self.f(plan.worstImbalance), b.map { Self.f($0.worstImbalance) }))
        rows.append(("node imbalance, mean", Self.f(plan.meanNodeImbalance), b.map { Self.f($0.meanNodeImbalance) }))
        rows.append(("gap to lower bound, mean", Self.f(plan.meanGap * 100, 2) + "%", b.map { Self.f($0.meanGap * 100, 2) + "%" }))
        rows.append(("co-located duplicate replicas", "\(plan.duplicates)", b.map { "\($0.duplicates)" }))
        if let n = plan.meanNodesPerToken {
            rows.append(("nodes per token (estimate)", Self.f(n, 3), b.flatMap { $0.meanNodesPerToken.map { Self.f($0, 3) } }))
        }
        if let moved = plan.moved { rows.append(("slots changed from --previous", "\(moved)", nil)) }
        out += "<table id=\"summary\">\n<tr><th class=\"l\"></th><th>\(plan.request.algorithm.rawValue)</th>\(b != nil ? "<th>eplb</th>" : "")</tr>\n"
        for (name, ours, theirs) in rows {
            out += "<tr><td class=\"l\">\(name)</td><td>\(ours)</td>\(theirs.map { "<td>\($0)</td>" } ?? "")</tr>\n"
        }
        out += "</table>\n"
        return out
    }

    // MARK: Drift

    func driftSection(_ drift: DriftReport) -> String {
        let windows = drift.plan.windows
        var out = "<h1>Drift</h1>\n<p>One placement for \(windows.count) windows (<code>--robust \(drift.plan.objective)</code>): each window's imbalance, mean over layers, under it, under EPLB's placement of the mean load, and under a placement re-planned for that window alone.</p>\n"
        let colours = ["#1f5fbf", "#888888", "#2a9d4a"]
        // Lines: imbalance per window.
        let series: [[Double]] = DriftReport.columns.map { c in windows.map { WindowImbalance.mean($0[keyPath: c.path]) } }
        let all: [Double] = series.flatMap { $0 }
        let top = (all.max() ?? 1) * 1.02
        let bottom = Swift.min(1, all.min() ?? 1)
        let (w, h, left, pad) = (640.0, 180.0, 48.0, 16.0)
        func x(_ i: Int) -> Double {
            let fraction = windows.count == 1 ? 0.5 : Double(i) / Double(windows.count - 1)
            return left + (w - left - pad) * fraction
        }
        func y(_ v: Double) -> Double {
            let fraction: Double = (v - bottom) / Swift.max(top - bottom, 1e-9)
            return pad + (h - 2 * pad) * (1 - fraction)
        }
        out += "<svg id=\"drift-chart\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" role=\"img\" aria-label=\"imbalance per window\">\n"
        out += "<line x1=\"\(left)\" y1=\"\(y(bottom))\" x2=\"\(w - pad)\" y2=\"\(y(bottom))\" stroke=\"#999\"/>\n"
        out += "<text x=\"4\" y=\"\(y(top) + 4)\">\(Self.f(top, 3))</text><text x=\"4\" y=\"\(y(bottom))\">\(Self.f(bottom, 3))</text>\n"
        for (k, values) in series.enumerated() {
            let points = values.enumerated().map { "\(Self.f(x($0.offset), 1)),\(Self.f(y($0.element), 1))" }.joined(separator: " ")
            out += "<polyline fill=\"none\" stroke=\"\(colours[k])\" stroke-width=\"2\" points=\"\(points)\"/>\n"
            out += "<text x=\"\(left + 8 + Double(k) * 120)\" y=\"\(h - 2)\" style=\"fill:\(colours[k])\">\(DriftReport.columns[k].name)</text>\n"
        }
        out += "</svg>\n"
        let moves = windows.contains { $0.moved != nil }
        out += "<table id=\"drift\">\n<tr><th>window</th>" + DriftReport.columns.map { "<th>\($0.name)</th>" }.joined()
        out += (moves ? "<th>moved</th>" : "") + "<th class=\"l\">profile</th></tr>\n"
        for (i, window) in windows.enumerated() {
            out += "<tr><td>\(i)</td>" + DriftReport.columns.map { "<td>\(Self.f(WindowImbalance.mean(window[keyPath: $0.path])))</td>" }.joined()
            if moves { out += "<td>\(window.moved.map(String.init) ?? "-")</td>" }
            out += "<td class=\"l\"><code>\(Self.escape(drift.names[i]))</code></td></tr>\n"
        }
        let summaries = DriftReport.columns.map { drift.summary($0.path) }
        let tail = (moves ? "<td></td>" : "") + "<td></td></tr>\n"
        out += "<tr><th>worst</th>" + summaries.map { "<td>\(Self.f($0.worstWindow))</td>" }.joined() + tail
        out += "<tr><th>mean</th>" + summaries.map { "<td>\(Self.f($0.mean))</td>" }.joined() + tail
        out += "<tr><th>\(drift.plan.objective) per layer</th>" + summaries.map { "<td>\(Self.f($0.objective))</td>" }.joined() + tail
        out += "</table>\n"
        return out
    }

    // MARK: Heat map

    /// Layers x experts, one cell per load, coloured by its ratio to the layer's mean load. One
    /// path per colour (runs of equal colour in a row merged), not a rect per cell: 61 x 256
    /// cells take about 150 KB, not 800.
    func heatMap() -> String {
        let experts = topology.experts
        let cell = Swift.max(1, Swift.min(8, 1024 / Swift.max(experts, 1)))
        let rowHeight = Swift.max(2, Swift.min(12, 480 / Swift.max(loads.count, 1)))
        var paths = [String](repeating: "", count: Self.heatColours.count)
        for (l, layer) in loads.enumerated() {
            let mean = layer.reduce(0, +) / Double(Swift.max(layer.count, 1))
            var e = 0
            while e < layer.count {
                let c = Self.heatClass(mean > 0 ? layer[e] / mean : 0)
                var end = e + 1
                while end < layer.count && Self.heatClass(mean > 0 ? layer[end] / mean : 0) == c { end += 1 }
                paths[c] += "M\(e * cell) \(l * rowHeight)h\((end - e) * cell)v\(rowHeight)h-\((end - e) * cell)z"
                e = end
            }
        }
        let width = experts * cell, height = loads.count * rowHeight
        var out = "<h1>Load per expert</h1>\n<p class=\"note\">Rows are layers (layer 0 at the top), columns experts; colour: load over the layer's mean load.</p>\n"
        out += "<svg id=\"heatmap\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"load per layer and expert\">\n"
        for (c, d) in paths.enumerated() where !d.isEmpty { out += "<path fill=\"\(Self.heatColours[c])\" d=\"\(d)\"/>\n" }
        out += "</svg>\n<p class=\"note\">"
        for (c, colour) in Self.heatColours.enumerated() {
            let range = c == 0 ? "&lt; \(Self.heatSteps[0])" : c == Self.heatSteps.count ? "&ge; \(Self.heatSteps[c - 1])" : "\(Self.heatSteps[c - 1])&ndash;\(Self.heatSteps[c])"
            out += "<span style=\"display:inline-block;width:12px;height:12px;background:\(colour);border:1px solid #ccc\"></span> \(range)x &nbsp;"
        }
        out += "</p>\n"
        return out
    }

    static func heatClass(_ ratio: Double) -> Int { heatSteps.firstIndex { ratio < $0 } ?? heatSteps.count }

    // MARK: Layers

    func layerSection(_ l: Int) -> String {
        let t = topology
        let layer = plan.layers[l]
        let m = layer.metrics
        let before = previous.map { PlacementMetrics.gpuLoads($0[l], loads: loads[l], topology: t) }
            ?? PlacementMetrics.contiguousGPULoads(loads[l], gpus: t.gpus)
        let beforeName = previous == nil ? "experts in order, no replica" : "--previous"
        let beforeMax = before.max() ?? 0
        let beforeImbalance = m.meanGPULoad > 0 ? beforeMax / m.meanGPULoad : 1
        var out = "<section class=\"layer\" id=\"layer-\(l)\" data-layer=\"\(l)\">\n<h2>Layer \(l)</h2>\n"
        out += "<p>policy \(layer.policy.rawValue); imbalance \(Self.f(m.imbalance)) (before: \(Self.f(beforeImbalance)), \(beforeName)); node imbalance \(Self.f(m.nodeImbalance)); lower bound \(Self.f(m.lowerBound, 1)), gap \(Self.f(m.gap * 100, 2))%"
        if let n = m.nodesPerToken { out += "; nodes per token \(Self.f(n, 3))" }
        if let moved = layer.moved { out += "; \(counted(moved, "slot")) changed from --previous" }
        out += "</p>\n"
        out += bars(before: before, after: m.gpuLoads, lowerBound: m.lowerBound, beforeName: beforeName)
        out += replicaTable(l)
        if let previous { out += movesTable(l, from: previous[l]) }
        out += "</section>\n"
        return out
    }

    /// GPU loads as bars, before (grey) and after (blue) side by side, the lower bound dashed.
    func bars(before: [Double], after: [Double], lowerBound: Double, beforeName: String) -> String {
        let t = topology
        let (w, h, left, pad) = (720.0, 150.0, 56.0, 14.0)
        let top = Swift.max(before.max() ?? 0, after.max() ?? 0, lowerBound, 1e-300) * 1.05
        let slot = (w - left) / Double(t.gpus)
        let bar = Swift.max(0.5, slot * 0.4)
        func y(_ v: Double) -> Double { pad + (h - 2 * pad) * (1 - v / top) }
        var out = "<svg class=\"bars\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" role=\"img\" aria-label=\"GPU loads before and after\">\n"
        out += "<text x=\"2\" y=\"\(Self.f(y(top) + 8, 1))\">\(Self.f(top, 0))</text><text x=\"2\" y=\"\(Self.f(y(0), 1))\">0</text>\n"
        for g in 0..<t.gpus {
            let x = left + Double(g) * slot
            out += "<g><title>GPU \(g) (node \(t.node(ofGPU: g))): before \(Self.f(before[g], 1)), after \(Self.f(after[g], 1))</title>"
            out += "<rect x=\"\(Self.f(x, 2))\" y=\"\(Self.f(y(before[g]), 2))\" width=\"\(Self.f(bar, 2))\" height=\"\(Self.f(y(0) - y(before[g]), 2))\" fill=\"#b8b8b8\"/>"
            out += "<rect x=\"\(Self.f(x + bar, 2))\" y=\"\(Self.f(y(after[g]), 2))\" width=\"\(Self.f(bar, 2))\" height=\"\(Self.f(y(0) - y(after[g]), 2))\" fill=\"#1f5fbf\"/></g>\n"
        }
        out += "<line x1=\"\(left)\" y1=\"\(Self.f(y(lowerBound), 2))\" x2=\"\(w)\" y2=\"\(Self.f(y(lowerBound), 2))\" stroke=\"#d62728\" stroke-dasharray=\"5 3\"/>\n"
        out += "<line x1=\"\(left)\" y1=\"\(Self.f(y(0), 2))\" x2=\"\(w)\" y2=\"\(Self.f(y(0), 2))\" stroke=\"#999\"/>\n"
        out += "</svg>\n<p class=\"note\">grey: before (\(Self.escape(beforeName))), blue: after, dashed red: lower bound; GPUs left to right.</p>\n"
        return out
    }

    /// Each GPU's replicas (an expert with several replicas marked with their count), its node and load.
    func replicaTable(_ l: Int) -> String {
        let t = topology
        let p = plan.layers[l].placement
        let g = plan.layers[l].metrics.gpuLoads
        var out = "<details><summary>Replicas per GPU</summary>\n<table class=\"replicas\">\n<tr><th>GPU</th><th>node</th><th>load</th><th class=\"l\">experts (&times;n: one of n replicas)</th></tr>\n"
        for gpu in 0..<t.gpus {
            let experts = p.phy2log[(gpu * t.slotsPerGPU)..<((gpu + 1) * t.slotsPerGPU)].map { e in p.logcnt[e] > 1 ? "\(e)&times;\(p.logcnt[e])" : "\(e)" }
            out += "<tr><td>\(gpu)</td><td>\(t.node(ofGPU: gpu))</td><td>\(Self.f(g[gpu], 1))</td><td class=\"l\">\(experts.joined(separator: ", "))</td></tr>\n"
        }
        return out + "</table>\n</details>\n"
    }

    /// The slots whose expert changed from the deployed placement.
    func movesTable(_ l: Int, from previous: LayerPlacement) -> String {
        let t = topology
        let now = plan.layers[l].placement.phy2log
        let changed = now.indices.filter { now[$0] != previous.phy2log[$0] }
        var out = "<details><summary>\(counted(changed.count, "slot")) changed from --previous</summary>\n"
        guard !changed.isEmpty else { return out + "</details>\n" }
        out += "<table class=\"moves\">\n<tr><th>slot</th><th>GPU</th><th>node</th><th>was</th><th>now</th></tr>\n"
        for s in changed {
            let gpu = t.gpu(ofSlot: s)
            out += "<tr><td>\(s)</td><td>\(gpu)</td><td>\(t.node(ofGPU: gpu))</td><td>\(previous.phy2log[s])</td><td>\(now[s])</td></tr>\n"
        }
        return out + "</table>\n</details>\n"
    }
}
