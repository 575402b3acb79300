#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Protocols
import Synchronization
import SystemKit
import TTRPC

/// The agent's sandbox-level RPCs: `grpc.Health` and CreateSandbox / DestroySandbox /
/// GetGuestDetails / ReadGuestFile of `grpc.AgentService`.
///
/// Thread-safe: sandbox state lives in a mutex; filesystem work is short and synchronous.
public final class SandboxService: Sendable {
    public static let version = "0.1.0"

    private struct State {
        var created = false
        var sandboxID = ""
        /// Mount points made by CreateSandbox, in mount order.
        var mounts: [String] = []
    }

    private let log: Logger
    private let state = Mutex(State())
    private let powerOff: @Sendable (String) -> Void
    private let preparation = Mutex<Task<Void, Never>?>(nil)

    /// `powerOff` is called after DestroySandbox has answered.
    public init(log: Logger, powerOff: @escaping @Sendable (String) -> Void) {
        self.log = log
        self.powerOff = powerOff
    }

    /// Runs `work` (module loading) on its own thread-pool task; sandbox RPCs wait for it.
    public func loadInBackground(_ work: @escaping @Sendable () -> Void) {
        // A detached task on the global pool: finit_module blocks, so it must not run on the
        // reactor, which is busy answering Health meanwhile.
        preparation.withLock { $0 = Task.detached(priority: .utility) { work() } }
    }

    private func prepared() async {
        await preparation.withLock { $0 }?.value
    }

    public func register(on server: TTRPCServer) {
        server.register(AgentAPI.HealthService.check) { _, _ in
            AgentAPI.HealthCheckResponse(status: .serving)
        }
        server.register(AgentAPI.HealthService.version) { _, _ in
            AgentAPI.VersionCheckResponse(grpcVersion: "ttrpc", agentVersion: Self.version)
        }
        server.register(AgentAPI.AgentService.getGuestDiagnostics) { _, _ in GuestDiagnostics.snapshot() }
        server.register(AgentAPI.AgentService.createSandbox) { [self] req, _ in
            await prepared()
            return try createSandbox(req)
        }
        server.register(AgentAPI.AgentService.destroySandbox) { [self] _, _ in try destroySandbox() }
        server.register(AgentAPI.AgentService.getGuestDetails) { [self] req, _ in guestDetails(req) }
        server.register(AgentAPI.AgentService.readGuestFile) { req, _ in try Self.readGuestFile(req) }
    }

    // MARK: - CreateSandbox

    func createSandbox(_ req: AgentAPI.CreateSandboxRequest) throws -> GoogleProtobuf.Empty {
        try state.withLock { s in
            guard !s.created else { throw TTRPCError(.alreadyExists, "sandbox \(s.sandboxID) already created") }
            var mounted: [String] = []
            do {
                if !req.hostname.isEmpty {
                    let r = cl_sethostname(req.hostname)
                    if r < 0 { throw TTRPCError(.invalidArgument, "sethostname \(req.hostname): \(Errno(-r))") }
                }
                if !req.dns.isEmpty { try writeResolvConf(req.dns) }
                for storage in req.storages {
                    try mount(storage)
                    mounted.append(storage.mountPoint)
                }
            } catch {
                // Undo what this call mounted before failing.
                for m in mounted.reversed() { _ = cl_umount(m, 1) }
                throw error
            }
            s.created = true
            s.sandboxID = req.sandboxID
            s.mounts = mounted
        }
        log.info("sandbox created", ("sandbox", req.sandboxID), ("hostname", req.hostname), ("storages", String(req.storages.count)))
        return GoogleProtobuf.Empty()
    }

    private func writeResolvConf(_ lines: [String]) throws {
        try GuestInit.makeDirectories("/etc")
        let text = lines.joined(separator: "\n") + "\n"
        let fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TTRPCError(.internal, "open /etc/resolv.conf: \(Errno.current())") }
        defer { close(fd) }
        try FileDescriptor(taking: dup(fd)).writeAll(Array(text.utf8))
    }

    /// Mounts one storage. Drivers: `9p` (virtio-9p share by mount tag), `ephemeral` (tmpfs),
    /// `local` (a directory).
    private func mount(_ s: AgentAPI.Storage) throws {
        guard s.mountPoint.hasPrefix("/") else {
            throw TTRPCError(.invalidArgument, "storage \(s.source): mount point \"\(s.mountPoint)\" is not absolute")
        }
        do {
            try GuestInit.makeDirectories(s.mountPoint)
        } catch {
            throw TTRPCError(.internal, "storage \(s.source): \(error)")
        }
        let r: CInt
        switch s.driver {
        case "9p":
            let options = s.options.isEmpty ? ["trans=virtio", "version=9p2000.L", "msize=524288"] : s.options
            r = cl_mount(s.source, s.mountPoint, s.fstype.isEmpty ? "9p" : s.fstype, 0, options.joined(separator: ","))
        case "ephemeral":
            r = cl_mount("tmpfs", s.mountPoint, "tmpfs", UInt(CL_MS_NOSUID | CL_MS_NODEV), s.options.joined(separator: ","))
        case "local":
            return
        default:
            throw TTRPCError(.invalidArgument, "storage \(s.source): unsupported driver \"\(s.driver)\"")
        }
        if r < 0 {
            throw TTRPCError(.internal, "mount \(s.driver) \(s.source) on \(s.mountPoint): \(Errno(-r))")
        }
        log.info("storage mounted", ("driver", s.driver), ("source", s.source), ("mount_point", s.mountPoint))
    }

    // MARK: - DestroySandbox

    func destroySandbox() throws -> GoogleProtobuf.Empty {
        let mounts = state.withLock { s -> [String] in
            let m = s.mounts
            s.mounts = []
            s.created = false
            return m
        }
        var failures: [String] = []
        for m in mounts.reversed() {
            let r = cl_umount(m, 0)
            if r < 0 {
                failures.append("\(m): \(Errno(-r))")
                _ = cl_umount(m, 1)  // detach it anyway; we are powering off
            }
        }
        log.info("sandbox destroyed", ("unmounted", String(mounts.count)))
        // Answer first, then power off: the host waits for QEMU to exit.
        Reactor.shared.schedule(after: .milliseconds(50)) { [powerOff] in powerOff("DestroySandbox") }
        if !failures.isEmpty { log.warning("unmount failed", ("mounts", failures.joined(separator: "; "))) }
        return GoogleProtobuf.Empty()
    }

    // MARK: - Details and diagnostics

    func guestDetails(_ req: AgentAPI.GuestDetailsRequest) -> AgentAPI.GuestDetailsResponse {
        var response = AgentAPI.GuestDetailsResponse()
        if req.memBlockSize, let text = TextFile.read("/sys/devices/system/memory/block_size_bytes") {
            response.memBlockSizeBytes = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines), radix: 16) ?? 0
        }
        response.agentDetails = AgentAPI.AgentDetails(version: Self.version, initDaemon: getpid() == 1,
                                                      storageHandlers: ["9p", "ephemeral", "local"], supportsSeccomp: false)
        return response
    }

    static func readGuestFile(_ req: AgentAPI.ReadGuestFileRequest) throws -> AgentAPI.ReadGuestFileResponse {
        guard req.path.hasPrefix("/") else { throw TTRPCError(.invalidArgument, "path \"\(req.path)\" is not absolute") }
        let fd = open(req.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = Errno.current("open \(req.path)")
            throw TTRPCError(e.rawValue == ENOENT ? .notFound : .internal, e.description)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TTRPCError(.internal, "\(Errno.current("fstat \(req.path)"))") }
        let want = min(Int(req.len == 0 ? 1 << 20 : req.len), 1 << 20)
        var data = [UInt8](repeating: 0, count: want)
        let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(req.offset)) }
        guard n >= 0 else { throw TTRPCError(.internal, "\(Errno.current("read \(req.path)"))") }
        return AgentAPI.ReadGuestFileResponse(data: Array(data[0..<n]), size: UInt64(st.st_size))
    }
}
