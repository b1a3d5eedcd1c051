/// Every routed expert of a MoE layer run on its own, so that a check does not depend on which experts a
/// handful of tokens happen to reach: a zeroed, swapped or mis-scaled expert changes its own output
/// completely even when no token of a whole-model run chose it.
public enum ExpertSweep {
    /// Tokens each expert runs on.
    public static let tokens = 8

    /// One expert's output in A against B (B absent: A against itself, so only finiteness says anything).
    public struct ExpertDifference: Sendable {
        public let layer: Int
        public let expert: Int
        public let difference: OutputDifference
    }

    /// Runs experts `experts` (all when nil) of layer `a` (and of `b`, the same layer of the other
    /// checkpoint) on the same deterministic hidden states, one expert's weights in memory at a time.
    public static func compare(_ a: MoELayer, _ b: MoELayer?, seed: UInt64,
                               experts: [Int]? = nil) throws(ForwardError) -> [ExpertDifference] {
        if let b, b.hidden != a.hidden || b.experts != a.experts {
            throw ForwardError(.checkpointsDiffer, "layer \(a.layer): the checkpoints differ in shape (hidden \(a.hidden)/\(b.hidden), experts \(a.experts)/\(b.experts))")
        }
        let x = try HiddenStates.make(tokens: tokens, hidden: a.hidden, seed: seed &+ UInt64(a.layer) &+ 0x5EED,
                                      norm: a.inputNorm, eps: a.normEps)
        var out: [ExpertDifference] = []
        for e in experts ?? Array(0..<a.experts) {
            let ya = try a.runExpert(e, x, tokens: tokens)
            let yb = try b.map { l throws(ForwardError) in try l.runExpert(e, x, tokens: tokens) } ?? ya
            out.append(ExpertDifference(layer: a.layer, expert: e, difference: OutputDifference.between(ya, yb)))
        }
        return out
    }
}

extension MoELayer {
    /// Routed expert `e`'s output for every token of `x` (tokens x hidden); its pages released after.
    public func runExpert(_ e: Int, _ x: [Float], tokens: Int) throws(ForwardError) -> [Float] {
        if case .gptOss(let gateUpBias, let downBias, let alpha, let limit) = naming {
            let gateUp = try reader.expertRows(prefix + "experts.gate_up_proj", expert: e)
            let down = try reader.expertRows(prefix + "experts.down_proj", expert: e)
            defer { [gateUp, down].forEach { $0.release() } }
            guard gateUp.rows == gateUpBias.cols, down.rows == downBias.cols, down.cols * 2 == gateUp.rows else {
                throw ForwardError(.shapeMismatch, "\(prefix)experts: expert \(e)'s gate_up_proj is [out \(gateUp.rows), in \(gateUp.cols)] and down_proj [out \(down.rows), in \(down.cols)], with biases of \(gateUpBias.cols) and \(downBias.cols): they do not fit together")
            }
            var y = try Math.linear(x, tokens: tokens, gateUp)
            Math.addBias(&y, gateUpBias.values[(e * gateUpBias.cols)..<((e + 1) * gateUpBias.cols)])
            var out = try Math.linear(Math.clampedSwiGLU(y, alpha: alpha, limit: limit), tokens: tokens, down, rows: hidden)
            Math.addBias(&out, downBias.values[(e * downBias.cols)..<((e + 1) * downBias.cols)])
            return out
        }
        let w = try expert(e)
        defer { [w.gate, w.up, w.down].forEach { $0.release() } }
        return try Math.swiglu(x, tokens: tokens, gate: w.gate, up: w.up, down: w.down, limit: swigluLimit)
    }
}

/// What an expert sweep says about one MoE layer: how many experts the tokens reached, how many were run
/// on their own, and the worst of them.
public struct ExpertCoverage: Sendable {
    public let layer: Int
    public let experts: Int
    /// Experts some token of the run chose (in A or B).
    public let reachedByTokens: Int
    /// Experts run on their own by the sweep.
    public let swept: Int
    /// The sweep's expert farthest from A (largest relative error), if any was swept.
    public let worst: ExpertSweep.ExpertDifference?

    /// `routings`: every routing of this layer in the run (A's, B's).
    public init(layer: Int, experts: Int, routings: [[Routing]], sweep: [ExpertSweep.ExpertDifference]) {
        self.layer = layer
        self.experts = experts
        reachedByTokens = Set(routings.flatMap { $0.flatMap(\.experts) }).count
        swept = sweep.count
        worst = sweep.max { a, b in
            // A non-finite output is the worst there is.
            (a.difference.finite ? a.difference.relativeError : .infinity) < (b.difference.finite ? b.difference.relativeError : .infinity)
        }
    }
}

extension ExpertSweep {
    /// The experts outside the limits: non-finite outputs, and with two checkpoints a relative error above
    /// `maxRelativeError` or a cosine below `minCosine`; one line each.
    public static func failures(_ sweep: [ExpertDifference], compared: Bool, maxRelativeError: Double,
                                minCosine: Double) -> [String] {
        var lines: [String] = []
        for d in sweep {
            let name = "layer \(d.layer) expert \(d.expert)"
            if !d.difference.finite {
                lines.append("\(name): non-finite outputs")
            } else if compared && d.difference.relativeError > maxRelativeError {
                lines.append("\(name): relative error \(d.difference.relativeError) > \(maxRelativeError)")
            } else if compared && d.difference.cosine < minCosine {
                lines.append("\(name): cosine \(d.difference.cosine) < \(minCosine)")
            }
        }
        return lines
    }
}
