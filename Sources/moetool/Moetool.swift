import ArgumentParser
import CKernels
import SafetensorsFormat
import StrictJSON

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

/// A failure a command reports, once, through Main: a stable id, the message (naming the file and tensor at
/// fault), what to do about it, any lines that go with it (every problem of an invalid checkpoint), and the
/// exit status. Library errors become one at the command's boundary; a command never prints its own `error:`.
struct CommandError: Error {
    var id: String
    var message: String
    var hint: String?
    var details: [String] = []
    var status: ExitCode = ExitStatus.invalidInput

    init(_ id: String, _ message: String, hint: String? = nil, details: [String] = [], status: ExitCode = ExitStatus.invalidInput) {
        self.id = id
        self.message = message
        self.hint = hint
        self.details = details
        self.status = status
    }

    /// A usage error (exit 2): options that cannot go together, or one that would be ignored.
    static func usage(_ message: String, hint: String? = nil) -> CommandError {
        CommandError("usage", message, hint: hint, status: ExitStatus.usage)
    }

    /// The `error:` lines for a person (stderr): the details, then the message and its hint.
    var text: String {
        let lines = details + [message + (hint.map { "; " + $0 } ?? "")]
        return lines.map { "error: " + $0 + "\n" }.joined()
    }

    /// The moetool.error/1 document (stdout, with --json).
    func json(command: String) -> JSONValue {
        var error = JSONObject([("id", .string(id)), ("message", .string(message)), ("hint", hint.map { .string($0) } ?? .null)])
        if !details.isEmpty { error.append("details", .array(details.map { .string($0) })) }
        return .object(JSONObject([("schema", "moetool.error/1"), ("command", .string(command)), ("error", .object(error))]))
    }
}

/// A command whose `--json` covers its errors too: Main writes each as a moetool.error/1 document on stdout
/// (the `error:` lines still go to stderr). Any command with `@OptionGroup var common: CommonOptions` adopts it
/// by conforming.
protocol ReportsErrorsAsJSON: ParsableCommand {
    var common: CommonOptions { get }
}

@main
enum Main {
    static func main() {
        moe_keep_large_buffers()
        installSignalHandlers()
        // Errors thrown while running (not parsing) are reported with the usage of the command that ran.
        var running: ParsableCommand? = nil
        do {
            var command = try Moetool.parseAsRoot()
            running = command
            try command.run()
        } catch let code as ExitCode {
            exit(code.rawValue)
        } catch let failure as CommandError {
            report(failure, running: running)
        } catch {
            let code = Moetool.exitCode(for: error)
            if code == .success {
                print(Moetool.fullMessage(for: error))
                exit(0)
            }
            let name = running.map { type(of: $0).configuration.commandName ?? "moetool" } ?? commandNameInArguments()
            let failure = CommandError.usage(Moetool.message(for: error),
                                             hint: "see 'moetool\(name.map { " " + $0 } ?? "") --help'")
            if running == nil && !jsonRequested(running: nil) {
                // A parse error: the usage text helps more than a hint.
                var message = Moetool.fullMessage(for: error)
                if message.hasPrefix("Error: ") { message = "error: " + message.dropFirst("Error: ".count) }
                FileHandleOutput.stderr(message + "\n")
                exit(ExitStatus.usage.rawValue)
            }
            report(failure, running: running)
        }
    }

    static func report(_ failure: CommandError, running: ParsableCommand?) -> Never {
        if jsonRequested(running: running) {
            let name = running.map { type(of: $0).configuration.commandName ?? "moetool" } ?? commandNameInArguments() ?? "moetool"
            FileHandleOutput.document(JSONSerializer.pretty(failure.json(command: name)))
        }
        FileHandleOutput.stderr(failure.text)
        exit(failure.status.rawValue)
    }

    /// Whether errors go out as JSON: the command that ran asked for --json; or, when parsing failed, the
    /// arguments hold --json (before any "--") for a command that reports its errors that way.
    static func jsonRequested(running: ParsableCommand?) -> Bool {
        if let running { return (running as? any ReportsErrorsAsJSON)?.common.json ?? false }
        let arguments = CommandLine.arguments.dropFirst().prefix { $0 != "--" }
        guard arguments.contains("--json"), let name = commandNameInArguments() else { return false }
        for command in Moetool.configuration.subcommands where command.configuration.commandName == name {
            return command is any ReportsErrorsAsJSON.Type
        }
        return false
    }

    /// The subcommand named on the command line, if any.
    static func commandNameInArguments() -> String? {
        guard let first = CommandLine.arguments.dropFirst().first else { return nil }
        for command in Moetool.configuration.subcommands where command.configuration.commandName == first { return first }
        return nil
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
