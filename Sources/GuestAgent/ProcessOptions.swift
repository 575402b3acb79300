#if canImport(Glibc)
import Glibc
#endif
import CLinux
import OCI
import TTRPC

/// A container process as the C code needs it, validated from an OCI `process` object: unknown
/// rlimits are rejected up front, so a bad spec fails the RPC with InvalidArgument instead of a
/// stage error from the child. Value type, freely shareable.
struct ProcessOptions: Sendable {
    let args: [String]
    let env: [String]
    let cwd: String
    let uid: UInt32, gid: UInt32
    let groups: [UInt32]
    let terminal: Bool
    let consoleSize: (rows: UInt16, cols: UInt16)
    let rlimits: [(resource: Int32, soft: UInt64, hard: UInt64)]
    let oomScoreAdj: Int32?
    let umask: Int32
    let capabilities: CapabilitySets?
    let noNewPrivileges: Bool

    struct CapabilitySets: Sendable {
        var bounding: UInt64 = 0, effective: UInt64 = 0, permitted: UInt64 = 0, inheritable: UInt64 = 0, ambient: UInt64 = 0
    }

    init(_ p: Process, what: String) throws(TTRPCError) {
        guard let args = p.args, !args.isEmpty else { throw TTRPCError(.invalidArgument, "\(what): the process has no args") }
        self.args = args
        env = p.env ?? []
        cwd = p.cwd.isEmpty ? "/" : p.cwd
        guard cwd.hasPrefix("/") else { throw TTRPCError(.invalidArgument, "\(what): cwd \"\(cwd)\" is not absolute") }
        uid = p.user.uid
        gid = p.user.gid
        groups = p.user.additionalGids ?? []
        terminal = p.terminal ?? false
        consoleSize = (UInt16(clamping: p.consoleSize?.height ?? 0), UInt16(clamping: p.consoleSize?.width ?? 0))
        var limits: [(resource: Int32, soft: UInt64, hard: UInt64)] = []
        for r in p.rlimits ?? [] {
            guard let res = Self.rlimitNames[r.type] else {
                throw TTRPCError(.invalidArgument, "\(what): unknown rlimit \(r.type)")
            }
            limits.append((res, r.soft, r.hard))
        }
        rlimits = limits
        if let adj = p.oomScoreAdj {
            guard (-1000...1000).contains(adj) else { throw TTRPCError(.invalidArgument, "\(what): oomScoreAdj \(adj) out of range") }
            oomScoreAdj = Int32(adj)
        } else {
            oomScoreAdj = nil
        }
        umask = p.user.umask.map { Int32($0 & 0o777) } ?? -1
        noNewPrivileges = p.noNewPrivileges ?? false
        capabilities = p.capabilities.map { c in
            CapabilitySets(bounding: Self.mask(c.bounding), effective: Self.mask(c.effective),
                           permitted: Self.mask(c.permitted), inheritable: Self.mask(c.inheritable),
                           ambient: Self.mask(c.ambient))
        }
    }

    /// Capability names → bit mask. Names this kernel table does not know are ignored, as runc
    /// does, so specs written for newer kernels still run.
    static func mask(_ names: [String]?) -> UInt64 {
        var m: UInt64 = 0
        for n in names ?? [] {
            if let bit = capabilityNumbers[n] { m |= 1 << UInt64(bit) }
        }
        return m
    }

    /// `cl_process_config` for these options; pointers live as long as `arena`.
    func cConfig(arena: CArena, stdio: (CInt, CInt, CInt), cgroupProcsFD: CInt, seccomp: SeccompProgram?) -> cl_process_config {
        let caps = capabilities ?? CapabilitySets()
        let limits = rlimits.map { cl_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) }
        return cl_process_config(
            argv: arena.strings(args), envp: arena.strings(env), cwd: arena.string(cwd),
            uid: uid, gid: gid, groups: arena.array(groups), n_groups: CInt(groups.count),
            stdio: stdio, terminal: terminal ? 1 : 0, cgroup_procs_fd: cgroupProcsFD,
            rlimits: arena.array(limits), n_rlimits: CInt(limits.count),
            oom_score_adj_set: oomScoreAdj == nil ? 0 : 1, oom_score_adj: oomScoreAdj ?? 0, umask: umask,
            caps_set: capabilities == nil ? 0 : 1, cap_bounding: caps.bounding, cap_effective: caps.effective,
            cap_permitted: caps.permitted, cap_inheritable: caps.inheritable, cap_ambient: caps.ambient,
            no_new_privs: noNewPrivileges ? 1 : 0,
            seccomp_filter: seccomp.map { UnsafeRawPointer(arena.array($0.instructions)) },
            seccomp_len: CInt(seccomp?.instructions.count ?? 0))
    }

    static let rlimitNames: [String: Int32] = [
        "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
        "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
        "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
        "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
    ]

    /// linux/capability.h numbering.
    static let capabilityNumbers: [String: Int] = {
        let names = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                     "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
                     "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
                     "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
                     "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
                     "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"]
        var table: [String: Int] = [:]
        for (i, n) in names.enumerated() { table["CAP_" + n] = i }
        return table
    }()
}
