#if canImport(Glibc)
import Glibc
#endif

/// A logfmt logger: one `time=… level=… msg=… key=value…` line per call, written with a single
/// write(2) to a descriptor it does not own (stderr, the console, containerd's `log` FIFO).
///
/// A value type; copies share the descriptor. Safe from any thread (each line is one write).
public struct Logger: Sendable {
    public enum Level: Int, Sendable, Comparable, CustomStringConvertible {
        case debug, info, warning, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["debug", "info", "warning", "error"][rawValue] }
    }

    public let fd: CInt
    public var minimumLevel: Level
    /// Fields added to every line (e.g. `source=agent`, `sandbox=…`).
    public var fields: [(String, String)]

    public init(fd: CInt = 2, minimumLevel: Level = .info, fields: [(String, String)] = []) {
        self.fd = fd
        self.minimumLevel = minimumLevel
        self.fields = fields
    }

    /// A copy with more fields.
    public func with(_ extra: [(String, String)]) -> Logger {
        var copy = self
        copy.fields += extra
        return copy
    }

    public func debug(_ msg: String, _ kv: (String, String)...) { log(.debug, msg, kv) }
    public func info(_ msg: String, _ kv: (String, String)...) { log(.info, msg, kv) }
    public func warning(_ msg: String, _ kv: (String, String)...) { log(.warning, msg, kv) }
    public func error(_ msg: String, _ kv: (String, String)...) { log(.error, msg, kv) }

    public func log(_ level: Level, _ msg: String, _ kv: [(String, String)]) {
        guard level >= minimumLevel else { return }
        var line = "time=\(Self.timestamp()) level=\(level) msg=\(Self.quote(msg))"
        for (k, v) in fields + kv { line += " \(k)=\(Self.quote(v))" }
        line += "\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Quotes a value when logfmt needs it (spaces, quotes, `=`, control characters, empty).
    public static func quote(_ v: String) -> String {
        let plain = !v.isEmpty && v.utf8.allSatisfy { $0 > 0x20 && $0 != 0x22 && $0 != 0x3d && $0 != 0x5c && $0 < 0x7f }
        if plain { return v }
        var out = "\""
        for ch in v.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "\""
    }

    /// RFC 3339 UTC with nanoseconds, as containerd and Kata print.
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = tm()
        var secs = ts.tv_sec
        gmtime_r(&secs, &t)
        func pad(_ v: Int32, _ n: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, n - s.count)) + s
        }
        return "\(pad(t.tm_year + 1900, 4))-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(Int32(ts.tv_nsec), 9))Z"
    }
}
