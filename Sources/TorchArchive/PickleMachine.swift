/// A strict pickle machine for what torch.save writes (protocol 2, a few later opcodes that only
/// build data): it builds dicts, lists, tuples, strings, numbers and tensors, and nothing else.
/// Python's pickle calls whatever a GLOBAL names through REDUCE; here a GLOBAL must be one of the
/// three torch.load(weights_only=True) needs for a dict of tensors (`collections.OrderedDict`,
/// `torch._utils._rebuild_tensor_v2`, a `torch.*Storage` class), and it is never called: REDUCE
/// on them is interpreted (an empty OrderedDict, a tensor view). Any other global, and the opcodes
/// that set attributes or build objects (BUILD, NEWOBJ, INST, OBJ, EXT*), are refused by name.
struct PickleMachine {
    /// The limits of a load file's pickle (SGLang's is a dict of three members).
    static let maxMemo = 1 << 20
    static let maxStack = 1 << 20
    static let maxDepth = 64
    /// The most values in the result, counting a shared one each time it appears (a list of two
    /// references to a list of two references ... would otherwise expand to 2^64 values).
    static let maxValues = 1 << 22

    /// A storage named by a persistent id: its dtype, key (the member `data/<key>`) and element count.
    struct StorageRef {
        let dtype: TorchDtype
        let key: String
        let count: Int
    }

    /// Lists and dicts are shared and changed in place (APPEND after BINPUT), as in pickle.
    final class Container {
        var items: [Item] = []
        var entries: [(Item, Item)] = []
        let isDict: Bool
        init(isDict: Bool) { self.isDict = isDict }
    }

    enum Global: Equatable {
        case orderedDict, rebuildTensor
        case storageClass(TorchDtype)
    }

    enum Item {
        case value(PickleValue)
        case tuple([Item])
        case container(Container)
        case global(Global)
        case storage(StorageRef)
        case mark
    }

    let code: ArraySlice<UInt8>
    let file: String
    /// Makes a tensor from a storage reference and the view's numbers (checked there).
    let rebuild: (StorageRef, _ offset: Int, _ shape: [Int], _ strides: [Int]) throws(TorchArchiveError) -> TorchTensor

    func fail(_ at: Int, _ m: String) -> TorchArchiveError {
        TorchArchiveError(.pickleInvalid, file: file, "byte \(at - code.startIndex): \(m)")
    }

    func run() throws(TorchArchiveError) -> PickleValue {
        var stack: [Item] = []
        var memo: [Int: Item] = [:]
        var p = code.startIndex
        let end = code.endIndex

        func take(_ n: Int, _ at: Int) throws(TorchArchiveError) -> ArraySlice<UInt8> {
            guard n >= 0, n <= end - p else { throw fail(at, "cut short (an argument of \(n) bytes runs past the end)") }
            defer { p += n }
            return code[p..<(p + n)]
        }
        func le(_ n: Int, _ at: Int) throws(TorchArchiveError) -> UInt64 {
            var v: UInt64 = 0
            for (k, b) in try take(n, at).enumerated() { v |= UInt64(b) << (8 * UInt64(k)) }
            return v
        }
        func pop(_ at: Int) throws(TorchArchiveError) -> Item {
            guard let top = stack.popLast() else { throw fail(at, "the stack is empty") }
            if case .mark = top { throw fail(at, "a value was expected, a MARK found") }
            return top
        }
        func popToMark(_ at: Int) throws(TorchArchiveError) -> [Item] {
            guard let m = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else {
                throw fail(at, "no MARK on the stack")
            }
            let items = Array(stack[(m + 1)...])
            stack.removeSubrange(m...)
            return items
        }
        func push(_ item: Item, _ at: Int) throws(TorchArchiveError) {
            guard stack.count < Self.maxStack else {
                throw TorchArchiveError(.tooLarge, file: file, "data.pkl: more than \(Self.maxStack) values on the pickle stack")
            }
            stack.append(item)
        }
        func put(_ index: Int, _ at: Int) throws(TorchArchiveError) {
            guard let top = stack.last else { throw fail(at, "nothing to memoize") }
            guard memo.count < Self.maxMemo || memo[index] != nil else {
                throw TorchArchiveError(.tooLarge, file: file, "data.pkl: more than \(Self.maxMemo) memo entries")
            }
            memo[index] = top
        }
        func string(_ bytes: ArraySlice<UInt8>, _ at: Int) throws(TorchArchiveError) -> String {
            guard let s = String(validating: bytes, as: UTF8.self) else { throw fail(at, "a string that is not UTF-8") }
            return s
        }

        while p < end {
            let at = p
            let op = code[p]
            p += 1
            switch op {
            case 0x80:  // PROTO
                let v = try le(1, at)
                guard v >= 2 && v <= 5 else { throw fail(at, "pickle protocol \(v); torch.save writes protocol 2") }
            case 0x95:  // FRAME: a length hint only
                _ = try le(8, at)
            case UInt8(ascii: "."):  // STOP
                let result = try pop(at)
                guard stack.isEmpty else { throw fail(at, "STOP with \(stack.count) more values on the stack") }
                var budget = Self.maxValues
                return try value(result, depth: 0, budget: &budget)
            case UInt8(ascii: "}"): try push(.container(Container(isDict: true)), at)
            case UInt8(ascii: "]"): try push(.container(Container(isDict: false)), at)
            case UInt8(ascii: ")"): try push(.tuple([]), at)
            case UInt8(ascii: "("): try push(.mark, at)
            case UInt8(ascii: "t"): try push(.tuple(try popToMark(at)), at)
            case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
                let n = Int(op - 0x84)
                var items: [Item] = []
                for _ in 0..<n { items.insert(try pop(at), at: 0) }
                try push(.tuple(items), at)
            case UInt8(ascii: "0"): _ = try pop(at)  // POP
            case UInt8(ascii: "1"): _ = try popToMark(at)  // POP_MARK
            case UInt8(ascii: "2"):  // DUP
                let top = try pop(at)
                try push(top, at)
                try push(top, at)
            case UInt8(ascii: "q"): try put(Int(try le(1, at)), at)  // BINPUT
            case UInt8(ascii: "r"): try put(Int(try le(4, at)), at)  // LONG_BINPUT
            case 0x94: try put(memo.count, at)  // MEMOIZE
            case UInt8(ascii: "h"), UInt8(ascii: "j"):  // BINGET, LONG_BINGET
                let index = Int(try le(op == UInt8(ascii: "h") ? 1 : 4, at))
                guard let item = memo[index] else { throw fail(at, "memo entry \(index) was never stored") }
                try push(item, at)
            case UInt8(ascii: "N"): try push(.value(.none), at)
            case 0x88: try push(.value(.bool(true)), at)
            case 0x89: try push(.value(.bool(false)), at)
            case UInt8(ascii: "K"): try push(.value(.int(Int64(try le(1, at)))), at)  // BININT1
            case UInt8(ascii: "M"): try push(.value(.int(Int64(try le(2, at)))), at)  // BININT2
            case UInt8(ascii: "J"): try push(.value(.int(Int64(Int32(truncatingIfNeeded: try le(4, at))))), at)  // BININT
            case 0x8A:  // LONG1: n bytes of two's complement, little-endian
                let n = Int(try le(1, at))
                guard n <= 8 else { throw fail(at, "an integer of \(n) bytes, larger than 64 bits") }
                var v = try le(n, at)
                if n > 0 && n < 8 && v & (1 << (8 * UInt64(n) - 1)) != 0 { v |= ~0 << (8 * UInt64(n)) }
                try push(.value(.int(Int64(bitPattern: v))), at)
            case UInt8(ascii: "G"):  // BINFLOAT: big-endian
                let bytes = try take(8, at)
                var bits: UInt64 = 0
                for b in bytes { bits = bits << 8 | UInt64(b) }
                try push(.value(.float(Double(bitPattern: bits))), at)
            case UInt8(ascii: "X"), 0x8C, 0x8D:  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                let width = op == UInt8(ascii: "X") ? 4 : op == 0x8C ? 1 : 8
                let n = try le(width, at)
                guard n <= UInt64(end - p) else { throw fail(at, "a string of \(n) bytes runs past the end") }
                try push(.value(.string(try string(try take(Int(n), at), at))), at)
            case UInt8(ascii: "C"), UInt8(ascii: "B"), 0x8E:  // SHORT_BINBYTES, BINBYTES, BINBYTES8
                let width = op == UInt8(ascii: "C") ? 1 : op == UInt8(ascii: "B") ? 4 : 8
                let n = try le(width, at)
                guard n <= UInt64(end - p) else { throw fail(at, "bytes of \(n) run past the end") }
                try push(.value(.bytes(Array(try take(Int(n), at)))), at)
            case UInt8(ascii: "a"):  // APPEND
                let v = try pop(at)
                guard case .container(let list)? = stack.last, !list.isDict else { throw fail(at, "APPEND to something that is not a list") }
                list.items.append(v)
            case UInt8(ascii: "e"):  // APPENDS
                let items = try popToMark(at)
                guard case .container(let list)? = stack.last, !list.isDict else { throw fail(at, "APPENDS to something that is not a list") }
                list.items.append(contentsOf: items)
            case UInt8(ascii: "s"):  // SETITEM
                let v = try pop(at), k = try pop(at)
                guard case .container(let dict)? = stack.last, dict.isDict else { throw fail(at, "SETITEM on something that is not a dict") }
                dict.entries.append((k, v))
            case UInt8(ascii: "u"):  // SETITEMS
                let items = try popToMark(at)
                guard case .container(let dict)? = stack.last, dict.isDict else { throw fail(at, "SETITEMS on something that is not a dict") }
                guard items.count % 2 == 0 else { throw fail(at, "SETITEMS with an odd number of values") }
                for k in stride(from: 0, to: items.count, by: 2) { dict.entries.append((items[k], items[k + 1])) }
            case UInt8(ascii: "c"):  // GLOBAL module\nname\n
                let module = try line(&p, at), name = try line(&p, at)
                try push(.global(try global(module, name, at)), at)
            case 0x93:  // STACK_GLOBAL
                let nameItem = try pop(at), moduleItem = try pop(at)
                guard case .value(.string(let name)) = nameItem, case .value(.string(let module)) = moduleItem else {
                    throw fail(at, "STACK_GLOBAL without two strings")
                }
                try push(.global(try global(module, name, at)), at)
            case UInt8(ascii: "Q"):  // BINPERSID
                try push(.storage(try storage(try pop(at), at)), at)
            case UInt8(ascii: "R"):  // REDUCE: the callable is one of the allowed globals, interpreted
                let args = try pop(at), callable = try pop(at)
                try push(try reduce(callable, args, at), at)
            default:
                throw TorchArchiveError(.opcodeRefused, file: file, "data.pkl byte \(at - code.startIndex): opcode \(Self.opcodeName(op)) is refused")
            }
        }
        throw fail(p, "cut short: no STOP")
    }

    /// A GLOBAL's text argument: bytes up to a newline.
    func line(_ p: inout Int, _ at: Int) throws(TorchArchiveError) -> String {
        var q = p
        while q < code.endIndex && code[q] != 0x0A {
            q += 1
            guard q - p <= 256 else { throw fail(at, "a GLOBAL name longer than 256 bytes") }
        }
        guard q < code.endIndex else { throw fail(at, "cut short inside a GLOBAL") }
        defer { p = q + 1 }
        guard let s = String(validating: code[p..<q], as: UTF8.self) else { throw fail(at, "a GLOBAL name that is not UTF-8") }
        return s
    }

    func global(_ module: String, _ name: String, _ at: Int) throws(TorchArchiveError) -> Global {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensor
        case ("torch", _), ("torch.storage", "UntypedStorage"):
            if let dtype = TorchDtype(storageClass: name) { return .storageClass(dtype) }
        default: break
        }
        throw TorchArchiveError(.globalRefused, file: file,
                                "data.pkl byte \(at - code.startIndex): global \(Self.printable(module)).\(Self.printable(name)) is not one torch.load(weights_only=True) allows; nothing was run")
    }

    /// `('storage', torch.<T>Storage, key, location, element count)`, torch's persistent id.
    func storage(_ pid: Item, _ at: Int) throws(TorchArchiveError) -> StorageRef {
        guard case .tuple(let t) = pid, t.count == 5, case .value(.string("storage")) = t[0],
              case .global(.storageClass(let dtype)) = t[1], case .value(.string(let key)) = t[2],
              case .value(.string) = t[3], case .value(.int(let n)) = t[4], n >= 0
        else { throw fail(at, "a persistent id that is not ('storage', torch.<type>Storage, key, location, size)") }
        return StorageRef(dtype: dtype, key: key, count: Int(n))
    }

    func reduce(_ callable: Item, _ args: Item, _ at: Int) throws(TorchArchiveError) -> Item {
        guard case .global(let g) = callable, case .tuple(let a) = args else {
            throw fail(at, "REDUCE of something that is not an allowed global applied to a tuple")
        }
        switch g {
        case .orderedDict:
            // OrderedDict() — torch writes the (empty) backward hooks this way; entries follow by SETITEMS.
            guard a.isEmpty else { throw fail(at, "OrderedDict called with arguments") }
            return .container(Container(isDict: true))
        case .rebuildTensor:
            // (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard a.count == 6 || a.count == 7, case .storage(let s) = a[0], case .value(.int(let offset)) = a[1],
                  let shape = ints(a[2]), let strides = ints(a[3]), shape.count == strides.count, case .value(.bool) = a[4]
            else { throw TorchArchiveError(.tensorInvalid, file: file, "data.pkl byte \(at - code.startIndex): _rebuild_tensor_v2 with arguments that are not (storage, offset, size, stride, requires_grad, hooks)") }
            return .value(.tensor(try rebuild(s, Int(offset), shape, strides)))
        case .storageClass:
            throw TorchArchiveError(.globalRefused, file: file, "data.pkl byte \(at - code.startIndex): a storage class called directly; torch.save names storages by persistent id")
        }
    }

    func ints(_ item: Item) -> [Int]? {
        guard case .tuple(let t) = item else { return nil }
        var out: [Int] = []
        for v in t {
            guard case .value(.int(let i)) = v else { return nil }
            out.append(Int(i))
        }
        return out
    }

    /// The finished value; a list that contains itself is refused by depth.
    func value(_ item: Item, depth: Int, budget: inout Int) throws(TorchArchiveError) -> PickleValue {
        guard depth < Self.maxDepth else {
            throw TorchArchiveError(.tooLarge, file: file, "data.pkl: values nested deeper than \(Self.maxDepth) (or a list that contains itself)")
        }
        budget -= 1
        guard budget >= 0 else {
            throw TorchArchiveError(.tooLarge, file: file, "data.pkl: more than \(Self.maxValues) values (counting shared ones each time they appear)")
        }
        switch item {
        case .value(let v): return v
        case .tuple(let t):
            var out: [PickleValue] = []
            for v in t { out.append(try value(v, depth: depth + 1, budget: &budget)) }
            return .tuple(out)
        case .container(let c):
            if c.isDict {
                var out: [PickleValue.Entry] = []
                for (k, v) in c.entries { out.append(PickleValue.Entry(key: try value(k, depth: depth + 1, budget: &budget), value: try value(v, depth: depth + 1, budget: &budget))) }
                return .dict(out)
            }
            var out: [PickleValue] = []
            for v in c.items { out.append(try value(v, depth: depth + 1, budget: &budget)) }
            return .list(out)
        case .global, .storage, .mark:
            throw fail(code.endIndex, "the result holds a class, a storage or a MARK, not data")
        }
    }

    /// Names of the opcodes pickle has (for the refusal message), else the byte.
    static func opcodeName(_ op: UInt8) -> String {
        let names: [UInt8: String] = [
            UInt8(ascii: "b"): "BUILD", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", UInt8(ascii: "i"): "INST", UInt8(ascii: "o"): "OBJ",
            0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", UInt8(ascii: "P"): "PERSID", UInt8(ascii: "I"): "INT",
            UInt8(ascii: "L"): "LONG", UInt8(ascii: "F"): "FLOAT", UInt8(ascii: "S"): "STRING", UInt8(ascii: "V"): "UNICODE",
            UInt8(ascii: "U"): "SHORT_BINSTRING", UInt8(ascii: "T"): "BINSTRING", UInt8(ascii: "d"): "DICT", UInt8(ascii: "l"): "LIST",
            UInt8(ascii: "p"): "PUT", UInt8(ascii: "g"): "GET", 0x8B: "LONG4", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
            0x91: "FROZENSET", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
        ]
        return names[op].map { "\($0) (0x\(String(op, radix: 16)))" } ?? "0x\(String(op, radix: 16))"
    }

    /// A name from the file, with control characters escaped so it cannot rewrite a terminal.
    static func printable(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars.prefix(200) {
            if u.value < 0x20 || u.value == 0x7F || (u.value >= 0x80 && u.value < 0xA0) { out += "\\u{\(String(u.value, radix: 16))}" } else { out.unicodeScalars.append(u) }
        }
        return out
    }
}
