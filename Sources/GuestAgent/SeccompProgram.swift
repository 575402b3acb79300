#if canImport(Glibc)
import Glibc
#endif
import CSeccomp
import OCI
import SystemKit
import TTRPC

/// An OCI seccomp profile compiled to classic BPF (by libseccomp, in the agent), ready for the
/// container child to install with one prctl. Immutable; thread-safe.
final class SeccompProgram: Sendable {
    /// `struct sock_filter` instructions, 8 bytes each.
    let instructions: [UInt64]

    init(_ profile: Seccomp, what: String) throws(TTRPCError) {
        let defaultAction = try Self.action(profile.defaultAction, what: what)
        let arena = CArena()
        var rules: [cl_seccomp_rule] = []
        for s in profile.syscalls ?? [] {
            let act = try Self.action(s.action, what: what)
            var args: [cl_seccomp_arg] = []
            for a in s.args ?? [] {
                guard let op = Self.ops[a.op] else { throw TTRPCError(.invalidArgument, "\(what): unknown seccomp operator \(a.op)") }
                guard a.index < 6 else { throw TTRPCError(.invalidArgument, "\(what): seccomp arg index \(a.index) > 5") }
                args.append(cl_seccomp_arg(index: a.index, op: op, value: a.value, value_two: a.valueTwo ?? 0))
            }
            let argPointer = arena.array(args)
            for name in s.names {
                rules.append(cl_seccomp_rule(name: arena.string(name), action: act, errno_ret: s.errnoRet ?? UInt32(EPERM),
                                             args: argPointer, n_args: CInt(args.count)))
            }
        }
        // "SCMP_ARCH_X86_64" → libseccomp's "x86_64".
        let arches = (profile.architectures ?? []).map { a in
            String(a.hasPrefix("SCMP_ARCH_") ? a.dropFirst(10) : Substring(a)).lowercased()
        }
        var p = cl_seccomp_profile(default_action: defaultAction, default_errno: profile.defaultErrnoRet ?? UInt32(EPERM),
                                   arches: arena.constStrings(arches), n_arches: CInt(arches.count),
                                   rules: arena.array(rules), n_rules: CInt(rules.count))
        var filter: UnsafeMutableRawPointer? = nil
        var count: CInt = 0
        var failed: UnsafePointer<CChar>? = nil
        let r = withExtendedLifetime(arena) { cl_seccomp_compile(&p, &filter, &count, &failed) }
        guard r == 0, let filter else {
            let where_ = failed.map { String(cString: $0) } ?? "compile"
            throw TTRPCError(.invalidArgument, "\(what): seccomp profile: \(where_): \(Errno(-r))")
        }
        defer { cl_seccomp_free(filter) }
        instructions = Array(UnsafeBufferPointer(start: filter.assumingMemoryBound(to: UInt64.self), count: Int(count)))
    }

    private static func action(_ name: String, what: String) throws(TTRPCError) -> CInt {
        guard let a = actions[name] else { throw TTRPCError(.invalidArgument, "\(what): unsupported seccomp action \(name)") }
        return a
    }

    static let actions: [String: CInt] = [
        "SCMP_ACT_KILL": CInt(CL_SCMP_KILL_THREAD), "SCMP_ACT_KILL_THREAD": CInt(CL_SCMP_KILL_THREAD),
        "SCMP_ACT_KILL_PROCESS": CInt(CL_SCMP_KILL_PROCESS), "SCMP_ACT_TRAP": CInt(CL_SCMP_TRAP),
        "SCMP_ACT_ERRNO": CInt(CL_SCMP_ERRNO), "SCMP_ACT_TRACE": CInt(CL_SCMP_TRACE),
        "SCMP_ACT_ALLOW": CInt(CL_SCMP_ALLOW), "SCMP_ACT_LOG": CInt(CL_SCMP_LOG),
    ]

    static let ops: [String: CInt] = [
        "SCMP_CMP_NE": CInt(CL_SCMP_CMP_NE), "SCMP_CMP_LT": CInt(CL_SCMP_CMP_LT), "SCMP_CMP_LE": CInt(CL_SCMP_CMP_LE),
        "SCMP_CMP_EQ": CInt(CL_SCMP_CMP_EQ), "SCMP_CMP_GE": CInt(CL_SCMP_CMP_GE), "SCMP_CMP_GT": CInt(CL_SCMP_CMP_GT),
        "SCMP_CMP_MASKED_EQ": CInt(CL_SCMP_CMP_MASKED_EQ),
    ]
}
