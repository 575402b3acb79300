#if canImport(Glibc)
import Glibc
#endif
import CLinux
import OCI
import Protocols
import Synchronization
import SystemKit
import TTRPC

/// The agent's container and process RPCs.
///
/// A container's first process is cloned into new namespaces and prepared by C code in the
/// child (`cl_container_create`), then held before exec until StartContainer. Execs are cloned
/// by a helper that joined the container's namespaces (`cl_container_exec`). Every process
/// joins the container's cgroup before exec. Exits come from PID 1's reaper; WaitProcess
/// answers once stdout and stderr are drained. No RPC blocks the reactor thread on a child:
/// stage reports are awaited. Thread-safe.
public final class ContainerService: Sendable {
    /// Where the host puts container rootfs directories on the shared filesystem.
    public static let sharedContainers = "/run/kata-containers/shared/containers"
    /// Device nodes every container gets (bound from the guest's devtmpfs).
    static let defaultDevices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]

    let log: Logger
    let reaper: Reaper
    private let containers = Mutex<[String: Container]>([:])
    private let reservedIDs = Mutex<Set<String>>([])
    let oom: OOMWatcher?

    public init(log: Logger, reaper: Reaper) {
        self.log = log
        self.reaper = reaper
        do {
            try ContainerCgroup.prepareParent()
        } catch {
            log.error("cannot prepare container cgroups", ("error", error.message))
        }
        do {
            oom = try OOMWatcher(log: log)
        } catch {
            log.error("cannot watch for OOM kills", ("error", "\(error)"))
            oom = nil
        }
    }

    public func register(on server: TTRPCServer) {
        typealias A = AgentAPI.AgentService
        server.register(A.createContainer) { [self] req, _ in try await create(req) }
        server.register(A.startContainer) { [self] req, _ in
            try await container(req.containerID).start()
            log.info("container started", ("container", req.containerID))
            return GoogleProtobuf.Empty()
        }
        server.register(A.execProcess) { [self] req, _ in try await exec(req) }
        server.register(A.waitProcess) { [self] req, _ in
            let p = try container(req.containerID).process(req.execID)
            return AgentAPI.WaitProcessResponse(status: await p.waitForExit().code)
        }
        // Output responses are encoded here (ReadStreamResponse.data, then bytes spliced from
        // the process's pipe), so container output never passes through the agent's memory.
        server.registerBody(A.readStdout) { [self] req, _ in
            let p = try container(req.containerID).process(req.execID)
            return await p.read(stderr: false, max: Self.chunk(req.len))
        }
        server.registerBody(A.readStderr) { [self] req, _ in
            let p = try container(req.containerID).process(req.execID)
            return await p.read(stderr: true, max: Self.chunk(req.len))
        }
        server.register(A.writeStdin) { [self] req, _ in
            let p = try container(req.containerID).process(req.execID)
            return AgentAPI.WriteStreamResponse(len: try await p.write(req.data))
        }
        server.register(A.closeStdin) { [self] req, _ in
            try container(req.containerID).process(req.execID).closeStdin()
            return GoogleProtobuf.Empty()
        }
        server.register(A.ttyWinResize) { [self] req, _ in
            try container(req.containerID).process(req.execID).resize(rows: req.row, columns: req.column)
            return GoogleProtobuf.Empty()
        }
        server.register(A.signalProcess) { [self] req, _ in
            try signal(req.containerID, execID: req.execID, Int32(clamping: req.signal))
            return GoogleProtobuf.Empty()
        }
        server.register(A.listProcesses) { [self] req, _ in try list(req.containerID) }
        server.register(A.statsContainer) { [self] req, _ in
            AgentAPI.StatsContainerResponse(cgroupStats: try container(req.containerID).cgroup.stats())
        }
        server.register(A.updateContainer) { [self] req, _ in
            let c = try container(req.containerID)
            let r: Resources
            do { r = try Resources.decode(req.resourcesJSON) } catch {
                throw TTRPCError(.invalidArgument, "container \(c.id): resources: \(error)")
            }
            try c.cgroup.apply(r)
            log.info("container updated", ("container", c.id))
            return GoogleProtobuf.Empty()
        }
        server.register(A.pauseContainer) { [self] req, _ in
            try await setPaused(req.containerID, true)
            return GoogleProtobuf.Empty()
        }
        server.register(A.resumeContainer) { [self] req, _ in
            try await setPaused(req.containerID, false)
            return GoogleProtobuf.Empty()
        }
        server.register(A.getOOMEvent) { [self] _, _ in
            guard let oom else { throw TTRPCError(.unavailable, "OOM events are not available in this guest") }
            return AgentAPI.OOMEvent(containerID: await oom.next())
        }
        server.register(A.removeContainer) { [self] req, _ in
            try await remove(req.containerID, timeout: req.timeout)
            return GoogleProtobuf.Empty()
        }
    }

    /// Responses stay far below ttRPC's 4 MiB frame limit.
    static func chunk(_ requested: UInt32) -> Int {
        requested == 0 ? 64 * 1024 : min(Int(requested), 1 << 20)
    }

    func container(_ id: String) throws(TTRPCError) -> Container {
        guard let c = containers.withLock({ $0[id] }) else { throw TTRPCError(.notFound, "container \(id) not found") }
        return c
    }

    static func validID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 128 && id.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x5f || c == 0x2e
        } && id != "." && id != ".."
    }

    // MARK: - Create

    func create(_ req: AgentAPI.CreateContainerRequest) async throws(TTRPCError) -> GoogleProtobuf.Empty {
        let id = req.containerID
        guard Self.validID(id) else { throw TTRPCError(.invalidArgument, "invalid container id \"\(id)\"") }
        try reservedIDs.withLock { (r: inout Set<String>) throws(TTRPCError) in
            guard containers.withLock({ $0[id] }) == nil, !r.contains(id) else {
                throw TTRPCError(.alreadyExists, "container \(id) already exists")
            }
            r.insert(id)
        }
        defer { _ = reservedIDs.withLock { $0.remove(id) } }
        let what = "container \(id)"
        let spec: Spec
        do { spec = try Spec.decode(req.ociSpecJSON) } catch { throw TTRPCError(.invalidArgument, "\(what): \(error)") }
        guard let process = spec.process else { throw TTRPCError(.invalidArgument, "\(what): the spec has no process") }
        let options = try ProcessOptions(process, what: what)
        var rootfs = spec.root?.path ?? "rootfs"
        if !rootfs.hasPrefix("/") { rootfs = "\(Self.sharedContainers)/\(id)/\(rootfs)" }
        guard access(rootfs, F_OK) == 0 else { throw TTRPCError(.notFound, "\(what): rootfs \(rootfs) does not exist") }
        let flags = try Self.namespaceFlags(spec.linux?.namespaces ?? [], what: what)
        let seccomp = try spec.linux?.seccomp.map { s throws(TTRPCError) in try SeccompProgram(s, what: what) }

        let cgroup = try ContainerCgroup(id: id)
        var cgroupOwned = true
        defer { if cgroupOwned { Task { try? await cgroup.remove() } } }
        try cgroup.apply(spec.linux?.resources ?? Resources())
        let procsFD = try cgroup.openProcs()
        defer { Glibc.close(procsFD) }
        let io = try ProcessIO(terminal: options.terminal, rows: options.consoleSize.rows, columns: options.consoleSize.cols)

        var pid: pid_t = 0, startFD: CInt = -1, statusFD: CInt = -1
        let arena = CArena()
        let mounts = (spec.mounts ?? []).map { Self.mountSpec($0, arena: arena) }
        var config = cl_container_config(
            rootfs: arena.string(rootfs), readonly_root: spec.root?.readonly == true ? 1 : 0,
            clone_flags: flags, hostname: arena.optionalString(spec.hostname),
            mounts: arena.array(mounts), n_mounts: CInt(mounts.count),
            devices: arena.constStrings(Self.defaultDevices), n_devices: CInt(Self.defaultDevices.count),
            masked: arena.constStrings(spec.linux?.maskedPaths ?? []), n_masked: CInt(spec.linux?.maskedPaths?.count ?? 0),
            readonly: arena.constStrings(spec.linux?.readonlyPaths ?? []),
            n_readonly: CInt(spec.linux?.readonlyPaths?.count ?? 0),
            process: options.cConfig(arena: arena, stdio: io.child, cgroupProcsFD: procsFD, seccomp: seccomp))
        let r = withExtendedLifetime(arena) { cl_container_create(&config, &pid, &startFD, &statusFD) }
        io.closeChildEnds()
        if r < 0 { throw TTRPCError(.internal, "\(what): clone: \(Errno(-r))") }
        let exit = watchExit(pid)

        // The child prepares itself; its first record says whether it got to "ready".
        let record: StageReport.Record?
        do {
            record = try await StageReport.next(statusFD)
        } catch {
            _ = Glibc.kill(pid, SIGKILL)
            Glibc.close(statusFD)
            Glibc.close(startFD)
            throw error
        }
        guard let record, !record.isFailure else {
            Glibc.close(statusFD)
            Glibc.close(startFD)
            _ = await exit.value
            if let record { throw TTRPCError(StageReport.code(record), "\(what): \(record.name): \(record.error)") }
            throw TTRPCError(.internal, "\(what): the container process died during setup")
        }
        let proc: ContainerProcess
        do {
            proc = try ContainerProcess(execID: "", pid: pid, args: options.args, io: io)
        } catch {
            _ = Glibc.kill(pid, SIGKILL)
            Glibc.close(statusFD)
            Glibc.close(startFD)
            throw TTRPCError(.internal, "\(what): \(error.message)")
        }
        let c = Container(id: id, initProcess: proc, cgroup: cgroup, namespaces: flags,
                          seccomp: seccomp, startFD: startFD, statusFD: statusFD)
        cgroupOwned = false
        containers.withLock { $0[id] = c }
        oom?.watch(id, cgroup)
        let log = self.log, childPID = pid
        Task {
            let status = await exit.value
            c.status.withLock { $0 = .stopped }
            log.info("container process exited", ("container", id), ("pid", String(childPID)), ("status", status.description))
            proc.exited(status)
        }
        log.info("container created", ("container", id), ("pid", String(pid)), ("rootfs", rootfs))
        return GoogleProtobuf.Empty()
    }

    /// The reaper's answer for `pid`, asked for at once so no exit can be missed.
    private func watchExit(_ pid: pid_t) -> Task<ExitStatus, Never> {
        let reaper = self.reaper
        return Task { await reaper.wait(for: pid) }
    }

    static func namespaceFlags(_ namespaces: [Linux.Namespace], what: String) throws(TTRPCError) -> CInt {
        var flags: CInt = 0
        for ns in namespaces {
            if ns.path != nil, ns.type != "network" {
                throw TTRPCError(.invalidArgument, "\(what): joining a \(ns.type) namespace by path is not supported")
            }
            switch ns.type {
            case "mount": flags |= CInt(CL_CLONE_NEWNS)
            case "pid": flags |= CInt(CL_CLONE_NEWPID)
            case "ipc": flags |= CInt(CL_CLONE_NEWIPC)
            case "uts": flags |= CInt(CL_CLONE_NEWUTS)
            case "network", "cgroup": break  // shared with the VM
            default: throw TTRPCError(.invalidArgument, "\(what): unsupported namespace \(ns.type)")
            }
        }
        // The mount namespace is not optional: the container's mounts and root must not leak
        // into the guest.
        return flags | CInt(CL_CLONE_NEWNS)
    }

    /// OCI mount options → mount(2) flags and data.
    static func mountSpec(_ m: Mount, arena: CArena) -> cl_mount_spec {
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
        var type = m.type ?? (flags & CL_MS_BIND != 0 ? "" : "none")
        if type == "bind" {
            flags |= CL_MS_BIND
            type = ""
        }
        return cl_mount_spec(source: arena.string(m.source ?? type), target: arena.string(m.destination),
                             fstype: type.isEmpty ? nil : arena.string(type), flags: UInt(flags),
                             data: data.isEmpty ? nil : arena.string(data.joined(separator: ",")))
    }

    // MARK: - Exec

    func exec(_ req: AgentAPI.ExecProcessRequest) async throws(TTRPCError) -> GoogleProtobuf.Empty {
        let c = try container(req.containerID)
        let execID = req.execID
        let what = "exec \(execID) in container \(c.id)"
        guard Self.validID(execID) else { throw TTRPCError(.invalidArgument, "invalid exec id \"\(execID)\"") }
        let state = c.status.withLock { $0 }
        guard state == .running, c.initProcess.exitStatus == nil else {
            throw TTRPCError(.failedPrecondition, "container \(c.id) is \(state == .running ? "stopped" : state.rawValue), not running")
        }
        try c.reserve(execID)
        var registered = false
        defer { if !registered { c.release(execID) } }
        let process: Process
        do { process = try Process.decode(req.processJSON) } catch { throw TTRPCError(.invalidArgument, "\(what): \(error)") }
        let options = try ProcessOptions(process, what: what)
        let procsFD = try c.cgroup.openProcs()
        defer { Glibc.close(procsFD) }
        let io = try ProcessIO(terminal: options.terminal, rows: options.consoleSize.rows, columns: options.consoleSize.cols)

        var helper: pid_t = 0, statusFD: CInt = -1
        let arena = CArena()
        var config = options.cConfig(arena: arena, stdio: io.child, cgroupProcsFD: procsFD, seccomp: c.seccomp)
        let r = withExtendedLifetime(arena) {
            cl_container_exec(c.initProcess.pid, c.namespaces, &config, &helper, &statusFD)
        }
        io.closeChildEnds()
        if r < 0 { throw TTRPCError(.internal, "\(what): clone: \(Errno(-r))") }
        _ = watchExit(helper)  // the helper exits right after reporting; reap it
        defer { Glibc.close(statusFD) }

        // The process's own failure record (it ran first, as a vfork child) can precede the
        // helper's PID record: collect both until EOF.
        var pidRecord: StageReport.Record?, failure: StageReport.Record?
        while let r = try await StageReport.next(statusFD) {
            if r.isFailure { failure = failure ?? r } else if r.stage == CInt(CL_STAGE_PID) { pidRecord = r }
        }
        guard let pidRecord else {
            if let failure { throw TTRPCError(StageReport.code(failure), "\(what): \(failure.name): \(failure.error)") }
            throw TTRPCError(.internal, "\(what): the exec helper died")
        }
        let pid = pid_t(pidRecord.value)
        let exit = watchExit(pid)
        let proc: ContainerProcess
        do {
            proc = try ContainerProcess(execID: execID, pid: pid, args: options.args, io: io)
        } catch {
            _ = Glibc.kill(pid, SIGKILL)
            throw error
        }
        c.add(proc)
        registered = true
        let log = self.log
        Task {
            let status = await exit.value
            // Per-exec lines are debug: the guest console is an emulated UART, and a log line
            // costs milliseconds there, a sizeable part of an exec.
            log.debug("exec exited", ("container", c.id), ("exec", execID), ("pid", String(pid)), ("status", status.description))
            proc.exited(status)
        }
        // The process exists (WaitProcess will report 127 if exec failed); the RPC still says why.
        if let failure {
            throw TTRPCError(StageReport.code(failure), "\(what): \(failure.name) \(options.args[0]): \(failure.error)")
        }
        log.debug("exec started", ("container", c.id), ("exec", execID), ("pid", String(pid)))
        return GoogleProtobuf.Empty()
    }

    // MARK: - Signals, processes, pause

    func signal(_ id: String, execID: String, _ signal: Int32) throws(TTRPCError) {
        let c = try container(id)
        guard signal > 0 && signal < 65 else { throw TTRPCError(.invalidArgument, "signal \(signal) is not valid") }
        if execID.isEmpty {
            // Every process of the container; SIGKILL through cgroup.kill, which no fork escapes.
            if signal == SIGKILL { try c.cgroup.killAll(); return }
            for pid in c.cgroup.pids() { _ = Glibc.kill(pid, signal) }
            return
        }
        let p = try c.process(execID)
        guard p.exitStatus == nil else { throw TTRPCError(.notFound, "\(id): process \(execID) already finished") }
        if Glibc.kill(p.pid, signal) != 0 {
            let e = Errno.current("kill \(p.pid)")
            throw TTRPCError(e.rawValue == ESRCH ? .notFound : .internal, "container \(id): \(e)")
        }
    }

    func list(_ id: String) throws(TTRPCError) -> AgentAPI.ListProcessesResponse {
        let c = try container(id)
        var byPID: [pid_t: String] = [:]
        for p in c.allExecs where p.exitStatus == nil { byPID[p.pid] = p.execID }
        let entries = c.cgroup.pids().sorted().map { pid in
            let cmdline = TextFile.readBytes("/proc/\(pid)/cmdline", limit: 4096) ?? []
            let args = cmdline.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
            return AgentAPI.ProcessEntry(pid: pid, execID: byPID[pid] ?? "", args: args)
        }
        return AgentAPI.ListProcessesResponse(processes: entries)
    }

    func setPaused(_ id: String, _ pause: Bool) async throws(TTRPCError) {
        let c = try container(id)
        try c.status.withLock { (s: inout Container.Status) throws(TTRPCError) in
            let from: Container.Status = pause ? .running : .paused
            guard s == from else {
                throw TTRPCError(.failedPrecondition, "container \(id) is \(s.rawValue), not \(from.rawValue)")
            }
        }
        try await c.cgroup.freeze(pause)
        c.status.withLock { s in
            if s != .stopped { s = pause ? .paused : .running }
        }
        log.info(pause ? "container paused" : "container resumed", ("container", id))
    }

    // MARK: - Remove

    func remove(_ id: String, timeout: UInt32) async throws(TTRPCError) {
        let c = try container(id)
        c.abortStart()
        // Thaw first: a frozen task cannot run its exit.
        if c.status.withLock({ $0 }) == .paused { try? await c.cgroup.freeze(false) }
        try? c.cgroup.killAll()
        let limit: Duration = timeout == 0 ? .seconds(60) : .seconds(Int(timeout))
        let deadline = ContinuousClock.now + limit
        for p in [c.initProcess] + c.allExecs {
            let waited = await Self.wait(p, until: deadline)
            if !waited { throw TTRPCError(.deadlineExceeded, "container \(id): process \(p.pid) did not exit within \(limit)") }
        }
        for p in [c.initProcess] + c.allExecs { p.closeIO() }
        oom?.unwatch(id)
        try await c.cgroup.remove(within: max(.seconds(1), deadline - ContinuousClock.now))
        containers.withLock { _ = $0.removeValue(forKey: id) }
        log.info("container removed", ("container", id))
    }

    private static func wait(_ p: ContainerProcess, until deadline: ContinuousClock.Instant) async -> Bool {
        while p.exitStatus == nil {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return true
    }
}
