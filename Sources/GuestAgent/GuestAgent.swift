#if canImport(Glibc)
import Glibc
#endif
import Protocols
import SystemKit
import TTRPC

/// The agent: serves ttRPC on the agent channel for as long as the VM runs.
///
/// The host may close and reopen its end at any time (a restarted shim): the agent then
/// reopens the port and serves the new connection.
public final class GuestAgent: Sendable {
    private let log: Logger
    private let server: TTRPCServer
    public let sandbox: SandboxService
    public let containers: ContainerService

    public init(log: Logger, reaper: Reaper, powerOff: @escaping @Sendable (String) -> Void) {
        self.log = log
        self.server = TTRPCServer()
        self.sandbox = SandboxService(log: log, powerOff: powerOff)
        self.containers = ContainerService(log: log, reaper: reaper)
        sandbox.register(on: server)
        containers.register(on: server)
    }

    /// The vsock port the agent listens on when the channel is vsock (Kata's default).
    public static let vsockPort: UInt32 = 1024

    /// Finds the channel (the virtio-serial port called `portName`, waiting up to `timeout` for
    /// it to appear; or vsock port 1024 when `portName` is "vsock" or no port exists but a
    /// virtio-vsock device does) and serves it forever. Throws only if no channel can be served.
    public func run(portName: String = AgentChannel.portName, timeout: Duration = .seconds(30)) async throws -> Never {
        if portName == "vsock" { try await serveVsock() }
        let deadline = ContinuousClock.now + timeout
        var path: String? = AgentChannel.findPort(named: portName)
        while path == nil {
            guard ContinuousClock.now < deadline else {
                if AgentChannel.vsockDevicePresent() { try await serveVsock() }
                throw Errno(ENODEV, "virtio-serial port \(portName) did not appear within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(10))
            path = AgentChannel.findPort(named: portName)
        }
        let port = path!
        log.info("agent channel found", ("port", port), ("version", SandboxService.version))
        var connections = 0
        while true {
            let fd: FileDescriptor
            do {
                fd = try AgentChannel.open(port)
            } catch {
                log.error("cannot open agent channel", ("port", port), ("error", "\(error)"))
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            // While no host is connected the port reports POLLHUP: wait for one.
            guard AgentChannel.hostConnected(fd.rawValue) else {
                fd.close()
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            connections += 1
            log.info("host connected", ("connection", String(connections)))
            let raw = fd.take()  // ownership passes to the server inside the continuation
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                do {
                    try server.serve(connection: FileDescriptor(taking: raw)) { done.resume() }
                } catch {
                    log.error("cannot serve agent channel", ("error", "\(error)"))
                    done.resume()
                }
            }
            log.info("host disconnected", ("connection", String(connections)))
        }
    }

    /// Serves every host connection on vsock port 1024.
    private func serveVsock() async throws -> Never {
        try server.serve(listener: VsockSocket.listen(port: Self.vsockPort))
        log.info("agent listening", ("vsock_port", String(Self.vsockPort)), ("version", SandboxService.version))
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}
