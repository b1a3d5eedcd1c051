import ExpertPlacement
import FixtureSupport
import PlacementFiles
import Testing

@Suite struct PlanReportTests {
    static func plan(layers: Int, experts: Int, slots: Int, gpus: Int) throws -> Plan {
        func load(_ layer: Int, _ expert: Int) -> Double { Double((expert * 7 + layer * 3) % 11 + 1) }
        let loads: [[Double]] = (0..<layers).map { l in (0..<experts).map { e in load(l, e) } }
        let t = try Topology(experts: experts, slots: slots, gpus: gpus, nodes: 1, groups: 1)
        return try PlacementPlanner.plan(loads, PlanRequest(topology: t, policy: .global, algorithm: .eplb))
    }

    func firstLine(_ report: PlanReport) -> Substring { report.text().split(separator: "\n")[0] }

    /// Counts of one are singular.
    @Test func pluralsFollowTheCounts() throws {
        let one = PlanReport(plan: try Self.plan(layers: 1, experts: 1, slots: 1, gpus: 1), baseline: nil, bytesPerExpert: nil,
                             seconds: 0, profile: "p.json", output: nil)
        #expect(firstLine(one) == "p.json: 1 layer x 1 expert -> 1 slot on 1 GPU (1 node x 1), 1 group")
        let many = PlanReport(plan: try Self.plan(layers: 2, experts: 16, slots: 24, gpus: 8), baseline: nil, bytesPerExpert: nil,
                              seconds: 0, profile: "p.json", output: nil)
        #expect(firstLine(many) == "p.json: 2 layers x 16 experts -> 24 slots on 8 GPUs (1 node x 8), 1 group")
    }

    func memoryLine(_ plan: Plan, bytesPerExpert: UInt64?) -> String {
        let text = PlanReport(plan: plan, baseline: nil, bytesPerExpert: bytesPerExpert, seconds: 0, profile: "p", output: nil).text()
        return String(text.split(separator: "\n").first { $0.hasPrefix("replicas:") } ?? "")
    }

    /// Replica memory in GiB as always for real experts; in smaller units where GiB would show
    /// 0.0; no memory at all when the replicas take none.
    @Test func replicaMemory() throws {
        let dsv3Like = try Self.plan(layers: 2, experts: 256, slots: 288, gpus: 32)
        #expect(memoryLine(dsv3Like, bytesPerExpert: 42 << 20)
                == "replicas: 32 redundant per layer, 64 in all; 2.63 GiB (0.08 GiB per GPU at 42.0 MiB per expert)")
        let tiny = try Self.plan(layers: 2, experts: 16, slots: 24, gpus: 8)
        #expect(memoryLine(tiny, bytesPerExpert: 18432) == "replicas: 8 redundant per layer, 16 in all; 0.3 MiB (36.0 KiB per GPU at 18.0 KiB per expert)")
        #expect(memoryLine(tiny, bytesPerExpert: 3) == "replicas: 8 redundant per layer, 16 in all; 48 bytes (6 bytes per GPU at 3 bytes per expert)")
        #expect(memoryLine(tiny, bytesPerExpert: 0) == "replicas: 8 redundant per layer, 16 in all")
        #expect(memoryLine(tiny, bytesPerExpert: nil) == "replicas: 8 redundant per layer, 16 in all")
        let noRedundant = try Self.plan(layers: 1, experts: 16, slots: 16, gpus: 8)
        #expect(memoryLine(noRedundant, bytesPerExpert: 42 << 20) == "replicas: 0 redundant per layer, 0 in all")
    }
}

@Suite struct RuleDocumentationTests {
    /// Docs/plan-experts.md lists every rule with its id and the hint moetool prints.
    @Test func everyRuleDocumented() {
        let docs = String(decoding: Fixtures.readBytes(Fixtures.root + "/../Docs/plan-experts.md"), as: UTF8.self)
        let rows = docs.split(separator: "\n").filter { $0.hasPrefix("| `") }
        for rule in PlacementError.Rule.allCases {
            let row = rows.first { $0.hasPrefix("| `\(rule.rawValue)` |") }
            #expect(row?.hasSuffix("| \(rule.hint) |") == true, "\(rule.rawValue): \(row ?? "no row")")
        }
    }
}
