import CKernels
import Checkpoint

/// Small float32 kernels: everything accumulates in float32, as the reference does.
public enum Math {
    /// Threads the matrix products use (0: all cores), for the forward passes run inside `withValue`.
    @TaskLocal public static var threads = 0

    /// y[t][o] = sum_i x[t][i] * w[o][i]: `x` is tokens x in, `w` is out x in (a Linear's weight),
    /// read a row at a time; rows are shared out over the cores.
    /// A checkpoint whose shapes disagree with its config (or with each other) is an error, not a
    /// crash: `rows`, when given, is how many outputs the caller will index.
    public static func linear(_ x: [Float], tokens: Int, _ w: Weight, rows: Int? = nil, threads: Int? = nil) throws(ForwardError) -> [Float] {
        let threads = threads ?? Math.threads
        let n = w.cols, outs = w.rows
        guard tokens > 0, x.count == tokens * n, rows.map({ $0 == outs }) ?? true else {
            throw ForwardError(.configInvalid, "\(w.name) is [\(outs), \(n)], but the model needs [\(rows.map(String.init) ?? "\(outs)"), \(tokens > 0 ? x.count / tokens : 0)] here: its shapes disagree with config.json or with each other")
        }
        var y = [Float](repeating: 0, count: tokens * outs)
        let rowsPerTask = max(1, min(256, (1 << 16) / max(1, n)))
        let tasks = (outs + rowsPerTask - 1) / rowsPerTask
        y.withUnsafeMutableBufferPointer { yOut in
            nonisolated(unsafe) let yOut = yOut
            let work = { @Sendable (task: Int) in
                let o0 = task * rowsPerTask, o1 = min(outs, o0 + rowsPerTask)
                let row = UnsafeMutablePointer<Float>.allocate(capacity: n)
                defer { row.deallocate() }
                x.withUnsafeBufferPointer { xb in
                    for o in o0..<o1 {
                        w.decodeRow(o, into: row)
                        moe_dot_rows(row, xb.baseAddress!, n, tokens, n, yOut.baseAddress! + o, outs)
                    }
                }
            }
            if tasks == 1 || outs * n < 1 << 18 {
                for task in 0..<tasks { work(task) }
            } else {
                _ = parallelMap(tasks, threads: threads) { work($0) }
            }
        }
        return y
    }

    public static func linear(_ x: [Float], tokens: Int, _ w: Matrix, name: String, rows: Int? = nil, threads: Int? = nil) throws(ForwardError) -> [Float] {
        var weight = Weight(w)
        weight.name = name
        return try linear(x, tokens: tokens, weight, rows: rows, threads: threads)
    }

    /// SwiGLU: down(silu(gate(x)) * up(x)); with a `limit` (DeepSeek-V4's swiglu_limit), gate(x) clamped
    /// above at it and up(x) to [-limit, limit] first.
    public static func swiglu(_ x: [Float], tokens: Int, gate: Weight, up: Weight, down: Weight, limit: Float? = nil) throws(ForwardError) -> [Float] {
        var g = try linear(x, tokens: tokens, gate)
        var u = try linear(x, tokens: tokens, up, rows: gate.rows)
        if let limit {
            g = g.map { min($0, limit) }
            u = u.map { max(min($0, limit), -limit) }
        }
        return try linear(zip(g, u).map { silu($0) * $1 }, tokens: tokens, down, rows: x.count / tokens)
    }

    /// gpt-oss's expert activation. `gateUp` holds, per token, I interleaved pairs (gate unit i at 2i, up unit i
    /// at 2i + 1); with gate clamped above at `limit` and up to [-limit, limit]:
    /// out_i = (up_i + 1) * gate_i * sigmoid(alpha * gate_i). Returns tokens x I.
    public static func clampedSwiGLU(_ gateUp: [Float], alpha: Float, limit: Float) -> [Float] {
        (0..<(gateUp.count / 2)).map { i in
            let gate = min(gateUp[2 * i], limit), up = max(min(gateUp[2 * i + 1], limit), -limit)
            return (up + 1) * (gate * sigmoid(gate * alpha))
        }
    }

    /// y[t][o] += bias[o] for every token t of `y` (tokens x bias.count).
    public static func addBias<C: Collection<Float>>(_ y: inout [Float], _ bias: C) where C.Index == Int {
        let n = bias.count, base = bias.startIndex
        for i in y.indices { y[i] += bias[base + i % n] }
    }

    public static func silu(_ x: Float) -> Float { x / (1 + expf(-x)) }
    public static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

    /// RMSNorm of each token: x / sqrt(mean(x^2) + eps) * weight.
    public static func rmsNorm(_ x: [Float], tokens: Int, weight: [Float], eps: Float, name: String = "norm weight") throws(ForwardError) -> [Float] {
        let n = weight.count
        guard n > 0, x.count == tokens * n else {
            throw ForwardError(.shapeMismatch, "\(name) has \(n) values, but the model normalises vectors of \(tokens > 0 ? x.count / tokens : 0) here")
        }
        var y = x
        for t in 0..<tokens {
            var ss: Float = 0
            for i in 0..<n { ss += x[t * n + i] * x[t * n + i] }
            let r = 1 / (ss / Float(n) + eps).squareRoot()
            for i in 0..<n { y[t * n + i] = x[t * n + i] * r * weight[i] }
        }
        return y
    }
}

#if canImport(Glibc)
import Glibc
import Support
#endif
