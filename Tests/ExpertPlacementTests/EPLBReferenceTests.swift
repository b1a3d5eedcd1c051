import FixtureSupport
import Foundation
import StrictJSON
import Testing

@testable import ExpertPlacement

/// The cases Fixtures/eplb_reference.py ran through EPLB itself (as SGLang ships it).
struct ReferenceCase: CustomStringConvertible {
    let profile: String
    let slots, groups, nodes, gpus: Int
    let policy: Policy
    let phy2log: [[Int]]
    let log2phy: [[[Int]]]
    let logcnt: [[Int]]

    var description: String { "\(profile) \(slots)/\(groups)/\(nodes)/\(gpus) \(policy)" }

    static let all: [ReferenceCase] = {
        let doc = Fixtures.json("profiles/eplb_expected.json").objectValue!
        return doc["cases"]!.arrayValue!.map { v in
            let o = v.objectValue!
            func int(_ k: String) -> Int { Int(o[k]!.uint64Value!) }
            func ints(_ v: JSONValue) -> [Int] { v.arrayValue!.map { Int($0.doubleValue!) } }
            return ReferenceCase(
                profile: o["profile"]!.stringValue!, slots: int("slots"), groups: int("groups"), nodes: int("nodes"),
                gpus: int("gpus"), policy: Policy(rawValue: o["policy"]!.stringValue!)!,
                phy2log: o["phy2log"]!.arrayValue!.map(ints),
                log2phy: o["log2phy"]!.arrayValue!.map { $0.arrayValue!.map(ints) },
                logcnt: o["logcnt"]!.arrayValue!.map(ints))
        }
    }()

    var loads: [[Double]] {
        let path = Fixtures.path("profiles/\(profile).json")
        return try! LoadProfile.parse(Fixtures.readBytes(path), name: path).loads
    }
    var topology: Topology {
        try! Topology(experts: loads[0].count, slots: slots, gpus: gpus, nodes: nodes, groups: groups)
    }
}

@Suite struct EPLBBaselineTests {
    /// The output printed in EPLB's README for its own example, independent of our fixture run.
    @Test func readmeExample() throws {
        let loads: [[Double]] = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                                 [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]
        let t = try Topology(experts: 12, slots: 16, gpus: 8, nodes: 2, groups: 4)
        let placed = loads.map { EPLBBaseline.place($0, topology: t, policy: .hierarchical) }
        #expect(placed[0].phy2log == [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1])
        #expect(placed[1].phy2log == [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1])
        #expect(placed[0].logcnt == [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1])
    }

    /// Every fixture case: slots and replica counts exactly as EPLB's; log2phy exactly where
    /// EPLB's sort keeps ties in order (16 items or fewer per sort), otherwise the same slots
    /// per expert (only the order of equal-load replicas can differ).
    @Test(arguments: ReferenceCase.all)
    func matchesEPLB(_ c: ReferenceCase) throws {
        let t = c.topology
        let width = c.log2phy[0][0].count
        let smallSorts = t.groups <= 16 && (c.policy == .global ? c.slots : c.slots / c.nodes) <= 16
        for (layer, loads) in c.loads.enumerated() {
            let p = EPLBBaseline.place(loads, topology: t, policy: c.policy)
            #expect(p.phy2log == c.phy2log[layer], "layer \(layer)")
            #expect(p.logcnt == c.logcnt[layer], "layer \(layer)")
            let ours = p.log2phy(width: width)
            if smallSorts {
                #expect(ours == c.log2phy[layer], "layer \(layer)")
            } else {
                #expect(ours.map { Set($0) } == c.log2phy[layer].map { Set($0) }, "layer \(layer)")
            }
        }
    }
}
