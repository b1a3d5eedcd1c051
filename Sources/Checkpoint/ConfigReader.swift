import CJSONC
import SafetensorsFormat
import StrictJSON

/// Reads config.json with json-c. Configs are written by many tools and are not
/// a security boundary the way tensor headers are, so the reader is lenient
/// (json-c's defaults) and converts the result into a `JSONValue` tree.
public enum ConfigReader {
    public static func read(path: String, displayName: String) throws(InvalidInput) -> JSONObject {
        let text: String
        do {
            let mapping = try mapFile(path)
            guard mapping.size <= Checkpoint.maxConfigBytes else {
                throw InvalidInput(Problem(file: displayName, rule: .configInvalid,
                    "config is \(mapping.size) bytes, above the limit of \(Checkpoint.maxConfigBytes)"))
            }
            text = String(decoding: mapping.bytes(0..<mapping.size), as: UTF8.self)
        } catch let e as InvalidInput {
            throw e
        } catch {
            throw InvalidInput(Problem(file: displayName, rule: .configInvalid, "\(error)"))
        }
        var err = json_tokener_success
        guard let root = text.withCString({ json_tokener_parse_verbose($0, &err) }) else {
            let reason = String(cString: json_tokener_error_desc(err))
            throw InvalidInput(Problem(file: displayName, rule: .configInvalid, "not valid JSON: \(reason)"))
        }
        defer { json_object_put(root) }
        guard case .object(let object) = convert(root, depth: 0) else {
            throw InvalidInput(Problem(file: displayName, rule: .configInvalid, "config must be a JSON object"))
        }
        return object
    }

    private static func convert(_ o: OpaquePointer?, depth: Int) -> JSONValue {
        guard let o, depth < 256 else { return .null }
        switch json_object_get_type(o) {
        case json_type_null: return .null
        case json_type_boolean: return .bool(json_object_get_boolean(o) != 0)
        case json_type_int: return .number(JSONNumber(text: String(json_object_get_int64(o))))
        case json_type_double:
            // json-c keeps the text a double was written with: keep it (1e-06 stays 1e-06, 10000.0 stays a float).
            return .number(JSONNumber(text: String(cString: json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN))))
        case json_type_string: return .string(String(cString: json_object_get_string(o)))
        case json_type_array:
            let n = json_object_array_length(o)
            return .array((0..<n).map { convert(json_object_array_get_idx(o, $0), depth: depth + 1) })
        case json_type_object:
            var object = JSONObject()
            var it = json_object_iter_begin(o)
            var end = json_object_iter_end(o)
            while json_object_iter_equal(&it, &end) == 0 {
                let name = String(cString: json_object_iter_peek_name(&it))
                object.append(name, convert(json_object_iter_peek_value(&it), depth: depth + 1))
                json_object_iter_next(&it)
            }
            return .object(object)
        default: return .null
        }
    }
}

func mapFile(_ path: String) throws(IOError) -> MappedFile {
    do {
        return try MappedFile(path: path)
    } catch {
        throw IOError(path: path, error.description)
    }
}
