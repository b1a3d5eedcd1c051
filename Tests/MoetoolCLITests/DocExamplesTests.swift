import FixtureSupport
import Foundation
import Testing

/// Every command example in README.md and Docs/*.md is run, and must print what the page shows.
///
/// The markup (also described in README.md, "Development"):
///
/// - An example is a fenced block opened with ```` ```console ````. A line starting with `$ ` is a command;
///   the lines after it, up to the next `$ ` line or the closing fence, are what it prints (standard output and
///   standard error as a terminal shows them, interleaved). The block may be indented (inside a list item).
/// - Each command runs in `/bin/sh -c` from the repository root, with the debug-built `moetool` first on `PATH`,
///   so paths are relative to the root (`Fixtures/...`). The shell's exit status must be 0: a page that shows a
///   failure says so with `; echo "exit $?"`, which also prints the status.
///   `/bin/sh` is dash on the Debian/Ubuntu systems moetool supports, and the pages show its messages (`Killed`);
///   compress.md's kill uses `MOETOOL_FAULT`, a hook of debug builds only (see FaultInjection.swift).
/// - `$TMP` is a fresh directory per block, removed afterwards: commands that write, write under it. In the
///   output, that directory's path is shown as `$TMP`.
/// - Placeholders stand where output varies from run to run, and only there: `<time>` (a duration) and `<rate>`
///   (a throughput) each match one decimal number, nothing else. A line `[... N lines not shown]` stands for
///   exactly N lines of output (at most one per command).
/// - Everything else is compared exactly.
/// - A fenced block that is not `console` is not run. One that shows `$ moetool` commands (an example needing
///   files that are not bundled: a 641 GiB checkpoint, a cluster) must be preceded by a line
///   `<!-- not checked: REASON -->`, so that leaving an example unchecked is a decision someone wrote down.
///
/// Update mode: `MOETOOL_UPDATE_DOCS=1 swift test --filter DocExamples` rewrites the expected output in the
/// pages with what the commands print now, keeping every line whose placeholders still match and re-counting
/// `[... N lines not shown]`. Use it after changing an output format (or when merging someone else's change),
/// then read the diff: a changed line that holds a timing needs its placeholder back.
@Suite struct DocExamples {
    static let repository = URL(fileURLWithPath: Fixtures.root).deletingLastPathComponent().path

    /// README.md and every page under Docs/, relative to the repository.
    static let pages: [String] = {
        let docs = (try? FileManager.default.contentsOfDirectory(atPath: repository + "/Docs")) ?? []
        return ["README.md"] + docs.filter { $0.hasSuffix(".md") }.sorted().map { "Docs/" + $0 }
    }()

    static var updating: Bool { ProcessInfo.processInfo.environment["MOETOOL_UPDATE_DOCS"] == "1" }

    @Test(arguments: pages)
    func examplesPrintWhatThePageShows(_ page: String) throws {
        let path = Self.repository + "/" + page
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let blocks = try DocPage.consoleBlocks(text)
        var updated: [(DocPage.Block, [DocPage.Step])] = []
        for block in blocks {
            let tmp = Fixtures.temporaryDirectory()
            defer { Fixtures.removeTemporary(tmp) }
            var steps: [DocPage.Step] = []
            for step in block.steps {
                let actual = try Self.run(step.command, tmp: tmp)
                let location = "\(page):\(step.line): $ \(step.command)"
                if Self.updating {
                    steps.append(DocPage.Step(line: step.line, command: step.command, expected: OutputMatch.updated(step.expected, actual)))
                } else if let difference = OutputMatch.difference(step.expected, actual) {
                    Issue.record("\(location)\n\(difference)\nprinted:\n\(actual.joined(separator: "\n"))")
                }
            }
            updated.append((block, steps))
        }
        if Self.updating {
            // Bottom-up, so that earlier blocks keep their line numbers.
            for (block, steps) in updated.reversed() { text = DocPage.replacing(block, with: steps, in: text) }
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
    }

    /// `$ moetool` outside a console block needs a written reason.
    @Test(arguments: pages)
    func anExampleThatIsNotRunSaysWhy(_ page: String) throws {
        let text = try String(contentsOfFile: Self.repository + "/" + page, encoding: .utf8)
        for line in DocPage.uncheckedCommandsWithoutReason(text) {
            Issue.record("\(page):\(line): a `$ moetool` example outside a ```console block, without <!-- not checked: REASON -->")
        }
    }

    /// The suite does find the examples: every page that documents a command has some.
    @Test func everyCommandPageHasCheckedExamples() throws {
        for page in ["README.md", "Docs/inspect.md", "Docs/convert.md", "Docs/plan-experts.md", "Docs/compress.md", "Docs/verify.md"] {
            let text = try String(contentsOfFile: Self.repository + "/" + page, encoding: .utf8)
            let commands = try DocPage.consoleBlocks(text).flatMap(\.steps)
            #expect(commands.contains { $0.command.hasPrefix("moetool ") }, "\(page): no checked `$ moetool` example")
        }
    }

    /// The lines a command prints, `$TMP` put back for the block's directory.
    static func run(_ command: String, tmp: String) throws -> [String] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.currentDirectoryURL = URL(fileURLWithPath: repository)
        var environment = ProcessInfo.processInfo.environment
        let binaries = URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().path
        environment["PATH"] = binaries + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment["TMP"] = tmp
        environment["COLUMNS"] = nil  // help text is wrapped at 80 columns off a terminal
        p.environment = environment
        // One file for both streams: the interleaving a terminal shows (moetool writes unbuffered).
        let capture = tmp + "/.output"
        _ = FileManager.default.createFile(atPath: capture, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: capture))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        p.waitUntilExit()
        try handle.close()
        var output = String(decoding: Fixtures.readBytes(capture), as: UTF8.self)
        try FileManager.default.removeItem(atPath: capture)
        #expect(p.terminationStatus == 0, "$ \(command): exit \(p.terminationStatus) (show a failure with ; echo \"exit $?\")\n\(output)")
        output = output.replacingOccurrences(of: tmp, with: "$TMP")
        if output.hasSuffix("\n") { output.removeLast() }
        return output.isEmpty ? [] : output.components(separatedBy: "\n")
    }
}

/// Finding console blocks in a Markdown page, and writing them back.
enum DocPage {
    struct Step {
        /// 1-based line of the `$ ` line in the page.
        let line: Int
        let command: String
        let expected: [String]
    }

    struct Block {
        /// 0-based lines of the opening and closing fences.
        let open: Int, close: Int
        let indent: String
        let steps: [Step]
    }

    struct MarkupError: Error, CustomStringConvertible {
        let description: String
    }

    static func lines(_ text: String) -> [String] { text.components(separatedBy: "\n") }

    /// (line index, indentation, info string) of every fence, paired open/close.
    static func fences(_ lines: [String]) -> [(open: Int, close: Int, indent: String, info: String)] {
        var result: [(Int, Int, String, String)] = []
        var open: (Int, String, String)? = nil
        for (i, line) in lines.enumerated() {
            let indent = String(line.prefix { $0 == " " })
            let rest = line.dropFirst(indent.count)
            guard rest.hasPrefix("```") else { continue }
            if let o = open {
                if rest.trimmingCharacters(in: .whitespaces) == "```" && indent == o.1 {
                    result.append((o.0, i, o.1, o.2))
                    open = nil
                }
            } else {
                open = (i, indent, rest.dropFirst(3).trimmingCharacters(in: .whitespaces))
            }
        }
        return result
    }

    static func consoleBlocks(_ text: String) throws -> [Block] {
        let all = lines(text)
        return try fences(all).filter { $0.info == "console" }.map { fence in
            var steps: [Step] = []
            var command: (line: Int, text: String)? = nil
            var expected: [String] = []
            for i in (fence.open + 1)..<fence.close {
                let line = all[i].hasPrefix(fence.indent) ? String(all[i].dropFirst(fence.indent.count)) : all[i]
                if line.hasPrefix("$ ") {
                    if let c = command { steps.append(Step(line: c.line, command: c.text, expected: expected)) }
                    command = (i + 1, String(line.dropFirst(2)))
                    expected = []
                } else if command == nil {
                    throw MarkupError(description: "line \(i + 1): output before the first `$ ` command")
                } else {
                    expected.append(line)
                }
            }
            if let c = command { steps.append(Step(line: c.line, command: c.text, expected: expected)) }
            return Block(open: fence.open, close: fence.close, indent: fence.indent, steps: steps)
        }
    }

    /// 1-based lines of `$ moetool` in other fenced blocks not preceded by `<!-- not checked: ... -->`.
    static func uncheckedCommandsWithoutReason(_ text: String) -> [Int] {
        let all = lines(text)
        var result: [Int] = []
        for fence in fences(all) where fence.info != "console" {
            let before = fence.open > 0 ? all[fence.open - 1].trimmingCharacters(in: .whitespaces) : ""
            let reasoned = before.hasPrefix("<!-- not checked: ") && before.hasSuffix("-->") && before.count > "<!-- not checked: -->".count
            for i in (fence.open + 1)..<fence.close where all[i].trimmingCharacters(in: .whitespaces).hasPrefix("$ moetool") && !reasoned {
                result.append(i + 1)
            }
        }
        return result
    }

    /// The page with `block`'s contents replaced by `steps`.
    static func replacing(_ block: Block, with steps: [Step], in text: String) -> String {
        var all = lines(text)
        let body = steps.flatMap { step in (["$ " + step.command] + step.expected).map { $0.isEmpty ? "" : block.indent + $0 } }
        all.replaceSubrange((block.open + 1)..<block.close, with: body)
        return all.joined(separator: "\n")
    }
}

/// Expected output (with placeholders) against printed output.
enum OutputMatch {
    /// Each matches one decimal number: `12`, `0.13`, `1.5e-05`.
    static let placeholders = ["<time>", "<rate>"]

    /// N from `[... N lines not shown]`.
    static func elided(_ line: String) -> Int? {
        guard line.hasPrefix("[... "), line.hasSuffix(" not shown]") else { return nil }
        let words = line.dropFirst(5).dropLast(" not shown]".count).split(separator: " ")
        guard words.count == 2, words[1] == "lines" || words[1] == "line", let n = Int(words[0]) else { return nil }
        return n
    }

    /// Whether `actual` is `expected` with each placeholder standing for one number.
    static func matches(_ expected: String, _ actual: String) -> Bool {
        var e = Substring(expected), a = Substring(actual)
        while !e.isEmpty {
            if let p = placeholders.first(where: { e.hasPrefix($0) }) {
                e = e.dropFirst(p.count)
                guard let n = number(at: a) else { return false }
                a = a.dropFirst(n)
            } else {
                guard a.first == e.first else { return false }
                e = e.dropFirst()
                a = a.dropFirst()
            }
        }
        return a.isEmpty
    }

    /// Length of the decimal number at the start of `s` (digits, an optional fraction and exponent), if any.
    static func number(at s: Substring) -> Int? {
        let chars = Array(s.prefix(64))
        var i = 0
        func digits() -> Int { let start = i; while i < chars.count, chars[i].isASCII, chars[i].isNumber { i += 1 }; return i - start }
        guard digits() > 0 else { return nil }
        if i + 1 < chars.count, chars[i] == ".", chars[i + 1].isNumber { i += 1; _ = digits() }
        if i + 1 < chars.count, chars[i] == "e" || chars[i] == "E" {
            let mark = i
            i += 1
            if i < chars.count, chars[i] == "-" || chars[i] == "+" { i += 1 }
            if digits() == 0 { i = mark }
        }
        return i
    }

    /// Splits `expected` around its elision: (before, lines elided, after).
    static func parts(_ expected: [String]) -> (before: [String], elided: Int, after: [String])? {
        guard let k = expected.firstIndex(where: { elided($0) != nil }) else { return nil }
        return (Array(expected[..<k]), elided(expected[k])!, Array(expected[(k + 1)...]))
    }

    /// Nil when `actual` is what `expected` shows; otherwise what differs first.
    static func difference(_ expected: [String], _ actual: [String]) -> String? {
        if expected.filter({ elided($0) != nil }).count > 1 { return "more than one [... N lines not shown] for one command" }
        let before: [String], skipped: Int, after: [String]
        if let p = parts(expected) { (before, skipped, after) = (p.before, p.elided, p.after) } else { (before, skipped, after) = (expected, 0, []) }
        let shown = before.count + skipped + after.count
        for (i, e) in before.enumerated() {
            guard i < actual.count else { return "expected line \(i + 1), \"\(e)\": output ended after \(actual.count) lines" }
            if !matches(e, actual[i]) { return "line \(i + 1): expected \"\(e)\"\n                 printed \"\(actual[i])\"" }
        }
        if actual.count != shown { return "printed \(actual.count) lines, the page accounts for \(shown)" }
        for (j, e) in after.enumerated() {
            let i = before.count + skipped + j
            if !matches(e, actual[i]) { return "line \(i + 1): expected \"\(e)\"\n                 printed \"\(actual[i])\"" }
        }
        return nil
    }

    /// What the page should show for `actual`: lines whose placeholders still match are kept as they are
    /// (masks survive), others replaced by the printed line; an elision keeps its place, re-counted.
    static func updated(_ expected: [String], _ actual: [String]) -> [String] {
        func merge(_ e: [String], _ a: ArraySlice<String>) -> [String] {
            a.enumerated().map { i, line in i < e.count && matches(e[i], line) ? e[i] : line }
        }
        guard let p = parts(expected), actual.count > p.before.count + p.after.count else {
            return merge(expected.filter { elided($0) == nil }, actual[...])
        }
        let skipped = actual.count - p.before.count - p.after.count
        return merge(p.before, actual.prefix(p.before.count)) + ["[... \(skipped) \(skipped == 1 ? "line" : "lines") not shown]"]
            + merge(p.after, actual.suffix(p.after.count))
    }
}

/// The matcher itself fails where it should: a test of a comparison that could only pass would prove nothing.
@Suite struct DocExampleMarkup {
    @Test func placeholdersMatchOneNumberOnly() {
        #expect(OutputMatch.matches("done, <time> s, <rate> MB/s", "done, 0.13 s, 9 MB/s"))
        #expect(OutputMatch.matches("<time> ms", "1.5e-05 ms"))
        #expect(!OutputMatch.matches("done, <time> s", "done, fast s"))
        #expect(!OutputMatch.matches("done, <time> s", "done, 0.13 s, and more"))
        #expect(!OutputMatch.matches("5 file(s)", "6 file(s)"))
        #expect(!OutputMatch.matches("<time>", ""))
    }

    @Test func anElisionStandsForExactlyItsCount() {
        let page = ["head", "[... 2 lines not shown]", "tail"]
        #expect(OutputMatch.difference(page, ["head", "a", "b", "tail"]) == nil)
        #expect(OutputMatch.difference(page, ["head", "a", "tail"]) == "printed 3 lines, the page accounts for 4")
        #expect(OutputMatch.difference(page, ["head", "a", "b", "c", "tail"]) == "printed 5 lines, the page accounts for 4")
        #expect(OutputMatch.difference(page, ["head", "a", "b", "TAIL"]) == "line 4: expected \"tail\"\n                 printed \"TAIL\"")
        #expect(OutputMatch.difference(["a"], ["a", "b"]) == "printed 2 lines, the page accounts for 1")
        #expect(OutputMatch.difference(["a", "b"], ["a"]) == "expected line 2, \"b\": output ended after 1 lines")
        #expect(OutputMatch.difference(["x", "[... 1 line not shown]", "[... 1 line not shown]"], ["x", "y", "z"])
                == "more than one [... N lines not shown] for one command")
    }

    @Test func updateKeepsMasksAndRecountsElisions() {
        let page = ["took <time> s", "[... 1 line not shown]", "old tail"]
        #expect(OutputMatch.updated(page, ["took 0.5 s", "x", "y", "new tail"])
                == ["took <time> s", "[... 2 lines not shown]", "new tail"])
        #expect(OutputMatch.updated(["took <time> s", "same"], ["took soon", "same", "added"]) == ["took soon", "same", "added"])
    }

    @Test func blocksAndStepsAreParsed() throws {
        let page = "text\n  ```console\n  $ moetool a\n  out 1\n\n  $ moetool b\n  ```\n<!-- not checked: too big -->\n```\n$ moetool c\n```\n```sh\n$ moetool d\n```\n"
        let blocks = try DocPage.consoleBlocks(page)
        #expect(blocks.count == 1)
        #expect(blocks[0].steps.map(\.command) == ["moetool a", "moetool b"])
        #expect(blocks[0].steps[0].expected == ["out 1", ""])
        #expect(blocks[0].steps[1].line == 6)
        #expect(DocPage.uncheckedCommandsWithoutReason(page) == [13])
        let rewritten = DocPage.replacing(blocks[0], with: [DocPage.Step(line: 3, command: "moetool a", expected: ["new"])], in: page)
        #expect(rewritten.hasPrefix("text\n  ```console\n  $ moetool a\n  new\n  ```\n<!--"))
    }
}
