/// Test vectors are written as hex with optional quoted ASCII runs, as in
/// ../shared/reference/containerd-shim-v2.md: `0a02 "c1" 182a`.
public func vector(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    var digits: [Character] = []
    var inQuote = false
    for ch in text {
        if inQuote {
            if ch == "\"" { inQuote = false } else { out.append(contentsOf: Array(String(ch).utf8)) }
            continue
        }
        if ch == "\"" { inQuote = true; continue }
        guard ch.isHexDigit else { continue }
        digits.append(ch)
        if digits.count == 2 {
            out.append(UInt8(String(digits), radix: 16)!)
            digits.removeAll()
        }
    }
    precondition(digits.isEmpty && !inQuote, "odd vector: \(text)")
    return out
}

public func hex(_ bytes: [UInt8]) -> String {
    bytes.map { b in
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }.joined()
}
