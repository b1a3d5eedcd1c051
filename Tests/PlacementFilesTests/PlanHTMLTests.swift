import ExpertPlacement
import FixtureSupport
import Foundation
import PlacementFiles
import Support
import Testing

/// Reports of the committed drift series (Fixtures/profiles/drift: 4 windows of 4 layers x 64 experts).
enum HTMLReportFixture {
    static let windows = (0..<4).map { Fixtures.path("profiles/drift/w0\($0).json") }

    static func driftReport(previous: [LayerPlacement]? = nil) throws -> PlanHTML {
        let series = try LoadSeries.read(paths: windows, sum: false).series
        let t = try Topology(experts: 64, slots: 80, gpus: 16, nodes: 2, groups: 8)
        let request = PlanRequest(topology: t, policy: .global, routing: Routing(topk: 4, topkGroup: 2), previous: previous)
        let drift = try DriftPlanner.plan(series, request, objective: .max)
        var report = PlanReport(plan: drift.robust, baseline: drift.eplbMean, bytesPerExpert: nil, seconds: 0,
                                profile: series.names[0], output: nil)
        report.drift = DriftReport(plan: drift, names: series.names)
        return PlanHTML(report: report, loads: series.mean.loads, previous: previous)
    }
}

@Suite struct PlanHTMLTests {
    func count(_ s: String, _ of: String) -> Int { s.components(separatedBy: of).count - 1 }

    @Test func sectionsTablesAndHeatMap() throws {
        let html = try HTMLReportFixture.driftReport()
        let page = html.render()
        #expect(page.hasPrefix("<!DOCTYPE html>"))
        #expect(count(page, "<section class=\"layer\"") == 4)
        for l in 0..<4 { #expect(page.contains("<section class=\"layer\" id=\"layer-\(l)\" data-layer=\"\(l)\">")) }
        // Self-contained: nothing fetched.
        for external in ["src=", "href=", "http:", "https:", "@import", "url("] { #expect(!page.contains(external), "\(external)") }
        // The drift table: a row per window, each naming its profile.
        #expect(count(page, "<td class=\"l\"><code>") == 4)
        for w in HTMLReportFixture.windows { #expect(page.contains("<code>\(w)</code></td></tr>")) }
        // A bar pair per GPU per layer.
        #expect(count(page, "<g><title>GPU ") == 4 * 16)
        // The heat map's cells cover every layer x expert exactly once: its runs' widths add up.
        let heat = try #require(page.components(separatedBy: "<svg id=\"heatmap\"").last?.components(separatedBy: "</svg>").first)
        let widths = heat.components(separatedBy: "h").dropFirst().compactMap { Int($0.prefix { $0.isNumber }) }
        #expect(widths.reduce(0, +) == 4 * 64 * 8)  // 8 pixels per expert at 64 experts
        // Replica tables: every slot listed once per layer (GPUs x slots per GPU entries).
        let tables = page.components(separatedBy: "<table class=\"replicas\">").dropFirst()
        #expect(tables.count == 4)
        for t in tables {
            let rows = t.components(separatedBy: "</table>")[0].components(separatedBy: "<td class=\"l\">").dropFirst()
            #expect(rows.count == 16)
            #expect(rows.map { $0.components(separatedBy: "</td>")[0].components(separatedBy: ", ").count }.reduce(0, +) == 80)
        }
        #expect(!page.contains("changed from --previous"))
    }

    /// With a deployed placement: a row per changed slot, as many as the plan counts.
    @Test func movesFromPrevious() throws {
        let t = try Topology(experts: 64, slots: 80, gpus: 16, nodes: 2, groups: 8)
        let first = try LoadProfile.read(path: HTMLReportFixture.windows[0])
        let deployed = first.loads.map { EPLBBaseline.place($0, topology: t, policy: .global) }
        let html = try HTMLReportFixture.driftReport(previous: deployed)
        let page = html.render()
        let moved = try #require(html.report.plan.moved)
        #expect(moved > 0)
        let tables = page.components(separatedBy: "<table class=\"moves\">").dropFirst()
        let rows = tables.map { $0.components(separatedBy: "</table>")[0].components(separatedBy: "<tr><td>").count - 1 }
        #expect(rows.reduce(0, +) == moved)
        #expect(page.contains("<th>moved</th>"))
    }

    @Test func textIsEscaped() throws {
        #expect(PlanHTML.escape("<a href=\"x\">&'</a>") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;")
        #expect(PlanHTML.escape("a\u{1b}[2Jb") == "a\\u{1b}[2Jb")
        let html = try HTMLReportFixture.driftReport()
        var report = html.report
        report = PlanReport(plan: report.plan, baseline: report.baseline, bytesPerExpert: nil, seconds: 0,
                            profile: "<script>alert(1)</script>.json", output: nil)
        let page = PlanHTML(report: report, loads: html.loads, previous: nil).render()
        #expect(!page.contains("<script>alert"))
        #expect(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.json"))
        #expect(count(page, "<script>") == 1)
    }

    /// DeepSeek-V3's 61 layers (58 MoE, and 61 to be generous) x 256 experts on 32 GPUs: the page stays near 1 MB.
    @Test func sizeAtDeepSeekScale() throws {
        var rng = SplitMix64(seed: 1)
        let loads = (0..<61).map { _ in (0..<256).map { _ in 1 + 1000 * rng.unit() * rng.unit() } }
        let t = try Topology(experts: 256, slots: 288, gpus: 32, nodes: 4, groups: 8)
        let plan = try PlacementPlanner.plan(loads, PlanRequest(topology: t, policy: .global, algorithm: .eplb))
        let report = PlanReport(plan: plan, baseline: nil, bytesPerExpert: nil, seconds: 0, profile: "p.json", output: nil)
        let page = PlanHTML(report: report, loads: loads, previous: nil).render()
        #expect(count(page, "<section class=\"layer\"") == 61)
        #expect(page.utf8.count < 1_500_000, "\(page.utf8.count) bytes")
    }
}
