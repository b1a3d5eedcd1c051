import FixtureSupport
import Foundation
import StrictJSON
import Testing

/// plan-experts with several profiles (windows of time, or parts summed), and --report.
@Suite struct PlanExpertsDriftCommand {
    static let windows = (0..<4).map { Fixtures.path("profiles/drift/w0\($0).json") }
    static let deployment = ["--gpus", "16", "--nodes", "2", "--groups", "8", "--redundant-per-gpu", "1", "--policy", "global"]

    func ints(_ v: JSONValue?) -> [[Int]] { v!.arrayValue!.map { $0.arrayValue!.map { Int($0.doubleValue!) } } }

    /// SGLang's recorder dumps, one per window, are a series like any profiles: one placement for both windows,
    /// written as SGLang's file (a row per decoder layer, the dense one included) and drawn in the report.
    @Test func sglangDumpsAsWindows() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let dumps = ["expert_distribution_recorder_1764756600.5.pt", "expert_distribution_recorder_1764757200.75.pt"]
            .map { Fixtures.path("profiles/sglang/windows/" + $0) }
        let r = try CLI.run(["plan-experts"] + dumps + ["--config", Fixtures.path("models/deepseek_v3-bf16"), "--gpus", "4",
                             "--ep-num-redundant-experts", "4", "--format", "sglang", "-o", dir + "/placement.json",
                             "--report", dir + "/plan.html", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let rows = (o["drift"]?.objectValue?["windows"]?.arrayValue ?? []).compactMap { $0.objectValue?["profile"]?.stringValue }
        #expect(rows == dumps)
        let placement = try JSONParser.parse(Fixtures.readBytes(dir + "/placement.json"))
        let map = ints(placement.objectValue?["physical_to_logical_map"])
        #expect(map.count == 3 && map.allSatisfy { $0.count == 20 })
        let page = String(decoding: Fixtures.readBytes(dir + "/plan.html"), as: UTF8.self)
        #expect(page.contains("<table id=\"drift\">"))
    }

    /// Four windows: the report's drift member has a row per window naming its file, the three
    /// placements' figures, and the robust placement no worse per layer than EPLB on the mean.
    @Test func windowsInTheJSONReport() throws {
        let r = try CLI.run(["plan-experts"] + Self.windows + Self.deployment + ["--robust", "p75", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["schema"]?.stringValue == "moetool.plan-experts/1")
        #expect(o["profile"]?.stringValue == Self.windows[0])
        let drift = try #require(o["drift"]?.objectValue)
        #expect(drift["schema"]?.stringValue == "moetool.drift/1")
        #expect(drift["robust"]?.stringValue == "p75")
        let rowValues = try #require(drift["windows"]?.arrayValue)
        let rows = rowValues.compactMap(\.objectValue)
        #expect(rows.map { $0["profile"]?.stringValue } == Self.windows)
        for row in rows {
            for key in ["robust", "eplb_mean", "replanned"] {
                #expect(row[key]?.objectValue?["layers"]?.arrayValue?.count == 4, "\(key)")
            }
            #expect(row["moved_slots"] == .null)
            let replanned = try #require(row["replanned"]?.objectValue?["mean"]?.doubleValue)
            let robust = try #require(row["robust"]?.objectValue?["mean"]?.doubleValue)
            #expect(replanned <= robust + 1e-6)
        }
        let summary = try #require(drift["summary"]?.objectValue)
        let robust = try #require(summary["robust"]?.objectValue?["objective"]?.doubleValue)
        let eplb = try #require(summary["eplb_mean"]?.objectValue?["objective"]?.doubleValue)
        #expect(robust <= eplb + 1e-6)
        // The baseline is EPLB's placement of the mean load.
        #expect(o["baseline"]?.objectValue?["mean_imbalance"] != nil)
    }

    /// One profile: no drift member, no report member: the single-profile report is unchanged.
    @Test func oneProfileReportUnchanged() throws {
        let r = try CLI.run(["plan-experts", Self.windows[0]] + Self.deployment + ["--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        #expect(o["drift"] == nil && o["report"] == nil)
        #expect(!(try CLI.run(["plan-experts", Self.windows[0]] + Self.deployment)).stdout.contains("\ndrift: one placement"))
    }

    /// --sum-files: the parts of one period added up plan like the summed profile; here one
    /// profile twice, which is its loads doubled: the same placement.
    @Test func sumFilesIsOneProfile() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let w = Self.windows[1]
        let a = try CLI.run(["plan-experts", w, w, "--sum-files"] + Self.deployment + ["-o", dir + "/a.json"])
        let b = try CLI.run(["plan-experts", w] + Self.deployment + ["-o", dir + "/b.json"])
        #expect(a.status == 0 && b.status == 0, "\(a.stderr) \(b.stderr)")
        let pa = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(dir + "/a.json"), as: UTF8.self)).objectValue)
        let pb = try #require(try JSONParser.parse(String(decoding: Fixtures.readBytes(dir + "/b.json"), as: UTF8.self)).objectValue)
        #expect(ints(pa["phy2log"]) == ints(pb["phy2log"]))
        #expect(a.stdout.hasPrefix("\(w) + \(w): 4 layers"))
    }

    /// With --previous: moves per re-plan in the table, the robust placement's own in the summary.
    @Test func movesWithPrevious() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let deployed = dir + "/deployed.json"
        #expect(try CLI.run(["plan-experts", Self.windows[0]] + Self.deployment + ["-o", deployed]).status == 0)
        let r = try CLI.run(["plan-experts"] + Self.windows + Self.deployment + ["--previous", deployed, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONParser.parse(r.stdout).objectValue)
        let rowValues = try #require(o["drift"]?.objectValue?["windows"]?.arrayValue)
        let rows = rowValues.compactMap(\.objectValue)
        #expect(rows.count == 4)
        #expect(rows.allSatisfy { $0["moved_slots"]?.uint64Value != nil })
        // The first window is the one deployed: re-planning it moves nothing.
        #expect(rows[0]["moved_slots"]?.uint64Value == 0)
        #expect(o["metrics"]?.objectValue?["moved_slots"]?.uint64Value != nil)
    }

    @Test func reportWritten() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let report = dir + "/plan.html"
        let r = try CLI.run(["plan-experts"] + Self.windows + Self.deployment + ["--report", report])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasSuffix("wrote \(report)\n"))
        let page = String(decoding: Fixtures.readBytes(report), as: UTF8.self)
        #expect(page.components(separatedBy: "<section class=\"layer\"").count - 1 == 4)
        #expect(page.contains("<table id=\"drift\">"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["plan.html"])
    }

    @Test func refusals() throws {
        // Windows of different shapes.
        let other = Fixtures.path("profiles/tiny_dsv3.json")
        let shapes = try CLI.run(["plan-experts", Self.windows[0], other, "--gpus", "8"])
        #expect(shapes.status == 1)
        #expect(shapes.stderr.contains("[windows_differ]"), "\(shapes.stderr)")
        // --robust with one window does nothing.
        let one = try CLI.run(["plan-experts", Self.windows[0], "--gpus", "8", "--robust", "p90"])
        #expect(one.status == 1 && one.stderr.contains("--robust needs several windows"), "\(one.stderr)")
        // Usage errors: a robust objective that is none, --robust with --sum-files, the same file twice as outputs.
        #expect(try CLI.run(["plan-experts"] + Self.windows + ["--gpus", "8", "--robust", "p100"]).status == 2)
        #expect(try CLI.run(["plan-experts"] + Self.windows + ["--gpus", "8", "--robust", "max", "--sum-files"]).status == 2)
        #expect(try CLI.run(["plan-experts"] + Self.windows + ["--gpus", "8", "-o", "x.json", "--report", "x.json"]).status == 2)
        // The report may not overwrite an input.
        let overwrite = try CLI.run(["plan-experts"] + Self.windows + ["--gpus", "8", "--report", Self.windows[2]])
        #expect(overwrite.status == 1)
        #expect(overwrite.stderr.contains("--report \(Self.windows[2]) is the input"), "\(overwrite.stderr)")
    }
}
