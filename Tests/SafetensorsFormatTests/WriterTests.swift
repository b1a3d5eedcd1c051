import FixtureSupport
import Foundation
import SafetensorsFormat
import Testing

@Suite struct WriterCompatibility {
    /// Reads a file written by `safetensors.save_file`, writes the same tensors
    /// (given in a shuffled order) with our writer, and compares every byte.
    @Test(arguments: ["reference.safetensors", "reference_nometa.safetensors", "reference_alldtypes.safetensors"])
    func byteIdenticalToSaveFile(_ name: String) throws {
        let source = try SafetensorsFile(path: Fixtures.path("writer/" + name))
        #expect(source.tensors.count > 5)
        var specs = source.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        var rng = SystemRandomNumberGenerator()
        specs.shuffle(using: &rng)
        let out = Fixtures.temporaryDirectory() + "/out.safetensors"
        defer { Fixtures.removeTemporary(out) }
        try SafetensorsWriter.write(to: out, tensors: specs, metadata: source.header.metadata) { info, sink in
            try sink.write(source.data(source.tensor(named: info.name)!))
        }
        let expected = Fixtures.readBytes(Fixtures.path("writer/" + name))
        let actual = Fixtures.readBytes(out)
        #expect(actual.count == expected.count)
        #expect(actual == expected, "\(name) differs from save_file output")
    }

    @Test func layoutOrdersByRankThenBytes() throws {
        let specs = [
            TensorSpec(name: "b", dtype: .F32, shape: [1]), TensorSpec(name: "a.9", dtype: .F32, shape: [1]),
            TensorSpec(name: "a.10", dtype: .F32, shape: [1]), TensorSpec(name: "B", dtype: .F32, shape: [1]),
            TensorSpec(name: "z", dtype: .F64, shape: [1]), TensorSpec(name: "y", dtype: .BOOL, shape: [3]),
        ]
        let layout = try SafetensorsLayout(tensors: specs, metadata: nil)
        #expect(layout.tensors.map(\.name) == ["z", "B", "a.10", "a.9", "b", "y"])
        #expect(layout.headerJSON.count % 8 == 0)
        #expect(layout.tensors.map(\.begin) == [0, 8, 12, 16, 20, 24])
    }

    @Test func roundTripRandomTensors() throws {
        var rng = SystemRandomNumberGenerator()
        let dtypes: [Dtype] = [.F32, .BF16, .F8_E4M3, .I64, .BOOL, .F16, .U8, .F4]
        var specs: [TensorSpec] = []
        var payload: [String: [UInt8]] = [:]
        for i in 0..<40 {
            let d = dtypes[i % dtypes.count]
            let shape: [UInt64] = i % 7 == 0 && d.bits % 8 == 0 ? [] : [UInt64.random(in: 0...5, using: &rng) * 2, UInt64.random(in: 1...9, using: &rng) * 2]
            let name = "layer.\(i).w\u{e9}\\\"\(i % 3)"
            let bytes = Int(try d.byteSize(elements: shape.reduce(1, *)).get())
            specs.append(TensorSpec(name: name, dtype: d, shape: shape))
            payload[name] = (0..<bytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        let metadata = [(key: "format", value: "pt"), (key: "note\n", value: "\u{01}x")]
        let path = Fixtures.temporaryDirectory() + "/rt.safetensors"
        defer { Fixtures.removeTemporary(path) }
        try SafetensorsWriter.write(to: path, tensors: specs, metadata: metadata) { info, sink in
            let bytes = payload[info.name]!
            // Stream in two pieces to exercise partial writes.
            let half = bytes.count / 2
            try sink.write(Array(bytes[..<half]))
            try sink.write(Array(bytes[half...]))
        }
        let f = try SafetensorsFile(path: path)
        #expect(f.tensors.count == specs.count)
        for s in specs {
            let t = try #require(f.tensor(named: s.name))
            #expect(t.dtype == s.dtype && t.shape == s.shape)
            #expect(Array(f.data(t)) == payload[s.name]!)
        }
        #expect(f.header.metadataValue("note\n") == "\u{01}x")
    }

    @Test func failedWriteLeavesNothing() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { Fixtures.removeTemporary(dir) }
        let path = dir + "/never.safetensors"
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try SafetensorsWriter.write(to: path, tensors: [TensorSpec(name: "a", dtype: .F32, shape: [4])], metadata: nil) { _, sink in
                try sink.write([1, 2, 3, 4])
                throw Boom()
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
        // A producer that writes too few bytes is caught too, and leaves nothing.
        #expect(throws: SafetensorsWriteError.self) {
            try SafetensorsWriter.write(to: path, tensors: [TensorSpec(name: "a", dtype: .F32, shape: [4])], metadata: nil) { _, sink in
                try sink.write([1, 2, 3])
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func refusesDuplicateNames() {
        #expect(throws: SafetensorsLayout.LayoutError.self) {
            try SafetensorsLayout(tensors: [TensorSpec(name: "a", dtype: .F32, shape: [1]), TensorSpec(name: "a", dtype: .F16, shape: [1])], metadata: nil)
        }
    }
}
