import CZlib
import ExpertPlacement
import FixtureSupport
import Foundation
import PlacementFiles
import Testing

/// Headless Chromium, where it is installed (Debian: `apt-get install chromium`; CI installs it):
/// the path in MOETOOL_CHROMIUM, or the usual names.
enum Chromium {
    static let path: String? = {
        let candidates = [ProcessInfo.processInfo.environment["MOETOOL_CHROMIUM"], "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
        /// Messages the page wrote to its console, errors and uncaught exceptions among them
        /// (with --enable-logging=stderr Chromium logs each as a line with `:CONSOLE`).
        var console: [String] { stderr.split(separator: "\n").filter { $0.contains(":CONSOLE") }.map(String.init) }
    }

    /// Runs Chromium headless on `page` with `arguments` (--screenshot=..., --dump-dom), as root
    /// too (--no-sandbox), with a profile and HOME of its own under `dir`; killed after 180 s (a loaded CI machine runs the whole suite beside it).
    static func run(_ page: String, _ arguments: [String], dir: String) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path!)
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0",
                       "--user-data-dir=\(dir)/profile"] + arguments + [URL(fileURLWithPath: page).absoluteString]
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = dir
        p.environment = environment
        let out = dir + "/stdout", err = dir + "/stderr"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        let outHandle = try #require(FileHandle(forWritingAtPath: out)), errHandle = try #require(FileHandle(forWritingAtPath: err))
        p.standardOutput = outHandle
        p.standardError = errHandle
        try p.run()
        let watchdog = DispatchWorkItem { if p.isRunning { p.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 180, execute: watchdog)
        p.waitUntilExit()
        watchdog.cancel()
        try outHandle.close()
        try errHandle.close()
        return Run(status: p.terminationStatus, stdout: String(decoding: Fixtures.readBytes(out), as: UTF8.self),
                   stderr: String(decoding: Fixtures.readBytes(err), as: UTF8.self))
    }
}

@Suite(.enabled(if: Chromium.path != nil, "Chromium is not installed (apt-get install chromium, or MOETOOL_CHROMIUM=path): the browser test of the HTML report is skipped"))
struct HTMLReportInABrowser {
    /// The drift fixture's report: Chromium renders it without a console message, the script
    /// marks it rendered with every layer, the screenshot is not blank and shows each layer's
    /// marker once.
    @Test func reportRendersEveryLayer() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let html = try HTMLReportFixture.driftReport()
        let page = dir + "/plan.html"
        try PlanHTML.write(html, to: page)
        let layers = html.report.plan.layers.count

        let dom = try Chromium.run(page, ["--dump-dom"], dir: dir)
        #expect(dom.status == 0, "\(dom.stderr)")
        #expect(dom.console.isEmpty, "console: \(dom.console)")
        #expect(dom.stdout.contains("<body data-rendered=\"\(layers)\">"), "\(dom.stdout.prefix(400))")
        #expect(dom.stdout.components(separatedBy: "<section class=\"layer\"").count - 1 == layers)

        let shot = dir + "/plan.png"
        let screenshot = try Chromium.run(page, ["--screenshot=\(shot)", "--window-size=1000,3200", "--hide-scrollbars"], dir: dir)
        #expect(screenshot.status == 0, "\(screenshot.stderr)")
        #expect(screenshot.console.isEmpty, "console: \(screenshot.console)")
        let image = try PNGImage(Fixtures.readBytes(shot))
        #expect(image.width == 1000 && image.height == 3200)
        // Not blank: a good share of the page is drawn, in many colours.
        var drawn = 0
        var colours = Set<Int>()
        for y in 0..<image.height {
            for x in 0..<image.width {
                let p = image.pixel(x, y)
                if p.r < 240 || p.g < 240 || p.b < 240 { drawn += 1 }
                colours.insert(Int(p.r) << 16 | Int(p.g) << 8 | Int(p.b))
            }
        }
        #expect(Double(drawn) / Double(image.width * image.height) > 0.05, "\(drawn) pixels drawn")
        #expect(colours.count > 20)
        // The layers shown: runs of the layer marker down a column through the sections' border.
        #expect(markerRuns(image, x: 29) == layers)
    }

    /// The console check sees what a broken page prints: an error logged and an uncaught exception.
    @Test func consoleErrorsAreSeen() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let page = dir + "/broken.html"
        try "<!DOCTYPE html><html><body><script>console.error(\"boom\"); undefinedFunction();</script></body></html>"
            .write(toFile: page, atomically: true, encoding: .utf8)
        let run = try Chromium.run(page, ["--dump-dom"], dir: dir)
        #expect(run.console.count == 2, "\(run.console)")
        #expect(run.console.contains { $0.contains("boom") } && run.console.contains { $0.contains("undefinedFunction") })
    }

    /// Vertical runs of the layer marker's colour in column x.
    func markerRuns(_ image: PNGImage, x: Int) -> Int {
        let m = PlanHTML.layerMarker
        var runs = 0
        var inside = false
        for y in 0..<image.height {
            let p = image.pixel(x, y)
            let isMarker = abs(Int(p.r) - m.red) <= 8 && abs(Int(p.g) - m.green) <= 8 && abs(Int(p.b) - m.blue) <= 8
            if isMarker && !inside { runs += 1 }
            inside = isMarker
        }
        return runs
    }
}

@Suite struct PNGDecoding {
    /// A 3 x 2 RGB image whose rows use the Sub and Paeth filters, compressed by zlib here.
    @Test func filtersUndone() throws {
        let pixels: [[UInt8]] = [[10, 20, 30, 40, 50, 60, 200, 100, 0], [11, 22, 33, 255, 0, 7, 1, 2, 3]]
        func paeth(_ a: Int, _ b: Int, _ c: Int) -> Int {
            let p = a + b - c
            let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
            return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
        }
        var raw: [UInt8] = [1]  // Sub
        for x in 0..<9 { raw.append(UInt8(truncatingIfNeeded: Int(pixels[0][x]) - (x >= 3 ? Int(pixels[0][x - 3]) : 0))) }
        raw.append(4)  // Paeth
        for x in 0..<9 {
            let a = x >= 3 ? Int(pixels[1][x - 3]) : 0, b = Int(pixels[0][x]), c = x >= 3 ? Int(pixels[0][x - 3]) : 0
            raw.append(UInt8(truncatingIfNeeded: Int(pixels[1][x]) - paeth(a, b, c)))
        }
        var compressed = [UInt8](repeating: 0, count: 256)
        var length = uLongf(compressed.count)
        #expect(compress(&compressed, &length, raw, uLong(raw.count)) == Z_OK)
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let n = UInt32(body.count)
            return [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + Array(type.utf8) + body + [0, 0, 0, 0]
        }
        let png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", [0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0])
            + chunk("IDAT", Array(compressed[0..<Int(length)])) + chunk("IEND", [])
        let image = try PNGImage(png)
        #expect(image.width == 3 && image.height == 2)
        #expect(image.rgb == pixels[0] + pixels[1])
        #expect(throws: PNGImage.Invalid.self) { try PNGImage(Array(png.prefix(20))) }
    }
}
