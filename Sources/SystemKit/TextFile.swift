#if canImport(Glibc)
import Glibc
#endif

/// Small whole-file reads (sysfs, /proc, logs, manifests) and console output, without
/// Foundation. Blocking: for regular files and start-up paths only, never for pipes.
public enum TextFile {
    /// The file's bytes (up to `limit`), or nil if it cannot be opened.
    public static func readBytes(_ path: String, limit: Int = 64 << 20) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = Glibc.read(fd, &buf, min(buf.count, limit - out.count))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    /// The file as UTF-8 text (invalid bytes repaired), or nil if it cannot be opened.
    public static func read(_ path: String, limit: Int = 64 << 20) -> String? {
        readBytes(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The names in a directory (sysfs, /proc; "." and ".." left out), or nil if it cannot
    /// be opened.
    public static func directoryEntries(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The last `lines` non-empty lines ("" if the file cannot be read).
    public static func tail(_ path: String, lines: Int) -> String {
        (read(path) ?? "").split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Writes `text` and a newline to `fd` in one write(2).
    public static func writeLine(_ text: String, to fd: CInt = 1) {
        let bytes = Array((text + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}
