import Foundation
import Testing

@testable import ExpertPlacement

@Suite struct PlannerTests {
    /// moetool's placement against EPLB on every reference case: never a heavier GPU, never two
    /// replicas of an expert on one GPU, every expert placed, every GPU full.
    @Test(arguments: ReferenceCase.all)
    func neverWorseThanEPLB(_ c: ReferenceCase) throws {
        let t = c.topology
        for loads in c.loads {
            let ours = Planner.place(loads, topology: t, policy: c.policy)
            let base = EPLBBaseline.place(loads, topology: t, policy: c.policy)
            let ourPeak = PlacementMetrics.gpuLoads(ours, loads: loads, topology: t).max()!
            let basePeak = PlacementMetrics.gpuLoads(base, loads: loads, topology: t).max()!
            #expect(ourPeak <= basePeak * (1 + 1e-9))
            #expect(PlacementMetrics.colocatedDuplicates(ours, topology: t) == 0)
            #expect(ours.phy2log.count == t.slots)
            #expect(ours.logcnt.allSatisfy { $0 >= 1 })
            #expect(ours.logcnt.reduce(0, +) == t.slots)
            #expect(ourPeak >= PlacementMetrics.lowerBound(loads: loads, topology: t) * (1 - 1e-9))
            if c.policy == .hierarchical { try expectGroupsStayOnNodes(ours, t) }
        }
    }

    func expectGroupsStayOnNodes(_ p: LayerPlacement, _ t: Topology) throws {
        var nodeOfGroup = [Int: Int]()
        for (s, e) in p.phy2log.enumerated() {
            let node = t.node(ofGPU: t.gpu(ofSlot: s))
            let group = e / t.expertsPerGroup
            if let n = nodeOfGroup[group] { #expect(n == node, "group \(group) on nodes \(n) and \(node)") }
            nodeOfGroup[group] = node
        }
    }

    /// EPLB gives a hot expert more replicas than there are GPUs to spread them over and packs
    /// two onto one GPU (memory spent, no balance gained); moetool caps replicas at one per GPU
    /// and spends the slots on the next experts. Loads 100, 10, 1 on 2 GPUs x 3 slots: EPLB
    /// packs 25+25+10 / 25+25+1 (peak 60), moetool 50+5+0.5 on each GPU (55.5).
    @Test func noColocatedReplicas() throws {
        let loads: [Double] = [100, 10, 1]
        let t = try Topology(experts: 3, slots: 6, gpus: 2, nodes: 1, groups: 1)
        let base = EPLBBaseline.place(loads, topology: t, policy: .global)
        #expect(base.logcnt == [4, 1, 1])
        #expect(PlacementMetrics.colocatedDuplicates(base, topology: t) == 2)
        #expect(PlacementMetrics.gpuLoads(base, loads: loads, topology: t).max() == 60)
        let ours = Planner.place(loads, topology: t, policy: .global)
        #expect(ours.logcnt == [2, 2, 2])
        #expect(PlacementMetrics.colocatedDuplicates(ours, topology: t) == 0)
        #expect(PlacementMetrics.gpuLoads(ours, loads: loads, topology: t).max() == 55.5)
    }

    /// A case where min-max-per-replica allocation is not optimal after packing: four experts
    /// (load 100, 100, 60, 40) on 2 GPUs with 3 slots each. Min-max per replica duplicates the two
    /// 100s (50, 50, 50, 50, 60, 40: best packing 150/150); the search must reach the bound 150.
    @Test func allocationFollowsPacking() throws {
        let loads: [Double] = [100, 100, 60, 40]
        let t = try Topology(experts: 4, slots: 6, gpus: 2, nodes: 1, groups: 1)
        let p = Planner.place(loads, topology: t, policy: .global)
        let peak = PlacementMetrics.gpuLoads(p, loads: loads, topology: t).max()!
        #expect(abs(peak - 150) < 1e-9)
        #expect(PlacementMetrics.colocatedDuplicates(p, topology: t) == 0)
    }

    @Test func partitionCounts() {
        #expect(Planner.partitionCount(items: 8, parts: 4, limit: 1_000_000) == 105)
        #expect(Planner.partitionCount(items: 8, parts: 2, limit: 1_000_000) == 35)
        #expect(Planner.partitionCount(items: 8, parts: 8, limit: 1_000_000) == 1)
        #expect(Planner.partitionCount(items: 32, parts: 4, limit: 1_000_000) == nil)
    }

    /// Ranges that used to take tens of seconds or crash (the swap search scanned every slot
    /// against every slot of the heaviest GPU, the packings every GPU per replica, and a pool of
    /// 65536 experts without redundant slots recursed 65536 deep): 16 experts on 4096 GPUs x 16
    /// slots, 65536 experts on 8 GPUs, 65536 experts on 4096 GPUs. Each is now about a second or
    /// less in a release build; a debug build gets a generous bound.
    @Test func largeRangesPlanQuickly() throws {
        /// Lognormal token counts (mu 5, sigma 1) from a fixed hash, by Box-Muller.
        func lognormal(_ n: Int) -> [Double] {
            func uniform(_ j: Int) -> Double { (Double((j * 2_654_435_761) % 1_000_003) + 0.5) / 1_000_003 }
            return (0..<n).map { j in
                let z = (-2 * log(uniform(j))).squareRoot() * cos(2 * Double.pi * uniform(j + 65536))
                return exp(5 + z).rounded(.down)
            }
        }
        for (experts, gpus, slots) in [(16, 4096, 65536), (65536, 8, 65536), (65536, 4096, 65536)] {
            let t = try Topology(experts: experts, slots: slots, gpus: gpus, nodes: 1, groups: 1)
            let loads = lognormal(experts)
            let start = ContinuousClock.now
            let p = Planner.place(loads, topology: t, policy: .global)
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < .seconds(60), "\(experts) experts, \(gpus) GPUs x \(slots / gpus) slots: \(elapsed)")
            #expect(p.logcnt.reduce(0, +) == slots && PlacementMetrics.colocatedDuplicates(p, topology: t) == 0)
        }
    }

    /// Slots per GPU above the expert count, and slots over all layers above the limit, are
    /// refused: neither can improve a placement, and both made plans take minutes.
    @Test func slotRangesCapped() throws {
        #expect(throws: PlacementError(.invalidTopology, "8192 slots per GPU is more than the 16 experts: a GPU would hold two replicas of an expert, which balances nothing; use at most 16 slots per GPU")) {
            try Topology(experts: 16, slots: 16384, gpus: 2, nodes: 1, groups: 1)
        }
        #expect(throws: PlacementError(.invalidTopology, "GPUs must be 1 to 4096 (got 65536)")) {
            try Topology(experts: 16, slots: 1 << 20, gpus: 1 << 16, nodes: 1, groups: 1)
        }
        let t = try Topology(experts: 1024, slots: 1 << 20, gpus: 4096, nodes: 1, groups: 1)
        let loads = [[Double]](repeating: [Double](repeating: 1, count: 1024), count: 8)
        #expect(throws: PlacementError(.planTooLarge, "8 layers x 1048576 slots is more than moetool plans (4194304 slots in all)")) {
            try PlacementPlanner.plan(loads, PlanRequest(topology: t, policy: .global))
        }
        // A top-k beyond the experts (it sized a buffer: 2^63 trapped) is refused.
        let small = try Topology(experts: 16, slots: 16, gpus: 4, nodes: 1, groups: 1)
        #expect(throws: PlacementError(.invalidRouting, "top-k (9223372036854775807) must be 1 to the experts per layer (16)")) {
            try PlacementPlanner.plan([[Double](repeating: 1, count: 16)], PlanRequest(topology: small, policy: .global, routing: Routing(topk: Int.max, topkGroup: nil)))
        }
    }

    /// A moetool placement file's log2phy is padded to the most replicas of any expert: one
    /// expert with 4097 replicas among 4096 makes 16.8 million entries from 8192 slots. Refused
    /// (pointing to --format sglang) instead of allocated.
    @Test func log2phyBounded() throws {
        let t = try Topology(experts: 4096, slots: 8192, gpus: 2, nodes: 1, groups: 1)
        let loads = [Double](repeating: 1, count: 4096)
        let p = LayerPlacement(phy2log: [Int](repeating: 0, count: 4097) + Array(1..<4096), experts: 4096)
        let layer = PlannedLayer(placement: p, policy: .global, metrics: PlacementMetrics.measure(p, loads: loads, topology: t, routing: nil))
        let plan = Plan(request: PlanRequest(topology: t, policy: .global, algorithm: .eplb), layers: [layer])
        #expect(throws: PlacementError(.planTooLarge, "log2phy would hold 16781312 entries (1 layer x 4096 experts x 4097, the most replicas of one expert), more than moetool writes (16777216): write SGLang's format, which has no log2phy")) {
            try PlacementFile.moetool(plan, bytesPerExpert: nil)
        }
        #expect(try PlacementFile.sglang(plan, decoderLayers: DecoderLayers(isMoE: [true]), redundantExperts: 4096).objectValue?["physical_to_logical_map"]?.arrayValue?.count == 1)
    }

    /// Re-planning from --previous weighs every pair of slots per move: above its slot limit it
    /// is refused rather than left to run for minutes.
    @Test func previousSlotsCapped() throws {
        let t = try Topology(experts: 16, slots: 1024, gpus: 64, nodes: 1, groups: 1)
        let loads = [[Double]](repeating: (0..<16).map { Double($0 + 1) }, count: 1)
        let previous = [EPLBBaseline.place(loads[0], topology: t, policy: .global)]
        #expect(throws: PlacementError(.planTooLarge, "re-planning from a previous placement weighs every pair of slots per move: at most 512 slots per layer (this plan has 1024); plan without a previous placement")) {
            try PlacementPlanner.plan(loads, PlanRequest(topology: t, policy: .global, previous: previous))
        }
    }

    @Test func impossibleParameters() {
        func rule(_ make: () throws(PlacementError) -> Topology) -> PlacementError.Rule? {
            do { _ = try make(); return nil } catch { return error.rule }
        }
        #expect(rule { () throws(PlacementError) in try Topology(experts: 12, slots: 10, gpus: 2, nodes: 1, groups: 1) } == .invalidTopology)
        #expect(rule { () throws(PlacementError) in try Topology(experts: 12, slots: 18, gpus: 4, nodes: 1, groups: 1) } == .invalidTopology)
        #expect(rule { () throws(PlacementError) in try Topology(experts: 12, slots: 16, gpus: 8, nodes: 3, groups: 4) } == .invalidTopology)
        #expect(rule { () throws(PlacementError) in try Topology(experts: 12, slots: 16, gpus: 8, nodes: 2, groups: 5) } == .invalidTopology)
        #expect(rule { () throws(PlacementError) in try Topology(experts: 12, slots: 1 << 23, gpus: 4096, nodes: 1, groups: 1) } == .planTooLarge)
        let t = try! Topology(experts: 12, slots: 16, gpus: 8, nodes: 2, groups: 3)
        let problem = PlacementError(.hierarchicalImpossible, "expert groups (3) must be divisible by nodes (2) for the hierarchical policy")
        #expect(t.hierarchicalProblem == problem)
        #expect(throws: problem) {
            try PlacementPlanner.plan([[Double](repeating: 1, count: 12)], PlanRequest(topology: t, policy: .hierarchical))
        }
    }

    /// Every rule has a distinct stable id and a hint.
    @Test func rulesHaveIdsAndHints() {
        let ids = PlacementError.Rule.allCases.map(\.rawValue)
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { $0.allSatisfy { $0 == "_" || ($0 >= "a" && $0 <= "z") } })
        #expect(PlacementError.Rule.allCases.allSatisfy { !$0.hint.isEmpty })
        #expect(PlacementError(.invalidLoad, file: "p.json", "layers[0][1]: load -2 is negative").description
                == "p.json: layers[0][1]: load -2 is negative [invalid_load]; loads count tokens: finite numbers, 0 or more")
    }

    /// A request's slots: given, or the experts plus redundant slots per GPU rounded up to a
    /// multiple of the GPUs; its nodes: given, or the GPUs over GPUs per node, which must divide them.
    @Test func requestSizesTheTopology() throws {
        #expect(PlacementRequest(gpus: 32, slots: .redundantPerGPU(1)).slotCount(experts: 256) == 288)
        #expect(PlacementRequest(gpus: 8).slotCount(experts: 12) == 16)
        #expect(PlacementRequest(gpus: 6, slots: .redundantPerGPU(0)).slotCount(experts: 16) == 18)
        #expect(PlacementRequest(gpus: 8, slots: .count(24)).slotCount(experts: 16) == 24)
        let t = try PlacementRequest(gpus: 8, nodes: .gpusPerNode(4), slots: .redundantPerGPU(2), groups: 8).topology(experts: 16)
        #expect(t == (try Topology(experts: 16, slots: 32, gpus: 8, nodes: 2, groups: 8)))
        #expect(throws: PlacementError(.invalidTopology, "GPUs (6) must be a multiple of the GPUs per node (4): every node has the same number of GPUs")) {
            try PlacementRequest(gpus: 6, nodes: .gpusPerNode(4)).topology(experts: 16)
        }
    }
}
