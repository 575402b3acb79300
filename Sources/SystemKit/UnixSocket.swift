#if canImport(Glibc)
import Glibc
#endif
import CLinux

/// AF_UNIX stream sockets. Every descriptor returned is non-blocking and close-on-exec.
/// A path beginning with `@` names an abstract socket.
public enum UnixSocket {
    /// Binds and listens on `path`. With `replacingStale`, an existing socket file that nobody
    /// accepts on is removed first (a live one gives EADDRINUSE).
    public static func listen(path: String, backlog: CInt = 256, replacingStale: Bool = false) throws(Errno) -> FileDescriptor {
        let r = cl_unix_listen(path, backlog)
        if r == -EADDRINUSE && replacingStale && !path.hasPrefix("@") {
            if (try? connect(path: path)) != nil { throw Errno(EADDRINUSE, "listen \(path)") }
            unlink(path)
            return FileDescriptor(taking: try check(cl_unix_listen(path, backlog), "listen \(path)"))
        }
        return FileDescriptor(taking: try check(r, "listen \(path)"))
    }

    /// Connects to `path`. Fails with EAGAIN when the listener's backlog is full.
    public static func connect(path: String) throws(Errno) -> FileDescriptor {
        FileDescriptor(taking: try check(cl_unix_connect(path), "connect \(path)"))
    }

    /// A connected pair.
    public static func pair() throws(Errno) -> DescriptorPair {
        var fds: [CInt] = [-1, -1]
        _ = try check(cl_socketpair(&fds), "socketpair")
        return DescriptorPair(first: FileDescriptor(taking: fds[0]), second: FileDescriptor(taking: fds[1]))
    }

    /// Accepts one pending connection; nil when none is pending.
    public static func accept(_ listener: CInt) throws(Errno) -> FileDescriptor? {
        let r = cl_accept(listener)
        if r == -EAGAIN || r == -EWOULDBLOCK { return nil }
        return FileDescriptor(taking: try check(r, "accept"))
    }

    /// The peer's credentials as the kernel recorded them at connect time (SO_PEERCRED).
    public static func peerCredentials(_ fd: CInt) throws(Errno) -> PeerCredentials {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        _ = try check(cl_peer_credentials(fd, &pid, &uid, &gid), "getsockopt SO_PEERCRED")
        return PeerCredentials(pid: pid, uid: uid, gid: gid)
    }
}

/// Who is on the other end of a unix socket.
public struct PeerCredentials: Sendable, Hashable {
    public let pid: pid_t
    public let uid: uid_t
    public let gid: gid_t
}

/// Makes a peer that went away show up as EPIPE instead of killing the process.
public func ignoreSIGPIPE() {
    cl_ignore_sigpipe()
}

/// AF_VSOCK stream sockets (the agent channel when the host has vhost-vsock).
public enum VsockSocket {
    /// Starts a non-blocking connect to `cid:port`; wait for writability to learn the result.
    public static func connect(cid: UInt32, port: UInt32) throws(Errno) -> FileDescriptor {
        FileDescriptor(taking: try check(cl_vsock_connect(cid, port), "vsock connect \(cid):\(port)"))
    }

    /// Listens on `port` for any CID.
    public static func listen(port: UInt32, backlog: CInt = 16) throws(Errno) -> FileDescriptor {
        FileDescriptor(taking: try check(cl_vsock_listen(port, backlog), "vsock listen \(port)"))
    }

    /// The pending error of a connecting socket (0 once connected).
    public static func connectError(_ fd: CInt) -> CInt {
        var err: CInt = 0
        var len = socklen_t(MemoryLayout<CInt>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        return err
    }
}
