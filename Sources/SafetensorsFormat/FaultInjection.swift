#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if DEBUG
import Synchronization
#endif

/// A hook for the fault-injection tests, compiled into debug builds only (release builds ignore it).
///
/// Every step that puts bytes on disk is an event: each write to a file being written atomically,
/// the moment before its rename into place and the moment after. The environment variable
/// `MOETOOL_FAULT` picks one:
/// - `kill:N`: the process kills itself (SIGKILL) at event N, as a crash or `kill -9` would;
/// - `stop:N`: it stops itself (SIGSTOP) at event N, so a test can change the input and resume it (SIGCONT);
/// - `count`: it prints `moetool-fault-events: N` to stderr at exit, to choose N.
public enum FaultInjection {
    @inline(__always)
    public static func event() {
        #if DEBUG
        guard let plan = Plan.current else { return }
        let n = counter.add(1, ordering: .relaxed).newValue
        switch plan {
        case .kill(let at) where n == at: raise(SIGKILL)
        case .stop(let at) where n == at: raise(SIGSTOP)
        default: break
        }
        #endif
    }

    #if DEBUG
    private static let counter = Atomic<Int>(0)

    private enum Plan {
        case kill(Int), stop(Int), count

        static let current: Plan? = {
            guard let raw = getenv("MOETOOL_FAULT").map({ String(cString: $0) }) else { return nil }
            if raw == "count" {
                atexit {
                    let line = "moetool-fault-events: \(FaultInjection.counter.load(ordering: .relaxed))\n"
                    _ = line.withCString { write(2, $0, strlen($0)) }
                }
                return .count
            }
            let parts = raw.split(separator: ":")
            guard parts.count == 2, let n = Int(parts[1]), n > 0 else { return nil }
            switch parts[0] {
            case "kill": return .kill(n)
            case "stop": return .stop(n)
            default: return nil
            }
        }()
    }
    #endif
}
