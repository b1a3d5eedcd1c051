import Checkpoint

/// Small float32 kernels: everything accumulates in float32, as the reference does.
public enum Math {
    /// y[t][o] = sum_i x[t][i] * w[o][i]: `x` is tokens x in, `w` is out x in (a Linear's weight).
    public static func linear(_ x: [Float], tokens: Int, _ w: Matrix, threads: Int = 0) -> [Float] {
        let n = w.cols, outs = w.rows
        precondition(x.count == tokens * n)
        var y = [Float](repeating: 0, count: tokens * outs)
        let rowsPerTask = max(1, 4096 / max(1, n / 64))
        let tasks = (outs + rowsPerTask - 1) / rowsPerTask
        y.withUnsafeMutableBufferPointer { yOut in
            nonisolated(unsafe) let yOut = yOut
            let work = { @Sendable (task: Int) in
                let o0 = task * rowsPerTask, o1 = min(outs, o0 + rowsPerTask)
                x.withUnsafeBufferPointer { xb in
                    w.values.withUnsafeBufferPointer { wb in
                        for t in 0..<tokens {
                            for o in o0..<o1 { yOut[t * outs + o] = dot(xb.baseAddress! + t * n, wb.baseAddress! + o * n, n) }
                        }
                    }
                }
            }
            if tasks == 1 || tokens * outs * n < 1 << 16 {
                for task in 0..<tasks { work(task) }
            } else {
                _ = parallelMap(tasks, threads: threads) { work($0) }
            }
        }
        return y
    }

    /// Dot product in float32, eight lanes at a time.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            i += 8
        }
        var s = acc.sum()
        while i < n {
            s += a[i] * b[i]
            i += 1
        }
        return s
    }

    public static func silu(_ x: Float) -> Float { x / (1 + expf(-x)) }
    public static func sigmoid(_ x: Float) -> Float { 1 / (1 + expf(-x)) }

    /// RMSNorm of each token: x / sqrt(mean(x^2) + eps) * weight.
    public static func rmsNorm(_ x: [Float], tokens: Int, weight: [Float], eps: Float) -> [Float] {
        let n = weight.count
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
#endif
