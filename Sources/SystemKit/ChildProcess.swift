#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization

/// How a process ended.
public enum ExitStatus: Sendable, Hashable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// The shell convention: the exit code, or 128 + signal for a death by signal.
    public var code: Int32 {
        switch self {
        case .exited(let c): return c
        case .signaled(let s): return 128 + s
        }
    }

    /// Decodes a waitpid(2) status.
    public init(waitStatus s: Int32) {
        if s & 0x7f == 0 { self = .exited((s >> 8) & 0xff) } else { self = .signaled(s & 0x7f) }
    }

    public var description: String {
        switch self {
        case .exited(let c): return "exit status \(c)"
        case .signaled(let s): return "killed by signal \(s)"
        }
    }
}

/// Spawning failed before the new program ran.
public struct SpawnError: Error, CustomStringConvertible, Sendable {
    public let path: String
    /// The step that failed: `exec`, `chdir`, `dup2`, `fork`, ...
    public let stage: String
    public let errno: Errno
    public var description: String { "spawn \(path): \(stage): \(errno)" }
}

/// A child process started by `spawn`, reaped exactly once through its pidfd on the reactor.
///
/// Thread-safe. `wait()` may be called by any number of tasks; all get the same status.
public final class ChildProcess: Sendable {
    public let pid: pid_t

    private struct State {
        var status: ExitStatus?
        var waiters: [CheckedContinuation<ExitStatus, Never>] = []
        var registration: Reactor.Registration?
    }

    private let pidfd: CInt
    private let reactor: Reactor
    private let state = Mutex(State())

    /// Options for `spawn`.
    public struct Options: Sendable {
        /// `fds[i]` becomes fd i in the child (-1: /dev/null); every other fd is closed.
        public var fds: [CInt] = [-1, -1, -1]
        public var workingDirectory: String? = nil
        public var newSession = false
        public var newProcessGroup = false
        /// SIGKILL the child when the thread that spawned it exits.
        public var killWithParent = false
        public init() {}
    }

    /// Starts `path` with `arguments` (argv[1...]) and `environment` ("K=V" entries).
    ///
    /// PDEATHSIG (`killWithParent`) fires when the *thread* that forked exits, and Swift's pool
    /// threads exit when idle; so such a spawn runs on the reactor thread, which lives as long
    /// as the process. Hence async: the caller waits without blocking a thread.
    public static func spawn(_ path: String, _ arguments: [String] = [], environment: [String] = [],
                             options: Options = Options(), reactor: Reactor = .shared) async throws(SpawnError) -> ChildProcess {
        guard options.killWithParent && !reactor.isCurrentThread else {
            return try spawnHere(path, arguments, environment: environment, options: options, reactor: reactor)
        }
        let result = await Task(executorPreference: reactor) { () -> Result<ChildProcess, SpawnError> in
            do throws(SpawnError) {
                return .success(try spawnHere(path, arguments, environment: environment, options: options, reactor: reactor))
            } catch {
                return .failure(error)
            }
        }.value
        return try result.get()
    }

    private static func spawnHere(_ path: String, _ arguments: [String], environment: [String],
                                  options: Options, reactor: Reactor) throws(SpawnError) -> ChildProcess {
        precondition(!options.killWithParent || reactor.isCurrentThread, "PDEATHSIG spawn off the reactor thread")
        let argv = CStringArray([path] + arguments)
        let envp = CStringArray(environment)
        defer { argv.free(); envp.free() }
        var flags: CInt = 0
        if options.newSession { flags |= CInt(CL_SPAWN_SETSID) }
        if options.newProcessGroup { flags |= CInt(CL_SPAWN_SETPGID) }
        if options.killWithParent { flags |= CInt(CL_SPAWN_PDEATHSIG) }
        var pid: pid_t = 0
        var stage: UnsafePointer<CChar>? = nil
        let r = options.fds.withUnsafeBufferPointer { fds in
            if let cwd = options.workingDirectory {
                return cwd.withCString { cl_spawn(path, argv.pointer, envp.pointer, $0, fds.baseAddress, CInt(fds.count), flags, &pid, &stage) }
            }
            return cl_spawn(path, argv.pointer, envp.pointer, nil, fds.baseAddress, CInt(fds.count), flags, &pid, &stage)
        }
        if r < 0 {
            throw SpawnError(path: path, stage: stage.map { String(cString: $0) } ?? "fork", errno: Errno(-r))
        }
        let pidfd = cl_pidfd_open(pid)
        precondition(pidfd >= 0, "pidfd_open(\(pid)) failed: errno \(-pidfd)")
        let child = ChildProcess(pid: pid, pidfd: pidfd, reactor: reactor)
        do {
            let reg = try reactor.register(pidfd, interest: .readable) { [child] _ in child.reap() }
            child.state.withLock { $0.registration = reg }
        } catch {
            preconditionFailure("registering pidfd: \(error)")
        }
        return child
    }

    private init(pid: pid_t, pidfd: CInt, reactor: Reactor) {
        self.pid = pid
        self.pidfd = pidfd
        self.reactor = reactor
    }

    /// Reactor callback: the pidfd became readable, so the process is a zombie now.
    private func reap() {
        var raw: Int32 = 0
        guard cl_reap(pid, &raw) == 1 else { return }
        let status = ExitStatus(waitStatus: raw)
        let (waiters, reg) = state.withLock { s in
            s.status = status
            let w = s.waiters
            s.waiters = []
            let r = s.registration
            s.registration = nil
            return (w, r)
        }
        if let reg { reactor.deregister(reg) }
        Glibc.close(pidfd)
        for w in waiters { w.resume(returning: status) }
    }

    /// The exit status, once the process has ended (it is reaped at most once).
    public func wait() async -> ExitStatus {
        await withCheckedContinuation { cont in
            let done: ExitStatus? = state.withLock { s in
                if let st = s.status { return st }
                s.waiters.append(cont)
                return nil
            }
            if let done { cont.resume(returning: done) }
        }
    }

    /// The exit status if the process already ended.
    public var exitStatus: ExitStatus? { state.withLock { $0.status } }

    /// Sends `signal` unless the process was already reaped (its pid may be reused by then).
    public func signal(_ signal: Int32) {
        state.withLock { s in
            if s.status == nil { _ = Glibc.kill(pid, signal) }
        }
    }
}

/// A NULL-terminated `char *[]` for C calls (exec, the guest's container stage). Package-only:
/// a thin layer for the C boundary, never part of a public API.
package struct CStringArray {
    package let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    package let count: Int

    /// The same array as `const char *const *`.
    package var constPointer: UnsafePointer<UnsafePointer<CChar>?> {
        UnsafeRawPointer(pointer).assumingMemoryBound(to: UnsafePointer<CChar>?.self)
    }

    /// Allocates copies; the caller must `free()` them.
    package init(_ strings: [String]) {
        count = strings.count
        pointer = .allocate(capacity: strings.count + 1)
        for (i, s) in strings.enumerated() { pointer[i] = strdup(s) }
        pointer[strings.count] = nil
    }

    package func free() {
        for i in 0..<count { Glibc.free(pointer[i]) }
        pointer.deallocate()
    }

    /// Runs `body` with the array, freed afterwards.
    package static func with<R>(_ strings: [String], _ body: (CStringArray) -> R) -> R {
        let array = CStringArray(strings)
        defer { array.free() }
        return body(array)
    }
}
