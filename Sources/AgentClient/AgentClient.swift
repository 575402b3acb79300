#if canImport(Glibc)
import Glibc
#endif
import Protocols
import SystemKit
import TTRPC

/// Dialing the agent failed within the dial timeout. Carries the last error and the last lines
/// of the guest console, which usually say why (kernel panic, agent error).
public struct AgentDialError: Error, CustomStringConvertible, Sendable {
    public let address: String
    public let waited: Duration
    public let lastError: String
    public let consoleTail: String

    public var description: String {
        var s = "agent at \(address) not ready after \(waited): \(lastError)"
        if !consoleTail.isEmpty { s += "\nlast guest console lines:\n\(consoleTail)" }
        return s
    }
}

/// Typed host-side client of the guest agent (`grpc.AgentService`, `grpc.Health`).
///
/// Thread-safe; calls may run concurrently over the one ttRPC connection.
public final class AgentClient: Sendable {
    /// Where the agent is reached.
    public enum Address: Sendable, Hashable, CustomStringConvertible {
        /// QEMU's chardev socket behind the virtio-serial port.
        case virtioSerial(socketPath: String)
        case vsock(cid: UInt32, port: UInt32)

        public var description: String {
            switch self {
            case .virtioSerial(let p): return "virtio-serial \(p)"
            case .vsock(let c, let p): return "vsock://\(c):\(p)"
            }
        }
    }

    public let address: Address
    public let ttrpc: TTRPCClient

    private init(address: Address, ttrpc: TTRPCClient) {
        self.address = address
        self.ttrpc = ttrpc
    }

    /// Connects and confirms with Health.Check, retrying with backoff until `timeout`
    /// (`[agent.kata] dial_timeout`). `abort` is polled between attempts: a non-nil reason
    /// (e.g. "QEMU exited") ends the wait at once. On failure the error includes the last
    /// lines of `consoleLog`.
    public static func dial(_ address: Address, timeout: Duration, consoleLog: String? = nil,
                            abort: (@Sendable () -> String?)? = nil, reactor: Reactor = .shared) async throws -> AgentClient {
        let started = ContinuousClock.now
        let deadline = started + timeout
        var backoff = Duration.milliseconds(5)
        var lastError = "not attempted"
        var connection: TTRPCClient?
        func fail(_ reason: String) -> AgentDialError {
            connection?.close()
            return AgentDialError(address: address.description, waited: .now - started, lastError: reason,
                                  consoleTail: consoleLog.map { TextFile.tail($0, lines: 15) } ?? "")
        }
        while true {
            if let reason = abort?() { throw fail(reason) }
            guard ContinuousClock.now < deadline else { throw fail(lastError) }
            do {
                if connection == nil || connection!.isClosed {
                    connection = try await connect(address, reactor: reactor)
                }
                // The chardev accepts before the guest listens; the request then waits in the
                // port until the agent reads it, so a short per-attempt timeout is retried.
                let attempt = min(Duration.milliseconds(500), deadline - .now)
                let health = try await connection!.call(AgentAPI.HealthService.check, AgentAPI.CheckRequest(),
                                                        timeout: max(attempt, .milliseconds(1)))
                guard health.status == .serving else {
                    lastError = "agent health is \(health.status)"
                    throw TTRPCError(.unavailable, lastError)
                }
                return AgentClient(address: address, ttrpc: connection!)
            } catch {
                lastError = "\(error)"
            }
            try await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .milliseconds(200))
        }
    }

    private static func connect(_ address: Address, reactor: Reactor) async throws -> TTRPCClient {
        switch address {
        case .virtioSerial(let path):
            return try TTRPCClient(taking: UnixSocket.connect(path: path), reactor: reactor)
        case .vsock(let cid, let port):
            let fd = try VsockSocket.connect(cid: cid, port: port)
            try await reactor.wait(for: .writable, on: fd.rawValue)
            let err = VsockSocket.connectError(fd.rawValue)
            if err != 0 { throw Errno(err, "vsock connect \(cid):\(port)") }
            return try TTRPCClient(taking: fd, reactor: reactor)
        }
    }

    // MARK: - Calls

    public func check(timeout: Duration = .seconds(5)) async throws -> AgentAPI.HealthCheckResponse {
        try await ttrpc.call(AgentAPI.HealthService.check, AgentAPI.CheckRequest(), timeout: timeout)
    }

    public func version(timeout: Duration = .seconds(5)) async throws -> AgentAPI.VersionCheckResponse {
        try await ttrpc.call(AgentAPI.HealthService.version, AgentAPI.CheckRequest(), timeout: timeout)
    }

    public func createSandbox(_ request: AgentAPI.CreateSandboxRequest, timeout: Duration = .seconds(30)) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.createSandbox, request, timeout: timeout)
    }

    /// Unmounts the sandbox's storages; the guest powers off right after answering.
    public func destroySandbox(timeout: Duration = .seconds(10)) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.destroySandbox, AgentAPI.DestroySandboxRequest(), timeout: timeout)
    }

    public func guestDetails(memoryBlockSize: Bool = true, timeout: Duration = .seconds(5)) async throws -> AgentAPI.GuestDetailsResponse {
        try await ttrpc.call(AgentAPI.AgentService.getGuestDetails, AgentAPI.GuestDetailsRequest(memBlockSize: memoryBlockSize),
                             timeout: timeout)
    }

    public func readGuestFile(_ path: String, offset: UInt64 = 0, length: UInt32 = 1 << 20,
                              timeout: Duration = .seconds(5)) async throws -> AgentAPI.ReadGuestFileResponse {
        try await ttrpc.call(AgentAPI.AgentService.readGuestFile,
                             AgentAPI.ReadGuestFileRequest(path: path, offset: offset, len: length), timeout: timeout)
    }

    /// Closes the connection (the agent keeps running and accepts a new one).
    public func close() {
        ttrpc.close()
    }
}
