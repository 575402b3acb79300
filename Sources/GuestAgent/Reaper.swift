#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import SystemKit

/// PID 1's reaper: collects every child that exits (adopted orphans included) so zombies never
/// accumulate, and hands exit statuses to whoever asked for a pid.
///
/// Driven by a signalfd for SIGCHLD on the reactor. The signal must be blocked before any
/// thread exists (`blockSignals()` on main's first line), or some thread would take it.
public final class Reaper: Sendable {
    private struct State {
        var waiters: [pid_t: [CheckedContinuation<ExitStatus, Never>]] = [:]
        var unclaimed: [pid_t: ExitStatus] = [:]
        var registration: Reactor.Registration?
    }

    private let signalFD: CInt
    private let wakeFD: CInt
    private let log: Logger
    private let state = Mutex(State())
    private let onTerminate: @Sendable () -> Void

    /// Blocks SIGCHLD, SIGTERM and SIGINT for this thread and every thread created after it;
    /// returns the signalfd that receives them. Call before anything starts a thread.
    public static func blockSignals() -> CInt {
        let fd = cl_signalfd_block(1)
        precondition(fd >= 0, "signalfd: errno \(-fd)")
        return fd
    }

    /// Starts reaping on `signalFD` (from `blockSignals()`). SIGTERM/SIGINT call `onTerminate`.
    public init(signalFD: CInt, log: Logger, reactor: Reactor = .shared, onTerminate: @escaping @Sendable () -> Void) {
        self.signalFD = signalFD
        self.wakeFD = cl_eventfd()
        self.log = log
        self.onTerminate = onTerminate
        // Two paths for the same signals: the signalfd (signal pending because every thread
        // blocks it) and handlers writing to an eventfd (delivered to a thread that does not:
        // Swift's runtime leaves the main thread unmasked, where SIGCHLD would be discarded).
        let installed = cl_signal_wakeup_install(wakeFD)
        if installed < 0 { log.error("reaper: cannot install signal handlers", ("errno", String(-installed))) }
        do {
            let reg = try reactor.register(signalFD, interest: .readable) { [self] _ in drain() }
            _ = try reactor.register(wakeFD, interest: .readable) { [self] _ in
                _ = cl_eventfd_drain(wakeFD)
                if cl_signal_take_terminate() != 0 { onTerminate() }
                drain()
            }
            state.withLock { $0.registration = reg }
        } catch {
            log.error("reaper: cannot watch signals", ("error", "\(error)"))
        }
        drain()
    }

    private func drain() {
        while true {
            let sig = cl_signalfd_read(signalFD)
            if sig <= 0 { break }
            if sig == SIGTERM || sig == SIGINT { onTerminate() }
        }
        // Reap until nothing is left, whatever woke us: several exits can share one SIGCHLD.
        while true {
            var raw: Int32 = 0
            let pid = cl_reap_any(&raw)
            if pid <= 0 { break }
            let status = ExitStatus(waitStatus: raw)
            let waiters = state.withLock { s -> [CheckedContinuation<ExitStatus, Never>] in
                if let w = s.waiters.removeValue(forKey: pid) { return w }
                s.unclaimed[pid] = status
                if s.unclaimed.count > 4096 { s.unclaimed.removeAll() }  // orphans nobody asks about
                return []
            }
            if waiters.isEmpty { log.debug("reaped", ("pid", String(pid)), ("status", status.description)) }
            for w in waiters { w.resume(returning: status) }
        }
    }

    /// The exit status of `pid` (a child of this process), once it has been reaped.
    public func wait(for pid: pid_t) async -> ExitStatus {
        await withCheckedContinuation { cont in
            let done = state.withLock { s -> ExitStatus? in
                if let st = s.unclaimed.removeValue(forKey: pid) { return st }
                s.waiters[pid, default: []].append(cont)
                return nil
            }
            if let done { cont.resume(returning: done) }
        }
    }
}
