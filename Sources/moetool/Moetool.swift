import ArgumentParser
import CKernels
import SafetensorsFormat

#if canImport(Glibc)
import Glibc
#endif

/// Exit codes shared by every command: 0 success, 1 invalid input or a failed check, 2 usage error.
enum ExitStatus {
    static let invalidInput = ExitCode(1)
    static let usage = ExitCode(2)
}

struct Moetool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moetool",
        abstract: "Inspect, convert and plan Mixture-of-Experts safetensors checkpoints.",
        discussion: """
            Exit status: 0 success, 1 invalid input (every problem is listed), 2 usage error.
            """,
        version: "0.1.0",
        subcommands: [Inspect.self, Convert.self, PlanExperts.self, Compress.self, Decompress.self, Verify.self]
    )
}

@main
enum Main {
    static func main() {
        moe_keep_large_buffers()
        installSignalHandlers()
        // Errors thrown while running (not parsing) are reported with the usage of the command that ran.
        var running: ParsableCommand.Type? = nil
        do {
            var command = try Moetool.parseAsRoot()
            running = type(of: command)
            try command.run()
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch {
            let code = Moetool.exitCode(for: error)
            var message = Moetool.fullMessage(for: error)
            if let running, code != .success {
                let name = running.configuration.commandName ?? "moetool"
                message = "error: \(Moetool.message(for: error))\n  See 'moetool \(name) --help' for more information."
            }
            if code == .success {
                print(message)
                exit(0)
            }
            // One prefix for every error moetool prints.
            if message.hasPrefix("Error: ") { message = "error: " + message.dropFirst("Error: ".count) }
            FileHandleOutput.stderr(message + "\n")
            exit(ExitStatus.usage.rawValue)
        }
    }
}

enum FileHandleOutput {
    /// Unbuffered write of the whole string (stdout may be a closed pipe: stop quietly then).
    private static func writeAll(_ fd: Int32, _ s: String) {
        var s = s
        s.withUTF8 { buf in
            var offset = 0
            while offset < buf.count {
                let n = write(fd, buf.baseAddress! + offset, buf.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                offset += n
            }
        }
    }

    /// Text for a person: every control character but newline and tab is shown as an escape, so that
    /// nothing read from a file (a tensor name, a dtype, config.json's model_type) can move the cursor,
    /// retitle the window or reorder the line, whichever message it ends up in.
    static func stdout(_ s: String) {
        writeAll(1, terminalSafe(s))
    }

    static func stderr(_ s: String) {
        writeAll(2, terminalSafe(s))
    }

    /// A JSON document, as the serializer wrote it (it escapes every control character itself).
    static func document(_ s: String) {
        writeAll(1, s)
    }

    /// The progress line, which returns the cursor to its start ("\r") on purpose.
    static func progress(_ s: String) {
        writeAll(2, s)
    }

    static func terminalSafe(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: { isControl($0) }) else { return s }
        var out = ""
        for u in s.unicodeScalars {
            if isControl(u) {
                out += u == "\r" ? "\\r" : "\\u{" + String(u.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    private static func isControl(_ u: Unicode.Scalar) -> Bool {
        (u.value < 0x20 && u != "\n" && u != "\t") || (0x7F..<0xA0).contains(u.value)
            || (0x202A...0x202E).contains(u.value) || (0x2066...0x2069).contains(u.value)
    }
}
