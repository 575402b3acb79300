#if canImport(Glibc)
import Glibc
#endif
import SystemKit

/// Why QEMU could not be started. Every case names the path at fault.
public enum QEMUError: Error, Hashable, Sendable, CustomStringConvertible {
    case binaryNotFound(String)
    case kernelNotFound(String)
    case initrdNotFound(String)
    case sharedDirectoryNotFound(String)
    case spawnFailed(String)

    public var description: String {
        switch self {
        case .binaryNotFound(let p): return "QEMU binary \(p) not found or not executable"
        case .kernelNotFound(let p): return "guest kernel \(p) not found"
        case .initrdNotFound(let p): return "guest initrd \(p) not found"
        case .sharedDirectoryNotFound(let p): return "shared directory \(p) not found"
        case .spawnFailed(let m): return "starting QEMU: \(m)"
        }
    }
}

/// How QEMU ended, with the last lines it wrote to stderr (its own explanation, if any).
public struct QEMUExit: Sendable, Hashable, CustomStringConvertible {
    public let status: ExitStatus
    public let stderrTail: String

    public var description: String {
        let what: String
        switch status {
        case .exited(let c): what = "QEMU exited with status \(c)"
        case .signaled(let s): what = "QEMU was killed by signal \(s)"
        }
        return stderrTail.isEmpty ? what : "\(what): \(stderrTail)"
    }
}

/// One QEMU process: started through the C spawner (signal mask reset, only fds 0–2, which
/// are /dev/null and a log file, PDEATHSIG so a dead shim never leaves a live VM), reaped
/// exactly once, stopped gracefully or killed.
///
/// Thread-safe. PDEATHSIG follows the spawning *thread*; spawn from a long-lived thread (the
/// reactor or the cooperative pool, whose threads live as long as the process).
public final class QEMUProcess: Sendable {
    public let configuration: QEMUConfiguration
    public let arguments: [String]
    public let stderrPath: String
    private let child: ChildProcess

    public var pid: pid_t { child.pid }

    private init(configuration: QEMUConfiguration, arguments: [String], stderrPath: String, child: ChildProcess) {
        self.configuration = configuration
        self.arguments = arguments
        self.stderrPath = stderrPath
        self.child = child
    }

    /// Validates the paths the VM needs, then starts QEMU with stdout/stderr going to
    /// `stderrPath`.
    public static func launch(_ config: QEMUConfiguration, stderrPath: String, reactor: Reactor = .shared) async throws(QEMUError) -> QEMUProcess {
        guard access(config.binary, X_OK) == 0 else { throw .binaryNotFound(config.binary) }
        guard access(config.kernel, R_OK) == 0 else { throw .kernelNotFound(config.kernel) }
        if let initrd = config.initrd, access(initrd, R_OK) != 0 { throw .initrdNotFound(initrd) }
        for share in config.sharedDirectories where access(share.path, R_OK) != 0 {
            throw .sharedDirectoryNotFound(share.path)
        }
        let args = QEMUCommandLine.arguments(for: config, kvm: QEMUCommandLine.useKVM(config.accelerator))
        let log: FileDescriptor
        do {
            log = try FileDescriptor.open(stderrPath, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        } catch {
            throw .spawnFailed("\(error)")
        }
        var options = ChildProcess.Options()
        options.fds = [-1, log.rawValue, log.rawValue]
        options.newProcessGroup = true
        options.killWithParent = true
        do {
            let child = try await ChildProcess.spawn(config.binary, args, environment: [], options: options, reactor: reactor)
            return QEMUProcess(configuration: config, arguments: args, stderrPath: stderrPath, child: child)
        } catch {
            throw .spawnFailed(error.description)
        }
    }

    /// Whether QEMU has exited (and been reaped).
    public var hasExited: Bool { child.exitStatus != nil }

    /// Waits for QEMU to exit, however that happens.
    public func waitForExit() async -> QEMUExit {
        let status = await child.wait()
        return QEMUExit(status: status, stderrTail: TextFile.tail(stderrPath, lines: 5))
    }

    /// SIGKILL now (no-op once reaped).
    public func kill() {
        child.signal(SIGKILL)
    }

    /// Stops the VM: `quit` over QMP when a monitor is given (else SIGTERM), waits up to
    /// `gracePeriod`, then SIGKILL. Returns how it ended.
    @discardableResult
    public func stop(qmp: QMPClient?, gracePeriod: Duration = .seconds(5)) async -> QEMUExit {
        if hasExited { return await waitForExit() }
        if let qmp, !qmp.isClosed {
            try? await qmp.quit()
        } else {
            child.signal(SIGTERM)
        }
        return await waitForExit(within: gracePeriod)
    }

    /// Waits up to `timeout` for QEMU to exit, then SIGKILLs it and waits for that.
    public func waitForExit(within timeout: Duration) async -> QEMUExit {
        // The timer kills instead of abandoning the wait: the wait itself is not cancellable,
        // and a task group would otherwise wait for it forever.
        let timer = Task { [self] in
            try await Task.sleep(for: timeout)
            kill()
        }
        let exit = await waitForExit()
        timer.cancel()
        return exit
    }

}
