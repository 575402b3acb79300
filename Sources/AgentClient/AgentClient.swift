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
            if connection == nil || connection!.isClosed {
                do {
                    connection = try await connect(address, reactor: reactor)
                    backoff = .milliseconds(5)
                } catch {
                    // QEMU has not created the socket yet, or is gone: back off and retry.
                    lastError = "\(error)"
                    try await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .milliseconds(100))
                    continue
                }
            }
            do {
                // The chardev accepts before the guest listens; the request then waits in the
                // port until the agent reads it and is answered at once. A timed-out attempt is
                // retried immediately (its late answer is dropped by stream id), so the first
                // answer is never delayed by a sleep.
                let attempt = min(Duration.seconds(2), deadline - .now)
                let health = try await connection!.call(AgentAPI.HealthService.check, AgentAPI.CheckRequest(),
                                                        timeout: max(attempt, .milliseconds(1)))
                guard health.status == .serving else {
                    lastError = "agent health is \(health.status)"
                    try await Task.sleep(for: .milliseconds(20))
                    continue
                }
                return AgentClient(address: address, ttrpc: connection!)
            } catch {
                lastError = "\(error)"
            }
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

    // MARK: - Containers

    /// Creates a container from its OCI spec (`config.json` bytes); its process is prepared but
    /// not started.
    public func createContainer(_ id: String, spec json: [UInt8], timeout: Duration = .seconds(30)) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.createContainer,
                                 AgentAPI.CreateContainerRequest(containerID: id, execID: id, ociSpecJSON: json), timeout: timeout)
    }

    public func startContainer(_ id: String, timeout: Duration = .seconds(10)) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.startContainer, AgentAPI.StartContainerRequest(containerID: id),
                                 timeout: timeout)
    }

    /// The exit code (128+signal for a death by signal), once the process ended and its output
    /// was drained. No timeout by default: it waits as long as the process runs.
    public func waitProcess(_ id: String, execID: String = "", timeout: Duration? = nil) async throws -> Int32 {
        try await ttrpc.call(AgentAPI.AgentService.waitProcess, AgentAPI.WaitProcessRequest(containerID: id, execID: execID),
                             timeout: timeout).status
    }

    /// Up to `length` bytes of stdout; empty at end of stream.
    public func readStdout(_ id: String, execID: String = "", length: UInt32 = 64 * 1024) async throws -> [UInt8] {
        try await ttrpc.call(AgentAPI.AgentService.readStdout,
                             AgentAPI.ReadStreamRequest(containerID: id, execID: execID, len: length)).data
    }

    public func readStderr(_ id: String, execID: String = "", length: UInt32 = 64 * 1024) async throws -> [UInt8] {
        try await ttrpc.call(AgentAPI.AgentService.readStderr,
                             AgentAPI.ReadStreamRequest(containerID: id, execID: execID, len: length)).data
    }

    public func writeStdin(_ id: String, execID: String = "", _ data: [UInt8]) async throws -> UInt32 {
        try await ttrpc.call(AgentAPI.AgentService.writeStdin,
                             AgentAPI.WriteStreamRequest(containerID: id, execID: execID, data: data)).len
    }

    public func closeStdin(_ id: String, execID: String = "") async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.closeStdin, AgentAPI.CloseStdinRequest(containerID: id, execID: execID))
    }

    /// Starts a process (runtime-spec `process` JSON) inside the running container `id`; it
    /// joins the container's namespaces, cgroup and seccomp profile.
    public func execProcess(_ id: String, execID: String, process json: [UInt8], timeout: Duration = .seconds(10)) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.execProcess,
                                 AgentAPI.ExecProcessRequest(containerID: id, execID: execID, processJSON: json), timeout: timeout)
    }

    public func ttyWinResize(_ id: String, execID: String = "", rows: UInt32, columns: UInt32) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.ttyWinResize,
                                 AgentAPI.TtyWinResizeRequest(containerID: id, execID: execID, row: rows, column: columns))
    }

    public func listProcesses(_ id: String) async throws -> [AgentAPI.ProcessEntry] {
        try await ttrpc.call(AgentAPI.AgentService.listProcesses, AgentAPI.ListProcessesRequest(containerID: id)).processes
    }

    public func statsContainer(_ id: String) async throws -> AgentAPI.CgroupStats {
        try await ttrpc.call(AgentAPI.AgentService.statsContainer, AgentAPI.StatsContainerRequest(containerID: id)).cgroupStats
            ?? AgentAPI.CgroupStats()
    }

    /// Applies runtime-spec `linux.resources` JSON to the running container.
    public func updateContainer(_ id: String, resources json: [UInt8]) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.updateContainer,
                                 AgentAPI.UpdateContainerRequest(containerID: id, resourcesJSON: json))
    }

    public func pauseContainer(_ id: String) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.pauseContainer, AgentAPI.PauseContainerRequest(containerID: id))
    }

    public func resumeContainer(_ id: String) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.resumeContainer, AgentAPI.ResumeContainerRequest(containerID: id))
    }

    /// The id of the next container with an OOM kill; waits for one (no timeout by default).
    public func nextOOMEvent(timeout: Duration? = nil) async throws -> String {
        try await ttrpc.call(AgentAPI.AgentService.getOOMEvent, AgentAPI.GetOOMEventRequest(), timeout: timeout).containerID
    }

    public func guestDiagnostics() async throws -> AgentAPI.GuestDiagnosticsResponse {
        try await ttrpc.call(AgentAPI.AgentService.getGuestDiagnostics, AgentAPI.GuestDiagnosticsRequest())
    }

    /// Sends `signal` to one process (`execID`, or the container id for its first process), or
    /// with an empty `execID` to every process of the container.
    public func signalProcess(_ id: String, execID: String = "", signal: Int32) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.signalProcess,
                                 AgentAPI.SignalProcessRequest(containerID: id, execID: execID, signal: UInt32(signal)))
    }

    public func removeContainer(_ id: String, timeout: Duration = .seconds(30)) async throws {
        _ = try await ttrpc.call(AgentAPI.AgentService.removeContainer, AgentAPI.RemoveContainerRequest(containerID: id),
                                 timeout: timeout)
    }

    /// Reads a stream to its end.
    public func readAll(_ id: String, execID: String = "", stderr: Bool = false) async throws -> [UInt8] {
        var out: [UInt8] = []
        while true {
            let chunk = stderr ? try await readStderr(id, execID: execID) : try await readStdout(id, execID: execID)
            if chunk.isEmpty { return out }
            out += chunk
        }
    }

    /// Closes the connection (the agent keeps running and accepts a new one).
    public func close() {
        ttrpc.close()
    }
}
