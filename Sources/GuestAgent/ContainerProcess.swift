#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import SystemKit
import TTRPC

/// One process of a container (its first process or an exec) as the agent tracks it: the IO
/// the host reads and writes, and its exit, delivered by PID 1's reaper. Output is read on the
/// reactor into bounded buffers; `waitForExit` answers only once that output is drained, so a
/// process that writes and exits at once loses nothing. Thread-safe.
final class ContainerProcess: Sendable {
    let execID: String
    let pid: pid_t
    let args: [String]
    /// Spliced pipes, or with a terminal the pty master through a buffer (a pty cannot splice).
    let stdout: any OutputSource
    /// nil with a terminal: the pty carries both streams.
    let stderr: (any OutputSource)?
    private let stdin: Mutex<CInt>          // -1 once closed
    private let ptyControl: Mutex<CInt>     // a pty master dup for resizing, -1 without a tty
    private let exit = Mutex<ExitStatus?>(nil)
    private let exitWaiters = Mutex<[CheckedContinuation<ExitStatus, Never>]>([])

    /// Takes the agent's ends of `io`.
    init(execID: String, pid: pid_t, args: [String], io: ProcessIO) throws(TTRPCError) {
        self.execID = execID
        self.pid = pid
        self.args = args
        (stdout, stderr) = try io.takeOutputs()
        let inputs = io.takeInputs()
        stdin = Mutex(inputs.stdin)
        ptyControl = Mutex(inputs.control)
    }

    var exitStatus: ExitStatus? { exit.withLock { $0 } }

    func exited(_ status: ExitStatus) {
        exit.withLock { $0 = status }
        let waiters = exitWaiters.withLock { w -> [CheckedContinuation<ExitStatus, Never>] in
            let all = w
            w = []
            return all
        }
        for w in waiters { w.resume(returning: status) }
    }

    /// The exit status once the process ended and its output was drained.
    func waitForExit() async -> ExitStatus {
        let status = await withCheckedContinuation { (cont: CheckedContinuation<ExitStatus, Never>) in
            let done: ExitStatus? = exitWaiters.withLock { w in
                if let s = exit.withLock({ $0 }) { return s }
                w.append(cont)
                return nil
            }
            if let done { cont.resume(returning: done) }
        }
        await stdout.waitForEOF()
        await stderr?.waitForEOF()
        return status
    }

    /// The encoded ReadStreamResponse for ReadStdout or ReadStderr.
    func read(stderr wantStderr: Bool, max: Int) async -> ResponseBody {
        guard wantStderr else { return await stdout.responseBody(max: max) }
        return await stderr?.responseBody(max: max) ?? ResponseBody(bytes: [])
    }

    func write(_ data: [UInt8]) async throws(TTRPCError) -> UInt32 {
        var offset = 0
        while offset < data.count {
            let fd = stdin.withLock { $0 }
            guard fd >= 0 else { throw TTRPCError(.failedPrecondition, "stdin of \(describe) is closed") }
            let n = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n >= 0 { offset += n; continue }
            if errno == EINTR { continue }
            if errno == EAGAIN {
                do { try await Reactor.shared.wait(for: .writable, on: fd) } catch { throw TTRPCError(.canceled, "write stdin cancelled") }
                continue
            }
            throw TTRPCError(errno == EPIPE ? .failedPrecondition : .internal, "write stdin of \(describe): \(Errno.current())")
        }
        return UInt32(offset)
    }

    /// Closes stdin. On a terminal the reader sees end-of-file through the line discipline
    /// (an EOF character), since the pty itself stays open for output.
    func closeStdin() {
        let isTTY = ptyControl.withLock { $0 >= 0 }
        stdin.withLock { fd in
            if fd >= 0 {
                if isTTY {
                    var eof: UInt8 = 4
                    _ = Glibc.write(fd, &eof, 1)
                }
                Glibc.close(fd)
            }
            fd = -1
        }
    }

    func resize(rows: UInt32, columns: UInt32) throws(TTRPCError) {
        try ptyControl.withLock { (fd: inout CInt) throws(TTRPCError) in
            guard fd >= 0 else { throw TTRPCError(.failedPrecondition, "\(describe) has no terminal") }
            let r = cl_set_winsize(fd, UInt16(clamping: rows), UInt16(clamping: columns))
            if r < 0 { throw TTRPCError(.internal, "resize terminal of \(describe): \(Errno(-r))") }
        }
    }

    /// Drops all IO (the process is gone and removed).
    func closeIO() {
        stdin.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
        ptyControl.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
        stdout.closeFD()
        stderr?.closeFD()
    }

    private var describe: String { execID.isEmpty ? "the container's process" : "exec \(execID)" }
}

/// The pipes (or pty) of a process being created: the child's ends, closed here as soon as
/// the child holds copies, and the agent's ends, handed to `ContainerProcess`. Whatever is
/// still owned when it is released gets closed, so a failed create leaks nothing.
/// Not thread-safe; one create owns it.
final class ProcessIO {
    static let pipeSize: CInt = 1 << 20
    /// fds for the child's 0, 1, 2.
    private(set) var child: (CInt, CInt, CInt) = (-1, -1, -1)
    private var agent: (stdin: CInt, stdout: CInt, stderr: CInt, control: CInt) = (-1, -1, -1, -1)

    init(terminal: Bool, rows: UInt16, columns: UInt16) throws(TTRPCError) {
        if terminal {
            var master: CInt = -1, slave: CInt = -1
            let r = cl_openpty(&master, &slave, rows, columns)
            if r < 0 { throw TTRPCError(.internal, "openpty: \(Errno(-r))") }
            child = (slave, slave, slave)
            agent.stdout = master
            agent.stdin = dup(master)
            agent.control = dup(master)
            if agent.stdin < 0 || agent.control < 0 { throw TTRPCError(.internal, "dup pty: \(Errno.current())") }
            return
        }
        do {
            let i = try FileDescriptor.pipe(), o = try FileDescriptor.pipe(), e = try FileDescriptor.pipe()
            child = (i.first.take(), o.second.take(), e.second.take())
            agent.stdin = i.second.take()
            agent.stdout = o.first.take()
            agent.stderr = e.first.take()
        } catch {
            throw TTRPCError(.internal, "pipe: \(error)")
        }
        // The host writes stdin from the reactor: never block on a full pipe.
        _ = cl_set_nonblocking(agent.stdin, 1)
        // 1 MiB pipes (the unprivileged ceiling, pipe-max-size) instead of 64 KiB: a writer
        // then blocks 16 times less often, and every context switch is costly under TCG.
        for fd in [agent.stdin, agent.stdout, agent.stderr] { _ = cl_set_pipe_size(fd, Self.pipeSize) }
    }

    deinit {
        closeChildEnds()
        for fd in [agent.stdin, agent.stdout, agent.stderr, agent.control] where fd >= 0 { Glibc.close(fd) }
    }

    func closeChildEnds() {
        var seen: Set<CInt> = []
        for fd in [child.0, child.1, child.2] where fd >= 0 && seen.insert(fd).inserted { Glibc.close(fd) }
        child = (-1, -1, -1)
    }

    /// The output readers, each owning its fd from here on (a pty master through a buffer: a
    /// pty cannot splice). What is not taken yet stays owned here and closes on release.
    func takeOutputs() throws(TTRPCError) -> (stdout: any OutputSource, stderr: (any OutputSource)?) {
        let terminal = agent.control >= 0
        let out = agent.stdout, err = agent.stderr
        agent.stdout = -1
        agent.stderr = -1
        let stdout: any OutputSource
        do {
            stdout = terminal ? try StreamBuffer(taking: FileDescriptor(taking: out)) : try PipeOutput(taking: FileDescriptor(taking: out))
        } catch {
            if err >= 0 { Glibc.close(err) }
            throw TTRPCError(.internal, "stdout: \(error)")
        }
        guard err >= 0 else { return (stdout, nil) }
        do {
            return (stdout, try PipeOutput(taking: FileDescriptor(taking: err)))
        } catch {
            stdout.closeFD()
            throw TTRPCError(.internal, "stderr: \(error)")
        }
    }

    /// The stdin write end and the pty control dup (-1 without a terminal), now the caller's.
    func takeInputs() -> (stdin: CInt, control: CInt) {
        let a = (stdin: agent.stdin, control: agent.control)
        agent.stdin = -1
        agent.control = -1
        return a
    }
}

/// The {stage, value} records a container child writes on its status pipe (cl_container.h).
enum StageReport {
    struct Record {
        let stage: CInt
        let value: CInt
        let name: String

        var isFailure: Bool { stage != CInt(CL_STAGE_READY) && stage != CInt(CL_STAGE_PID) }
        var error: Errno { Errno(value) }
    }

    /// The next record, nil at EOF (the write ends are closed: exec succeeded or the child
    /// died). Suspends on the reactor; never blocks a thread.
    static func next(_ fd: CInt) async throws(TTRPCError) -> Record? {
        while true {
            var stage: CInt = 0, value: CInt = 0
            var name: UnsafePointer<CChar>? = nil
            let r = cl_stage_read(fd, &stage, &value, &name)
            if r == 1 { return Record(stage: stage, value: value, name: name.map { String(cString: $0) } ?? "?") }
            if r == 0 { return nil }
            guard r == -EAGAIN else { throw TTRPCError(.internal, "status pipe: \(Errno(-r))") }
            do { try await Reactor.shared.wait(for: .readable, on: fd) } catch { throw TTRPCError(.canceled, "cancelled") }
        }
    }

    /// The gRPC code for a failed stage: a missing or unrunnable binary is the caller's
    /// problem, anything else ours.
    static func code(_ r: Record) -> StatusCode {
        switch r.value {
        case ENOENT, ENOTDIR: return .notFound
        case EACCES, EPERM: return .permissionDenied
        case EINVAL: return .invalidArgument
        default: return .internal
        }
    }
}
