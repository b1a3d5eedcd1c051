import CZlib

/// A decoded PNG: 8-bit RGB or RGBA, not interlaced (what Chromium's screenshots are), enough to
/// look at a screenshot's pixels. The zlib stream of the IDAT chunks is inflated by the system
/// zlib; the scanline filters are undone here (PNG specification, section 9).
struct PNGImage {
    let width: Int
    let height: Int
    /// [y][x] as (r, g, b); alpha dropped.
    let rgb: [UInt8]

    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    func pixel(_ x: Int, _ y: Int) -> (r: UInt8, g: UInt8, b: UInt8) {
        let i = (y * width + x) * 3
        return (rgb[i], rgb[i + 1], rgb[i + 2])
    }

    init(_ bytes: [UInt8]) throws {
        guard bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { throw Invalid(description: "not a PNG") }
        func u32(_ i: Int) -> Int { Int(bytes[i]) << 24 | Int(bytes[i + 1]) << 16 | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3]) }
        var i = 8
        var header: [UInt8] = []
        var data: [UInt8] = []
        while i + 8 <= bytes.count {
            let length = u32(i)
            let type = String(decoding: bytes[(i + 4)..<(i + 8)], as: UTF8.self)
            guard i + 12 + length <= bytes.count else { throw Invalid(description: "chunk \(type) cut short") }
            let body = bytes[(i + 8)..<(i + 8 + length)]
            if type == "IHDR" { header = Array(body) }
            if type == "IDAT" { data += body }
            if type == "IEND" { break }
            i += 12 + length
        }
        guard header.count == 13 else { throw Invalid(description: "no IHDR") }
        let w = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        let h = Int(header[4]) << 24 | Int(header[5]) << 16 | Int(header[6]) << 8 | Int(header[7])
        let (depth, colour, interlace) = (header[8], header[9], header[12])
        guard depth == 8, colour == 2 || colour == 6, interlace == 0 else {
            throw Invalid(description: "bit depth \(depth), colour type \(colour), interlace \(interlace): only 8-bit RGB(A), not interlaced")
        }
        let channels = colour == 6 ? 4 : 3
        let stride = w * channels
        var raw = [UInt8](repeating: 0, count: h * (stride + 1))
        var rawLength = uLongf(raw.count)
        let status = raw.withUnsafeMutableBufferPointer { out in
            data.withUnsafeBufferPointer { src in uncompress(out.baseAddress, &rawLength, src.baseAddress, uLong(src.count)) }
        }
        guard status == Z_OK, Int(rawLength) == raw.count else { throw Invalid(description: "zlib: status \(status), \(rawLength) of \(raw.count) bytes") }
        // Undo the filters, scanline by scanline, in place of a separate buffer.
        var pixels = [UInt8](repeating: 0, count: h * stride)
        for y in 0..<h {
            let filter = raw[y * (stride + 1)]
            for x in 0..<stride {
                let v = raw[y * (stride + 1) + 1 + x]
                let a = x >= channels ? Int(pixels[y * stride + x - channels]) : 0
                let b = y > 0 ? Int(pixels[(y - 1) * stride + x]) : 0
                let c = x >= channels && y > 0 ? Int(pixels[(y - 1) * stride + x - channels]) : 0
                let predicted: Int
                switch filter {
                case 0: predicted = 0
                case 1: predicted = a
                case 2: predicted = b
                case 3: predicted = (a + b) / 2
                case 4:
                    let p = a + b - c
                    let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                    predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
                default: throw Invalid(description: "filter \(filter) on row \(y)")
                }
                pixels[y * stride + x] = UInt8(truncatingIfNeeded: Int(v) + predicted)
            }
        }
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        for p in 0..<(w * h) { for k in 0..<3 { rgb[p * 3 + k] = pixels[p * channels + k] } }
        self.width = w
        self.height = h
        self.rgb = rgb
    }
}
