#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import SystemKit
import TTRPC

/// One container in the guest: its first process, its execs, its cgroup and the namespace
/// set execs join. Thread-safe.
final class Container: Sendable {
    enum Status: String, Sendable { case created, running, paused, stopped }

    let id: String
    let initProcess: ContainerProcess
    let cgroup: ContainerCgroup
    /// CLONE_NEW* flags of the namespaces the container owns (execs join them).
    let namespaces: CInt
    /// The spec's profile, applied to execs too.
    let seccomp: SeccompProgram?
    let status = Mutex(Status.created)
    private let startFD: Mutex<CInt>       // -1 once started or aborted
    private let statusFD: Mutex<CInt>      // -1 once the exec result is known
    private let execs = Mutex<[String: ContainerProcess]>([:])
    /// Exec ids being created (reserved so a duplicate is refused while the first is set up).
    private let reserved = Mutex<Set<String>>([])

    init(id: String, initProcess: ContainerProcess, cgroup: ContainerCgroup, namespaces: CInt,
         seccomp: SeccompProgram?, startFD: CInt, statusFD: CInt) {
        self.id = id
        self.initProcess = initProcess
        self.cgroup = cgroup
        self.namespaces = namespaces
        self.seccomp = seccomp
        self.startFD = Mutex(startFD)
        self.statusFD = Mutex(statusFD)
    }

    /// The first process (`execID` empty or the container id) or an exec.
    func process(_ execID: String) throws(TTRPCError) -> ContainerProcess {
        if execID.isEmpty || execID == id { return initProcess }
        guard let p = execs.withLock({ $0[execID] }) else {
            throw TTRPCError(.notFound, "process \(execID) of container \(id) not found")
        }
        return p
    }

    var allExecs: [ContainerProcess] { execs.withLock { Array($0.values) } }

    func reserve(_ execID: String) throws(TTRPCError) {
        try reserved.withLock { (r: inout Set<String>) throws(TTRPCError) in
            let taken = execID == id || execs.withLock { $0[execID] != nil } || r.contains(execID)
            guard !taken else { throw TTRPCError(.alreadyExists, "process \(execID) of container \(id) already exists") }
            r.insert(execID)
        }
    }

    func release(_ execID: String) { _ = reserved.withLock { $0.remove(execID) } }

    func add(_ p: ContainerProcess) {
        execs.withLock { $0[p.execID] = p }
        release(p.execID)
    }

    /// Lets the first process exec: writes the start byte, then waits for the exec result.
    func start() async throws(TTRPCError) {
        try status.withLock { (s: inout Status) throws(TTRPCError) in
            guard s == .created else { throw TTRPCError(.failedPrecondition, "container \(id) is \(s.rawValue), not created") }
            s = .running
        }
        startFD.withLock { fd in
            var go: UInt8 = 1
            _ = Glibc.write(fd, &go, 1)
            Glibc.close(fd)
            fd = -1
        }
        let fd = statusFD.withLock { $0 }
        defer { closeStatus() }
        if let r = try await StageReport.next(fd), r.isFailure {
            throw TTRPCError(StageReport.code(r), "container \(id): \(r.name) \(initProcess.args[0]): \(r.error)")
        }
    }

    /// Ends a never-started first process (it exits 0 when its start pipe closes).
    func abortStart() {
        startFD.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
        closeStatus()
    }

    private func closeStatus() {
        statusFD.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }
}
