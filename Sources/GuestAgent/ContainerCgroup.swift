#if canImport(Glibc)
import Glibc
#endif
import OCI
import Protocols
import SystemKit
import TTRPC

/// One container's cgroup v2 directory in the guest, `/sys/fs/cgroup/kata/<id>`: limits from
/// `linux.resources`, live updates, stats, the freezer, cgroup.kill and removal. Every process
/// of the container (first process and execs) joins it before exec. Thread-safe (the kernel
/// files are the state).
final class ContainerCgroup: Sendable {
    static let mountPoint = "/sys/fs/cgroup"
    static let parent = "/sys/fs/cgroup/kata"
    static let wanted = ["cpuset", "cpu", "memory", "pids"]

    let path: String

    /// Enables the controllers for the containers' parent (once, at agent start; repeating it
    /// is harmless). The root cgroup may hold processes and still delegate controllers.
    static func prepareParent() throws(TTRPCError) {
        let available = Set((TextFile.read("\(mountPoint)/cgroup.controllers") ?? "").split(separator: " ").map(String.init))
        let enable = wanted.filter { available.contains($0) }.map { "+" + $0 }.joined(separator: " ")
        try write(enable, to: "\(mountPoint)/cgroup.subtree_control")
        if mkdir(parent, 0o755) != 0 && errno != EEXIST { throw failure("mkdir \(parent)") }
        try write(enable, to: "\(parent)/cgroup.subtree_control")
    }

    init(id: String) throws(TTRPCError) {
        path = "\(Self.parent)/\(id)"
        if mkdir(path, 0o755) != 0 { throw Self.failure("mkdir \(path)") }
    }

    // MARK: - Resources

    /// Writes every limit `r` sets; fields it leaves out keep their value.
    func apply(_ r: Resources) throws(TTRPCError) {
        if let m = r.memory {
            if let limit = m.limit { try set("memory.max", limit > 0 ? String(limit) : "max") }
            if let low = m.reservation { try set("memory.low", low > 0 ? String(low) : "0") }
            // OCI swap is memory+swap; cgroup v2 counts swap alone. The guest has no swap file,
            // so the file may be missing.
            if let swap = m.swap, access("\(path)/memory.swap.max", W_OK) == 0 {
                let limit = m.limit ?? 0
                try set("memory.swap.max", swap < 0 ? "max" : String(max(0, swap - limit)))
            }
        }
        if let c = r.cpu {
            if let shares = c.shares, shares > 0 {
                // The conversion runc and crun share: shares 2…262144 → weight 1…10000.
                let s = min(max(shares, 2), 262144)
                try set("cpu.weight", String(1 + ((s - 2) * 9999) / 262142))
            }
            if c.quota != nil || c.period != nil {
                let period = c.period ?? 100_000
                let quota = c.quota.map { $0 > 0 ? String($0) : "max" } ?? "max"
                try set("cpu.max", "\(quota) \(period)")
            }
            if let cpus = c.cpus, !cpus.isEmpty { try set("cpuset.cpus", cpus) }
            if let mems = c.mems, !mems.isEmpty { try set("cpuset.mems", mems) }
        }
        if let p = r.pids { try set("pids.max", p.limit > 0 ? String(p.limit) : "max") }
        for (key, value) in (r.unified ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard !key.contains("/"), !key.hasPrefix(".") else {
                throw TTRPCError(.invalidArgument, "unified cgroup key \(key) is not a file name")
            }
            try set(key, value)
        }
    }

    func stats() -> AgentAPI.CgroupStats {
        let cpu = keyed("cpu.stat"), events = keyed("memory.events")
        return AgentAPI.CgroupStats(
            cpuUsageUsec: cpu["usage_usec"] ?? 0, cpuUserUsec: cpu["user_usec"] ?? 0, cpuSystemUsec: cpu["system_usec"] ?? 0,
            memoryUsage: number("memory.current"), memoryLimit: number("memory.max"),
            pidsCurrent: number("pids.current"), pidsLimit: number("pids.max"), oomKills: events["oom_kill"] ?? 0)
    }

    var oomKills: UInt64 { keyed("memory.events")["oom_kill"] ?? 0 }
    var eventsFile: String { "\(path)/memory.events" }

    // MARK: - Processes

    /// `cgroup.procs` opened for writing "0" from a child (which moves that child in).
    func openProcs() throws(TTRPCError) -> CInt {
        let fd = open("\(path)/cgroup.procs", O_WRONLY | O_CLOEXEC)
        if fd < 0 { throw Self.failure("open \(path)/cgroup.procs") }
        return fd
    }

    func pids() -> [pid_t] {
        (TextFile.read("\(path)/cgroup.procs") ?? "").split(separator: "\n").compactMap { pid_t($0) }
    }

    var populated: Bool { (keyed("cgroup.events")["populated"] ?? 0) != 0 }

    /// SIGKILL to every process in the cgroup, atomically (no fork can escape it).
    func killAll() throws(TTRPCError) { try set("cgroup.kill", "1") }

    /// Freezes or thaws, and waits until the kernel reports the new state.
    func freeze(_ on: Bool) async throws(TTRPCError) {
        try set("cgroup.freeze", on ? "1" : "0")
        let want: UInt64 = on ? 1 : 0
        for _ in 0..<500 {
            if keyed("cgroup.events")["frozen"] == want { return }
            try? await Task.sleep(for: .milliseconds(2))
        }
        throw TTRPCError(.deadlineExceeded, "cgroup \(path) did not become \(on ? "frozen" : "thawed") within 1 s")
    }

    /// Removes the directory once the last process has gone (the kernel refuses it while
    /// exiting tasks still count).
    func remove(within limit: Duration = .seconds(10)) async throws(TTRPCError) {
        let deadline = ContinuousClock.now + limit
        while true {
            if rmdir(path) == 0 || errno == ENOENT { return }
            guard errno == EBUSY, ContinuousClock.now < deadline else { throw Self.failure("rmdir \(path)") }
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    // MARK: - Files

    private func set(_ file: String, _ value: String) throws(TTRPCError) { try Self.write(value, to: "\(path)/\(file)") }

    private static func write(_ value: String, to file: String) throws(TTRPCError) {
        do {
            let fd = try FileDescriptor.open(file, O_WRONLY | O_CLOEXEC)
            try fd.writeAll(Array(value.utf8))
        } catch {
            throw TTRPCError(error.rawValue == EINVAL || error.rawValue == ERANGE ? .invalidArgument : .internal,
                             "write \"\(value)\" to \(file): \(error)")
        }
    }

    private static func failure(_ what: String) -> TTRPCError {
        let e = Errno.current(what)
        return TTRPCError(e.rawValue == EEXIST ? .alreadyExists : .internal, "\(e)")
    }

    /// A single-number file; "max" reads as UInt64.max.
    private func number(_ file: String) -> UInt64 {
        let s = (TextFile.read("\(path)/\(file)") ?? "").split(separator: "\n").first.map(String.init) ?? ""
        return s == "max" ? UInt64.max : UInt64(s) ?? 0
    }

    /// A "key value" per line file.
    private func keyed(_ file: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for line in (TextFile.read("\(path)/\(file)") ?? "").split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let v = UInt64(parts[1]) { out[String(parts[0])] = v }
        }
        return out
    }
}
