#if canImport(Glibc)
import Glibc
#endif

/// A private directory under /tmp for one test, removed with everything in it by `remove()`.
public struct TempDir: Sendable {
    public let path: String

    public init(_ prefix: String = "kata-test") {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(p != nil, "mkdtemp failed")
        path = String(cString: p!)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() { Self.removeTree(path) }

    public var exists: Bool { access(path, F_OK) == 0 }

    static func removeTree(_ path: String) {
        if let dir = opendir(path) {
            var names: [String] = []
            while let e = readdir(dir) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            for n in names {
                let child = path + "/" + n
                var st = stat()
                if lstat(child, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { removeTree(child) } else { unlink(child) }
            }
        }
        rmdir(path)
    }
}

/// The repository root: tests find built helpers (.build, build/) from it.
public let repositoryRoot: String = {
    var path = #filePath
    for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
    return path
}()

/// A file a peer process should have created did not appear in time.
public struct FileDidNotAppear: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "\(path) did not appear in time" }
}

/// Waits until `path` exists (a peer process creating its socket).
public func waitForFile(_ path: String, timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while access(path, F_OK) != 0 {
        guard ContinuousClock.now < deadline else { throw FileDidNotAppear(path: path) }
        try await Task.sleep(for: .milliseconds(10))
    }
}
