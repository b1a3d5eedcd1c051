import Dispatch
import Synchronization

/// Runs `body` for 0..<count on `threads` threads (0: all cores) and returns the
/// results in order. Work is handed out one index at a time, so uneven items
/// (shards of different sizes, an index file among shards) balance themselves.
public func parallelMap<T>(_ count: Int, threads: Int = 0, _ body: @Sendable (Int) -> T) -> [T] {
    let buffer = UnsafeMutableBufferPointer<T?>.allocate(capacity: count)
    buffer.initialize(repeating: nil)
    defer {
        buffer.deinitialize()
        buffer.deallocate()
    }
    nonisolated(unsafe) let out = buffer
    if threads <= 0 {
        DispatchQueue.concurrentPerform(iterations: count) { i in out[i] = body(i) }
    } else {
        let next = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: min(threads, max(count, 1))) { _ in
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < count else { return }
                out[i] = body(i)
            }
        }
    }
    return buffer.map { $0! }
}
