#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: the errno value and the operation that produced it.
///
/// Two values are equal when their errno is; the operation is context for messages.
public struct Errno: Error, Hashable, CustomStringConvertible, Sendable {
    public let rawValue: CInt
    /// What was being done, e.g. `connect /run/x.sock`.
    public let operation: String

    public init(_ rawValue: CInt, _ operation: String = "") {
        self.rawValue = rawValue
        self.operation = operation
    }

    /// The calling thread's current errno (read it immediately after the failing call).
    public static func current(_ operation: String = "") -> Errno { Errno(errno, operation) }

    public static func == (a: Errno, b: Errno) -> Bool { a.rawValue == b.rawValue }
    public func hash(into h: inout Hasher) { h.combine(rawValue) }

    public var description: String {
        let text = String(cString: strerror(rawValue))
        return operation.isEmpty ? text : "\(operation): \(text)"
    }

    public static let notFound = Errno(ENOENT)
    public static let exists = Errno(EEXIST)
    public static let wouldBlock = Errno(EAGAIN)
    public static let interrupted = Errno(EINTR)
    public static let brokenPipe = Errno(EPIPE)
    public static let connectionRefused = Errno(ECONNREFUSED)
    public static let connectionReset = Errno(ECONNRESET)
    public static let invalid = Errno(EINVAL)
    public static let permissionDenied = Errno(EACCES)
    public static let notPermitted = Errno(EPERM)
    public static let timedOut = Errno(ETIMEDOUT)
    public static let badFileDescriptor = Errno(EBADF)
}

/// Converts the `-errno` convention of the CLinux helpers into a thrown `Errno`.
@inline(__always)
func check(_ result: CInt, _ operation: @autoclosure () -> String) throws(Errno) -> CInt {
    if result < 0 { throw Errno(-result, operation()) }
    return result
}
