/// torch.save's file format (since torch 1.6): a zip whose members all sit in one top directory
/// (named after the file when it was written, so any name is accepted):
///
///     <top>/data.pkl        the saved object, pickled (protocol 2); tensors are
///                           torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
///                           with each storage a persistent id ('storage', torch.<T>Storage, key, location, numel)
///     <top>/data/<key>      each storage's bytes, numel x the element size
///     <top>/byteorder       "little" or "big" (absent before torch 1.13: little)
///     <top>/version, .format_version, .storage_alignment, .data/serialization_id
///
/// `read` returns the object as values (`PickleValue`): it accepts what torch.load(weights_only=True)
/// accepts for a dict of tensors and numbers, refuses every other global and the opcodes that build
/// objects, and never runs anything from the file. Every size is bounded and every tensor view is
/// checked against its storage before an element is read.
public enum TorchArchive {
    /// The first bytes of a zip file (a local header), as torch.save writes first.
    public static let zipMagic: [UInt8] = [0x50, 0x4B, 0x03, 0x04]
    /// The most elements of all tensors in one file (SGLang's default buffer of 1000 passes x 61
    /// layers x 256 experts is 15.6 million).
    public static let maxElements = 1 << 26

    public static func read(_ bytes: [UInt8], file: String) throws(TorchArchiveError) -> PickleValue {
        let zip = try ZipReader(bytes, file: file)
        func layout(_ m: String) -> TorchArchiveError { TorchArchiveError(.archiveLayout, file: file, m) }
        guard let pickle = zip.members.first(where: { $0.name.hasSuffix("/data.pkl") && !$0.name.dropLast(9).contains("/") }) else {
            throw layout("no <name>/data.pkl: a zip, but not one torch.save wrote (members: \(zip.members.prefix(5).map { PickleMachine.printable($0.name) }.joined(separator: ", ")))")
        }
        let top = String(pickle.name.dropLast("data.pkl".count))
        if let stray = zip.members.first(where: { !$0.name.hasPrefix(top) }) {
            throw layout("member \(PickleMachine.printable(stray.name)) is outside \(PickleMachine.printable(top)), the directory of data.pkl")
        }
        var members: [String: Range<Int>] = [:]
        for m in zip.members { members[String(m.name.dropFirst(top.count))] = m.data }
        let bigEndian: Bool
        switch members["byteorder"].map({ String(decoding: bytes[$0], as: UTF8.self) }) {
        case nil, "little": bigEndian = false
        case "big": bigEndian = true
        case let other?: throw layout("byteorder is \"\(PickleMachine.printable(other))\", neither little nor big")
        }

        var storageBytes: [String: ArraySlice<UInt8>] = [:]
        for (name, range) in members where name.hasPrefix("data/") { storageBytes[String(name.dropFirst(5))] = bytes[range] }
        return try unpickle(bytes[pickle.data], storages: storageBytes, bigEndian: bigEndian, file: file)
    }

    /// Runs the pickle machine on `code` (a data.pkl), with the storages' bytes by key: `read`
    /// after the zip, and the fuzz target on bare pickles (the zip's CRC-32 keeps a fuzzer's
    /// mutations out of data.pkl otherwise).
    public static func unpickle(_ code: ArraySlice<UInt8>, storages storageBytes: [String: ArraySlice<UInt8>], bigEndian: Bool = false,
                                file: String) throws(TorchArchiveError) -> PickleValue {
        var storages: [String: (Storage, TorchDtype)] = [:]
        var elements = 0
        let machine = PickleMachine(code: code, file: file) { ref, offset, shape, strides throws(TorchArchiveError) in
            func invalid(_ m: String) -> TorchArchiveError { TorchArchiveError(.tensorInvalid, file: file, "data/\(PickleMachine.printable(ref.key)): \(m)") }
            let storage: Storage
            if let (s, dtype) = storages[ref.key] {
                guard dtype == ref.dtype else { throw invalid("read as \(dtype.rawValue) and as \(ref.dtype.rawValue)") }
                storage = s
            } else {
                guard let data = storageBytes[ref.key] else {
                    throw TorchArchiveError(.archiveLayout, file: file, "data/\(PickleMachine.printable(ref.key)), a tensor's storage, is missing")
                }
                let (need, overflow) = ref.count.multipliedReportingOverflow(by: ref.dtype.size)
                guard !overflow, data.count == need else {
                    throw invalid("\(data.count) bytes, but \(ref.count) \(ref.dtype.rawValue) elements need \(overflow ? "more than 2^63" : String(need))")
                }
                storage = Storage(Array(data))
                storages[ref.key] = (storage, ref.dtype)
            }
            try check(offset: offset, shape: shape, strides: strides, storageCount: ref.count, invalid)
            let count = shape.reduce(1, *)  // checked above not to overflow
            elements += count
            guard elements <= maxElements else {
                throw TorchArchiveError(.tooLarge, file: file, "tensors of more than \(maxElements) elements in all")
            }
            return TorchTensor(dtype: ref.dtype, shape: shape, strides: strides, offset: offset, storage: storage, bigEndian: bigEndian)
        }
        return try machine.run()
    }

    /// A view inside its storage: no negative number, the element count and the last element's
    /// index computed without overflow, and that index below the storage's count.
    static func check(offset: Int, shape: [Int], strides: [Int], storageCount: Int,
                      _ invalid: (String) -> TorchArchiveError) throws(TorchArchiveError) {
        guard shape.count <= 32 else { throw invalid("\(shape.count) dimensions") }
        guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw invalid("a negative offset, size or stride (offset \(offset), size \(shape), stride \(strides))")
        }
        var count = 1
        for d in shape {
            let (c, o) = count.multipliedReportingOverflow(by: d)
            guard !o, c <= maxElements else { throw invalid("size \(shape) has more than \(maxElements) elements") }
            count = c
        }
        guard count > 0 else { return }
        var last = offset
        for (d, s) in zip(shape, strides) {
            let (step, o1) = (d - 1).multipliedReportingOverflow(by: s)
            let (sum, o2) = last.addingReportingOverflow(step)
            guard !o1, !o2 else { throw invalid("offset \(offset), size \(shape), stride \(strides) overflow") }
            last = sum
        }
        guard last < storageCount else {
            throw invalid("offset \(offset), size \(shape), stride \(strides) reach element \(last), but the storage holds \(storageCount)")
        }
    }
}
