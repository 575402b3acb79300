#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// An owned file descriptor: closed exactly once, when the value is consumed or destroyed.
///
/// Non-copyable, so ownership moves explicitly (`take()` hands the raw number to a new owner).
/// Not safe to use from two threads at once; move it to the one owner that does the I/O.
public struct FileDescriptor: ~Copyable, Sendable {
    /// The descriptor number, still owned by this value.
    public let rawValue: CInt

    /// Takes ownership of `rawValue`.
    public init(taking rawValue: CInt) {
        self.rawValue = rawValue
    }

    deinit {
        if rawValue >= 0 { _ = Glibc.close(rawValue) }
    }

    /// Gives up ownership without closing; the caller now owns the number.
    public consuming func take() -> CInt {
        let raw = rawValue
        discard self
        return raw
    }

    /// Closes now.
    public consuming func close() {
        let raw = take()
        if raw >= 0 { _ = Glibc.close(raw) }
    }

    /// A pipe, both ends close-on-exec: `first` is the read end, `second` the write end.
    public static func pipe() throws(Errno) -> DescriptorPair {
        var fds: [CInt] = [-1, -1]
        _ = try check(cl_pipe(&fds), "pipe2")
        return DescriptorPair(first: FileDescriptor(taking: fds[0]), second: FileDescriptor(taking: fds[1]))
    }

    /// Opens a path with `O_CLOEXEC` added.
    public static func open(_ path: String, _ flags: CInt, mode: mode_t = 0o644) throws(Errno) -> FileDescriptor {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw Errno.current("open \(path)") }
        return FileDescriptor(taking: fd)
    }

    public func setNonBlocking(_ on: Bool = true) throws(Errno) {
        _ = try check(cl_set_nonblocking(rawValue, on ? 1 : 0), "fcntl O_NONBLOCK")
    }

    /// Writes all of `bytes`, retrying on EINTR and short writes. For blocking descriptors only
    /// (tests, start-up); never call it on the cooperative pool for a pipe that may fill.
    public func writeAll(_ bytes: [UInt8]) throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(rawValue, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Errno.current("write")
            }
            offset += n
        }
    }
}

/// Two owned descriptors created together (a pipe, a socket pair). Consume each field to take it.
@frozen
public struct DescriptorPair: ~Copyable, Sendable {
    public var first: FileDescriptor
    public var second: FileDescriptor
}

/// One non-blocking read attempt.
public enum ReadResult: Sendable, Equatable {
    case bytes(Int)
    case wouldBlock
    case endOfFile
}

/// Reads once into `buffer` from a non-blocking fd, retrying EINTR.
public func readNonBlocking(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> ReadResult {
    while true {
        let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
        if n > 0 { return .bytes(n) }
        if n == 0 { return .endOfFile }
        switch errno {
        case EINTR: continue
        case EAGAIN: return .wouldBlock
        default: throw Errno.current("read")
        }
    }
}

/// Writes once from `buffer` to a non-blocking fd, retrying EINTR; 0 means it would block.
public func writeNonBlocking(_ fd: CInt, from buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
    while true {
        let n = Glibc.write(fd, buffer.baseAddress, buffer.count)
        if n >= 0 { return n }
        switch errno {
        case EINTR: continue
        case EAGAIN: return 0
        default: throw Errno.current("write")
        }
    }
}
