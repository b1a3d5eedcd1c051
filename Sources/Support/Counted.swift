/// "1 layer", "2 layers", "0 layers": a count with its noun, plural unless the count is 1.
/// `plural` for nouns that do not just take an "s" ("1 entry", "3 entries").
public func counted(_ n: Int, _ noun: String, plural: String? = nil) -> String {
    "\(n) \(n == 1 ? noun : plural ?? noun + "s")"
}
