import ArgumentParser
import Support

/// The options every command that reports, shows progress or uses cores shares, declared once so that
/// they are spelled, parsed and checked the same everywhere.
struct CommonOptions: ParsableArguments {
    @Flag(help: "Print a JSON document (its schema key names its version; see the command's page in Docs/); errors are JSON too.")
    var json = false

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    // .unconditional: "--threads -1" reaches the range check instead of being taken for an option.
    @Option(parsing: .unconditional, help: "Threads (0: all cores).")
    var threads = 0

    mutating func validate() throws {
        guard threads >= 0 else { throw ValidationError("--threads must be 0 (all cores) or more, not \(threads)") }
    }
}
