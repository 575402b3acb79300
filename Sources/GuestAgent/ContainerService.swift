#if canImport(Glibc)
import Glibc
#endif
import CLinux
import OCI
import Protocols
import Synchronization
import SystemKit
import TTRPC

/// The agent's container RPCs: CreateContainer, StartContainer, WaitProcess, ReadStdout,
/// ReadStderr, WriteStdin, CloseStdin, SignalProcess, RemoveContainer.
///
/// A container's first process is cloned into new namespaces and prepared by C code
/// (`cl_container_create`, single-threaded in the child), then held before exec until
/// StartContainer. Exits come from PID 1's reaper; WaitProcess answers only once stdout and
/// stderr are drained. Thread-safe.
public final class ContainerService: Sendable {
    /// Where the host puts container rootfs directories on the shared filesystem.
    public static let sharedContainers = "/run/kata-containers/shared/containers"
    /// Device nodes every container gets (bound from the guest's devtmpfs).
    static let defaultDevices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]

    enum Status: String { case created, running, stopped }

    final class ContainerProcess: Sendable {
        let pid: pid_t
        let stdout: StreamBuffer
        let stderr: StreamBuffer
        let stdin: Mutex<CInt>           // -1 once closed
        let start: Mutex<CInt>           // -1 once started or aborted
        let exit = Mutex<ExitStatus?>(nil)
        let exitWaiters = Mutex<[CheckedContinuation<ExitStatus, Never>]>([])

        init(pid: pid_t, stdout: StreamBuffer, stderr: StreamBuffer, stdin: CInt, start: CInt) {
            self.pid = pid
            self.stdout = stdout
            self.stderr = stderr
            self.stdin = Mutex(stdin)
            self.start = Mutex(start)
        }

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
            await stderr.waitForEOF()
            return status
        }

        func closeStdin() {
            stdin.withLock { fd in
                if fd >= 0 { Glibc.close(fd) }
                fd = -1
            }
        }
    }

    final class Container: Sendable {
        let id: String
        let process: ContainerProcess
        let status = Mutex(Status.created)
        init(id: String, process: ContainerProcess) {
            self.id = id
            self.process = process
        }
    }

    private let log: Logger
    private let reaper: Reaper
    private let containers = Mutex<[String: Container]>([:])

    public init(log: Logger, reaper: Reaper) {
        self.log = log
        self.reaper = reaper
    }

    public func register(on server: TTRPCServer) {
        server.register(AgentAPI.AgentService.createContainer) { [self] req, _ in try create(req) }
        server.register(AgentAPI.AgentService.startContainer) { [self] req, _ in try start(req.containerID) }
        server.register(AgentAPI.AgentService.waitProcess) { [self] req, _ in
            let c = try container(req.containerID, execID: req.execID)
            return AgentAPI.WaitProcessResponse(status: await c.process.waitForExit().code)
        }
        server.register(AgentAPI.AgentService.readStdout) { [self] req, _ in
            let c = try container(req.containerID, execID: req.execID)
            return AgentAPI.ReadStreamResponse(data: await c.process.stdout.read(max: Self.chunk(req.len)))
        }
        server.register(AgentAPI.AgentService.readStderr) { [self] req, _ in
            let c = try container(req.containerID, execID: req.execID)
            return AgentAPI.ReadStreamResponse(data: await c.process.stderr.read(max: Self.chunk(req.len)))
        }
        server.register(AgentAPI.AgentService.writeStdin) { [self] req, _ in
            let c = try container(req.containerID, execID: req.execID)
            return AgentAPI.WriteStreamResponse(len: try await Self.write(req.data, to: c.process))
        }
        server.register(AgentAPI.AgentService.closeStdin) { [self] req, _ in
            try container(req.containerID, execID: req.execID).process.closeStdin()
            return GoogleProtobuf.Empty()
        }
        server.register(AgentAPI.AgentService.signalProcess) { [self] req, _ in
            try signal(req.containerID, execID: req.execID, Int32(req.signal))
            return GoogleProtobuf.Empty()
        }
        server.register(AgentAPI.AgentService.removeContainer) { [self] req, _ in
            try await remove(req.containerID, timeout: req.timeout)
            return GoogleProtobuf.Empty()
        }
    }

    /// Responses stay far below ttRPC's 4 MiB frame limit.
    static func chunk(_ requested: UInt32) -> Int {
        requested == 0 ? 64 * 1024 : min(Int(requested), 1 << 20)
    }

    private func container(_ id: String, execID: String = "") throws -> Container {
        guard let c = containers.withLock({ $0[id] }) else { throw TTRPCError(.notFound, "container \(id) not found") }
        guard execID.isEmpty || execID == id else {
            throw TTRPCError(.notFound, "process \(execID) of container \(id) not found")
        }
        return c
    }

    // MARK: - Create

    func create(_ req: AgentAPI.CreateContainerRequest) throws -> GoogleProtobuf.Empty {
        let id = req.containerID
        guard Self.validID(id) else { throw TTRPCError(.invalidArgument, "invalid container id \"\(id)\"") }
        guard containers.withLock({ $0[id] }) == nil else { throw TTRPCError(.alreadyExists, "container \(id) already exists") }
        let spec: Spec
        do {
            spec = try Spec.decode(req.ociSpecJSON)
        } catch {
            throw TTRPCError(.invalidArgument, "container \(id): \(error)")
        }
        guard let process = spec.process, let args = process.args, !args.isEmpty else {
            throw TTRPCError(.invalidArgument, "container \(id): the spec has no process args")
        }
        var rootfs = spec.root?.path ?? "rootfs"
        if !rootfs.hasPrefix("/") { rootfs = "\(Self.sharedContainers)/\(id)/\(rootfs)" }
        guard access(rootfs, F_OK) == 0 else { throw TTRPCError(.notFound, "container \(id): rootfs \(rootfs) does not exist") }

        var flags: Int32 = 0
        for ns in spec.linux?.namespaces ?? [] {
            if ns.path != nil, ns.type != "network" {
                throw TTRPCError(.invalidArgument, "container \(id): joining a \(ns.type) namespace by path is not supported yet")
            }
            switch ns.type {
            case "mount": flags |= Int32(CL_CLONE_NEWNS)
            case "pid": flags |= Int32(CL_CLONE_NEWPID)
            case "ipc": flags |= Int32(CL_CLONE_NEWIPC)
            case "uts": flags |= Int32(CL_CLONE_NEWUTS)
            case "network", "cgroup": break  // shared with the VM
            default: throw TTRPCError(.invalidArgument, "container \(id): unsupported namespace \(ns.type)")
            }
        }
        // The mount namespace is not optional: the container's mounts and root must not leak
        // into the guest.
        flags |= Int32(CL_CLONE_NEWNS)

        let mounts = (spec.mounts ?? []).map(Self.mountSpec)
        let stdinPipe = try pipe(id), stdoutPipe = try pipe(id), stderrPipe = try pipe(id)
        let stdinWrite = stdinPipe.second.take(), stdinRead = stdinPipe.first.take()
        let stdoutRead = stdoutPipe.first.take(), stdoutWrite = stdoutPipe.second.take()
        let stderrRead = stderrPipe.first.take(), stderrWrite = stderrPipe.second.take()
        defer {
            // The child holds its own copies now (or failed); the agent keeps only its ends.
            Glibc.close(stdinRead)
            Glibc.close(stdoutWrite)
            Glibc.close(stderrWrite)
        }

        var pid: pid_t = 0, startFD: CInt = -1, statusFD: CInt = -1
        var stage: UnsafePointer<CChar>? = nil
        let r = CStringArray.with(args) { argv in
            CStringArray.with(process.env ?? []) { envp in
                CStringArray.with(Self.defaultDevices) { devices in
                    CStringArray.with(spec.linux?.maskedPaths ?? []) { masked in
                        CStringArray.with(spec.linux?.readonlyPaths ?? []) { readonly in
                            CMounts.with(mounts) { m, n in
                                (process.user.additionalGids ?? []).withUnsafeBufferPointer { groups in
                                    rootfs.withCString { root in
                                        process.cwd.withCString { cwd in
                                            Self.withOptionalCString(spec.hostname) { hostname in
                                                var config = cl_container_config(
                                                    rootfs: root, readonly_root: spec.root?.readonly == true ? 1 : 0,
                                                    clone_flags: flags, hostname: hostname, mounts: m, n_mounts: n,
                                                    devices: devices.constPointer, n_devices: CInt(devices.count),
                                                    masked: masked.constPointer, n_masked: CInt(masked.count),
                                                    readonly: readonly.constPointer, n_readonly: CInt(readonly.count),
                                                    argv: argv.pointer, envp: envp.pointer, cwd: cwd,
                                                    uid: process.user.uid, gid: process.user.gid,
                                                    groups: groups.baseAddress, n_groups: CInt(groups.count),
                                                    stdio: (stdinRead, stdoutWrite, stderrWrite))
                                                return cl_container_create(&config, &pid, &startFD, &statusFD, &stage)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if r < 0 {
            Glibc.close(stdinWrite)
            Glibc.close(stdoutRead)
            Glibc.close(stderrRead)
            let what = stage.map { String(cString: $0) } ?? "clone"
            throw TTRPCError(.internal, "container \(id): \(what): \(Errno(-r))")
        }
        let proc: ContainerProcess
        do {
            proc = ContainerProcess(pid: pid, stdout: try StreamBuffer(taking: FileDescriptor(taking: stdoutRead)),
                                    stderr: try StreamBuffer(taking: FileDescriptor(taking: stderrRead)),
                                    stdin: stdinWrite, start: startFD)
        } catch {
            kill(pid, SIGKILL)
            throw TTRPCError(.internal, "container \(id): \(error)")
        }
        let container = Container(id: id, process: proc)
        containers.withLock { $0[id] = container }
        watchExecResult(id, statusFD)
        let reaper = self.reaper, log = self.log, childPID = pid
        Task {
            let status = await reaper.wait(for: childPID)
            container.status.withLock { $0 = .stopped }
            log.info("container process exited", ("container", id), ("pid", String(childPID)), ("status", status.description))
            proc.exited(status)
        }
        log.info("container created", ("container", id), ("pid", String(pid)), ("rootfs", rootfs))
        return GoogleProtobuf.Empty()
    }

    /// Logs why exec failed (missing binary…); the process itself exits 127 right after.
    private func watchExecResult(_ id: String, _ fd: CInt) {
        let log = self.log
        do {
            let box = Mutex<Reactor.Registration?>(nil)
            let reg = try Reactor.shared.register(fd, interest: .readable) { _ in
                var err: CInt = 0
                var stage: UnsafePointer<CChar>? = nil
                let r = cl_container_exec_result(fd, &err, &stage)
                if r == -EAGAIN { return }
                if r == 1 {
                    log.warning("container exec failed", ("container", id),
                                ("stage", stage.map { String(cString: $0) } ?? "exec"), ("error", Errno(err).description))
                }
                if let reg = box.withLock({ $0 }) { Reactor.shared.deregister(reg) }
                Glibc.close(fd)
            }
            box.withLock { $0 = reg }
        } catch {
            Glibc.close(fd)
        }
    }

    private func pipe(_ id: String) throws -> DescriptorPair {
        do { return try FileDescriptor.pipe() } catch { throw TTRPCError(.internal, "container \(id): \(error)") }
    }

    private static func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
        guard let s else { return body(nil) }
        return s.withCString { body($0) }
    }

    static func validID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 128 && id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x5f || c == 0x2e
        } && id != "." && id != ".."
    }

    /// OCI mount options → mount(2) flags and data.
    static func mountSpec(_ m: Mount) -> (source: String, target: String, fstype: String, flags: UInt, data: String) {
        var flags: Int = 0
        var data: [String] = []
        for o in m.options ?? [] {
            switch o {
            case "ro": flags |= CL_MS_RDONLY
            case "rw", "suid", "dev", "exec", "defaults": break
            case "nosuid": flags |= CL_MS_NOSUID
            case "nodev": flags |= CL_MS_NODEV
            case "noexec": flags |= CL_MS_NOEXEC
            case "bind": flags |= CL_MS_BIND
            case "rbind": flags |= CL_MS_BIND | CL_MS_REC
            case "relatime": flags |= CL_MS_RELATIME
            case "strictatime": flags |= 1 << 24
            case "private", "rprivate", "shared", "rshared", "slave", "rslave": break  // propagation: private here
            default: data.append(o)
            }
        }
        let type = m.type ?? (flags & CL_MS_BIND != 0 ? "" : "none")
        if type == "bind" { flags |= CL_MS_BIND }
        return (m.source ?? type, m.destination, type == "bind" ? "" : type, UInt(flags), data.joined(separator: ","))
    }

    // MARK: - Start, signal, remove

    func start(_ id: String) throws -> GoogleProtobuf.Empty {
        let c = try container(id)
        try c.status.withLock { s in
            guard s == .created else { throw TTRPCError(.failedPrecondition, "container \(id) is \(s.rawValue), not created") }
            s = .running
        }
        c.process.start.withLock { fd in
            var go: UInt8 = 1
            _ = Glibc.write(fd, &go, 1)
            Glibc.close(fd)
            fd = -1
        }
        log.info("container started", ("container", id))
        return GoogleProtobuf.Empty()
    }

    func signal(_ id: String, execID: String, _ signal: Int32) throws {
        let c = try container(id, execID: execID)
        guard c.process.exit.withLock({ $0 }) == nil else {
            throw TTRPCError(.notFound, "container \(id): process already finished")
        }
        // The init process is PID 1 of the container's namespace: SIGKILL to it ends them all.
        if Glibc.kill(c.process.pid, signal) != 0 {
            let e = Errno.current("kill \(c.process.pid)")
            throw TTRPCError(e.rawValue == ESRCH ? .notFound : .internal, "container \(id): \(e)")
        }
    }

    func remove(_ id: String, timeout: UInt32) async throws {
        let c = try container(id)
        c.process.start.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }  // a never-started container exits now
            fd = -1
        }
        if c.process.exit.withLock({ $0 }) == nil { _ = Glibc.kill(c.process.pid, SIGKILL) }
        _ = await c.process.waitForExit()
        c.process.closeStdin()
        c.process.stdout.closeFD()
        c.process.stderr.closeFD()
        containers.withLock { _ = $0.removeValue(forKey: id) }
        log.info("container removed", ("container", id))
    }

    static func write(_ data: [UInt8], to p: ContainerProcess) async throws -> UInt32 {
        var offset = 0
        while offset < data.count {
            let fd = p.stdin.withLock { $0 }
            guard fd >= 0 else { throw TTRPCError(.failedPrecondition, "stdin is closed") }
            let n = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n >= 0 { offset += n; continue }
            if errno == EAGAIN { try await Reactor.shared.wait(for: .writable, on: fd); continue }
            if errno == EINTR { continue }
            throw TTRPCError(.internal, "write stdin: \(Errno.current())")
        }
        return UInt32(offset)
    }
}

/// `cl_mount_spec` arrays for the duration of a call.
enum CMounts {
    static func with<R>(_ mounts: [(source: String, target: String, fstype: String, flags: UInt, data: String)],
                        _ body: (UnsafePointer<cl_mount_spec>?, CInt) -> R) -> R {
        var owned: [UnsafeMutablePointer<CChar>?] = []
        defer { for p in owned { free(p) } }
        func dup(_ s: String) -> UnsafePointer<CChar>? {
            let p = strdup(s)
            owned.append(p)
            return UnsafePointer(p)
        }
        let specs = mounts.map { m in
            cl_mount_spec(source: dup(m.source), target: dup(m.target), fstype: m.fstype.isEmpty ? nil : dup(m.fstype),
                          flags: m.flags, data: m.data.isEmpty ? nil : dup(m.data))
        }
        return specs.withUnsafeBufferPointer { body($0.baseAddress, CInt($0.count)) }
    }
}
