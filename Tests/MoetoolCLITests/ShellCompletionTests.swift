import FixtureSupport
import Foundation
import Testing

/// `moetool --generate-completion-script bash|zsh|fish` (swift-argument-parser), as README.md says to install it.
@Suite struct ShellCompletions {
    static let subcommands = ["inspect", "convert", "plan-experts", "compress", "decompress", "verify"]

    func script(_ shell: String) throws -> String {
        let r = try CLI.run(["--generate-completion-script", shell])
        #expect(r.status == 0, "\(shell): \(r.stderr)")
        #expect(r.stderr.isEmpty, "\(shell): \(r.stderr)")
        return r.stdout
    }

    /// Sourced in bash, the script completes the first word to exactly the subcommands and the root's flags.
    @Test func bashCompletesTheSubcommands() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        try Data(try script("bash").utf8).write(to: URL(fileURLWithPath: dir + "/moetool.bash"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", #"""
            source "$1" || exit 3
            complete -p moetool || exit 4
            COMP_WORDS=(moetool ""); COMP_CWORD=1; COMP_LINE="moetool "; COMP_POINT=8
            _moetool; printf '%s\n' "${COMPREPLY[@]}"
            """#, "completion-test", dir + "/moetool.bash"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(text)")
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.first == "complete -o filenames -F _moetool moetool", "\(text)")
        #expect(Array(lines.dropFirst()) == ["--version", "-h", "--help"] + Self.subcommands + ["help"], "\(text)")
    }

    /// zsh: a `#compdef` file with a completion function per subcommand.
    @Test func zshDefinesAFunctionPerSubcommand() throws {
        let text = try script("zsh")
        #expect(text.hasPrefix("#compdef moetool\n"))
        let functions = text.split(separator: "\n").filter { $0.hasPrefix("_moetool_") && $0.hasSuffix("() {") }
        #expect(functions.map { String($0.dropFirst("_moetool_".count).dropLast("() {".count)) }.sorted()
                == (Self.subcommands + ["help"]).sorted())
    }

    /// fish: each subcommand offered as the first argument.
    @Test func fishOffersEverySubcommand() throws {
        let offered = try script("fish").split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("complete -c 'moetool' -n '__moetool_should_offer_completions_for_positional \"moetool\" -eq 1' -fa '"),
                  let name = line.split(separator: "'").dropFirst(5).first else { return nil }
            return String(name)
        }
        #expect(offered.sorted() == (Self.subcommands + ["help"]).sorted())
    }

    @Test func anUnknownShellIsAUsageError() throws {
        let r = try CLI.run(["--generate-completion-script", "nushell"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("zsh bash fish"), "\(r.stderr)")
    }
}
