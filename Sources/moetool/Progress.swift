import Foundation
import Support
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A progress bar on standard error, drawn only when it is a terminal: pipelines
/// and CI logs stay silent.
final class ProgressBar: Sendable {
    let label: String
    let total: UInt64
    let enabled: Bool
    private let done = Atomic<UInt64>(0)
    private let lastDrawn = Atomic<UInt64>(0)
    private let start = Date()

    init(label: String, total: UInt64, quiet: Bool = false) {
        self.label = label
        self.total = max(total, 1)
        self.enabled = !quiet && isatty(2) != 0
    }

    func advance(_ bytes: UInt64) {
        let now = done.add(bytes, ordering: .relaxed).newValue
        guard enabled else { return }
        // Redraw about 200 times over the whole run.
        let step = total / 200 + 1
        let previous = lastDrawn.load(ordering: .relaxed)
        guard now >= previous + step || now >= total else { return }
        guard lastDrawn.compareExchange(expected: previous, desired: now, ordering: .relaxed).exchanged else { return }
        draw(now)
    }

    private func draw(_ now: UInt64) {
        let fraction = min(1, Double(now) / Double(total))
        let width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = max(Date().timeIntervalSince(start), 1e-3)
        let rate = Double(now) / elapsed / 1e6
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        var line = "\r\(label) [\(bar)] \(Int(fraction * 100))% \(formatMB(now)) \(Int(rate)) MB/s"
        if now > 0 && now < total {
            let remaining = elapsed * Double(total - now) / Double(now)
            line += " ETA \(Int(remaining / 60)):" + String(Int(remaining) % 60).rightAligned(2, pad: "0")
        }
        line += "   "
        FileHandleOutput.progress(line)
    }

    private func formatMB(_ bytes: UInt64) -> String {
        "\(bytes / 1_000_000)/\(total / 1_000_000) MB"
    }

    func finish() {
        guard enabled else { return }
        draw(done.load(ordering: .relaxed))
        FileHandleOutput.stderr("\n")
    }
}

/// A progress line counted in steps ("verify [#####-----] 3/8"), for work whose size is not bytes; drawn only
/// when stderr is a terminal and -q was not given.
final class StepProgress: Sendable {
    let label: String
    let enabled: Bool
    private let drawn = Atomic<Bool>(false)

    init(label: String, quiet: Bool) {
        self.label = label
        enabled = !quiet && isatty(2) != 0
    }

    func update(_ done: Int, of total: Int) {
        guard enabled, total > 0 else { return }
        let width = 30
        let filled = min(width, done * width / total)
        drawn.store(true, ordering: .relaxed)
        FileHandleOutput.progress("\r\(label) [\(String(repeating: "#", count: filled))\(String(repeating: "-", count: width - filled))] \(done)/\(total)   ")
    }

    /// Ends the line, once, if anything was drawn.
    func finish() {
        guard drawn.exchange(false, ordering: .relaxed) else { return }
        FileHandleOutput.stderr("\n")
    }
}
