import SafetensorsFormat
import StrictJSON

/// Reading `model.safetensors.index.json`: mapped, walked directly (weight_map can hold ~100k entries, and a
/// generic tree of them would cost more than everything else in `inspect`), strictly (a repeated key or
/// tensor name is an error).
extension Checkpoint {
    static func readIndex(path: String) throws(InvalidInput) -> Index {
        let mapping = try mapIndex(path)
        var entries: NameTable<Slot>? = nil
        var shards: [String] = []
        var metadata: JSONValue? = nil
        do {
            try { (buf: UnsafeRawBufferPointer) throws in
                try JSONParser.checkEncoding(buf)
                var scanner = JSONScanner(buf)
                scanner.skipWhitespace()
                guard scanner.peek() == UInt8(ascii: "{") else {
                    throw Problem(file: path, rule: .indexInvalid, "index must be a JSON object")
                }
                var seen = Set<String>()
                try scanner.scanObject(depth: 1) { s, key, offset in
                    guard seen.insert(key).inserted else {
                        throw JSONError(.duplicateKey, at: offset, "duplicate key \"\(key)\"")
                    }
                    switch key {
                    case "weight_map":
                        entries = try scanWeightMap(&s, path: path, mapping: mapping, document: buf, shards: &shards)
                    case "metadata":
                        metadata = try s.parseValue(depth: 2)
                    default:
                        _ = try s.parseValue(depth: 2)
                    }
                }
                try scanner.expectEndOfDocument()
            }(mapping.bytes(0..<mapping.size))
        } catch let p as Problem {
            throw InvalidInput(p)
        } catch {
            throw InvalidInput(Problem(file: path, rule: .indexInvalidJSON, "\(error)"))
        }
        guard let entries else {
            throw InvalidInput(Problem(file: path, rule: .indexInvalid, "index has no \"weight_map\" object"))
        }
        return Index(entries: entries, shards: shards, totalSize: try totalSize(metadata, path: path))
    }

    /// The index, mapped; DeepSeek-V3's is 9 MB, and a gigabyte is not an index but an attack or an accident.
    static func mapIndex(_ path: String) throws(InvalidInput) -> MappedFile {
        let mapping: MappedFile
        do {
            mapping = try mapFile(path)
        } catch {
            throw InvalidInput(Problem(file: path, rule: .unreadable, "\(error)"))
        }
        guard mapping.size <= Checkpoint.maxIndexBytes else {
            throw InvalidInput(Problem(file: path, rule: .indexInvalid,
                "index is \(mapping.size) bytes, above the limit of \(Checkpoint.maxIndexBytes)"))
        }
        return mapping
    }

    /// weight_map's entries, each name with the position of its shard in `shards` (shard names in order of
    /// first appearance). The names stay in the mapped index: no String per tensor name.
    static func scanWeightMap(_ s: inout JSONScanner, path: String, mapping: MappedFile, document: UnsafeRawBufferPointer,
                              shards: inout [String]) throws -> NameTable<Slot> {
        guard s.peek() == UInt8(ascii: "{") else {
            throw Problem(file: path, rule: .indexInvalid, "\"weight_map\" must be an object")
        }
        var map = NameTable<Slot>(minimumCapacity: min(document.count / 80, 1 << 20), backing: mapping, bytes: document)
        var shardIndex: [String: Int32] = [:]
        var last = ""
        var lastIndex: Int32 = -1
        var found = shards
        try s.scanObjectRawKeys(depth: 2) { s, name, offset in
            guard s.peek() == UInt8(ascii: "\"") else {
                let value = try s.parseValue(depth: 3)
                throw Problem(file: path, tensor: String(decoding: name, as: UTF8.self), rule: .indexInvalid,
                    "weight_map value must be a shard file name, found \(value.kindName)")
            }
            // Runs of names share a shard: reuse it without hashing.
            let shard = try s.parseString(reusing: last)
            if lastIndex < 0 || shard != last {
                if let known = shardIndex[shard] {
                    lastIndex = known
                } else {
                    lastIndex = Int32(found.count)
                    shardIndex[shard] = lastIndex
                    found.append(shard)
                }
                last = shard
            }
            guard map.insert(bytes: name, Slot(listed: lastIndex)).inserted else {
                throw Problem(file: path, tensor: String(decoding: name, as: UTF8.self), rule: .indexInvalidJSON,
                    "tensor listed twice in weight_map (byte \(offset))")
            }
        }
        shards = found
        return map
    }

    /// metadata.total_size, when there is one. Some exporters write it as a float: accepted when integral.
    static func totalSize(_ metadata: JSONValue?, path: String) throws(InvalidInput) -> UInt64? {
        guard let metadata, metadata != .null else { return nil }
        guard let m = metadata.objectValue else {
            throw InvalidInput(Problem(file: path, rule: .indexInvalid, "\"metadata\" must be an object"))
        }
        guard let t = m["total_size"], t != .null else { return nil }
        if let u = t.uint64Value { return u }
        if let d = t.doubleValue, d >= 0, d == d.rounded(), d < 1.8e19 { return UInt64(d) }
        throw InvalidInput(Problem(file: path, rule: .indexInvalid, "metadata.total_size must be a byte count, found \(t)"))
    }
}
