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

    public init(log: Logger, powerOff: @escaping @Sendable (String) -> Void) {
        self.log = log
        self.server = TTRPCServer()
        self.sandbox = SandboxService(log: log, powerOff: powerOff)
        sandbox.register(on: server)
    }

    /// Finds the virtio-serial port (waiting up to `portTimeout` for it to appear) and serves
    /// it forever. Throws only if the port never appears.
    public func run(portTimeout: Duration = .seconds(30)) async throws -> Never {
        let deadline = ContinuousClock.now + portTimeout
        var path: String? = AgentChannel.findPort()
        while path == nil {
            guard ContinuousClock.now < deadline else {
                throw Errno(ENODEV, "virtio-serial port \(AgentChannel.portName) did not appear within \(portTimeout)")
            }
            try await Task.sleep(for: .milliseconds(10))
            path = AgentChannel.findPort()
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
}
