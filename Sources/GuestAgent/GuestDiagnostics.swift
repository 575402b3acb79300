#if canImport(Glibc)
import Glibc
#endif
import Protocols
import SystemKit

/// GetGuestDiagnostics: a snapshot of what the guest holds, read from /proc and the cgroup
/// tree, so a host test or an operator can see leftovers (mounts, cgroups, processes,
/// zombies) after containers are gone.
enum GuestDiagnostics {
    static func snapshot() -> AgentAPI.GuestDiagnosticsResponse {
        // mountinfo field 5 is the mount point.
        let mounts = (TextFile.read("/proc/self/mountinfo") ?? "").split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            return fields.count > 4 ? String(fields[4]) : nil
        }
        let cgroups = (TextFile.directoryEntries(ContainerCgroup.parent) ?? []).filter { name in
            var st = stat()
            return stat("\(ContainerCgroup.parent)/\(name)", &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
        }.sorted()
        let me = getpid()
        var pids: [Int32] = []
        var zombies: UInt32 = 0
        for name in TextFile.directoryEntries("/proc") ?? [] {
            guard let pid = Int32(name), pid != me else { continue }
            // /proc/<pid>/stat: "pid (comm) S ..."; comm may hold spaces, so read after the last ')'.
            guard let stat = TextFile.read("/proc/\(pid)/stat", limit: 1024), let close = stat.lastIndex(of: ")") else { continue }
            if stat[stat.index(after: close)...].split(separator: " ").first == "Z" {
                zombies += 1
                pids.append(pid)
                continue
            }
            // Kernel threads have no command line; they are the kernel's, not leftovers.
            if (TextFile.readBytes("/proc/\(pid)/cmdline", limit: 1) ?? []).isEmpty { continue }
            pids.append(pid)
        }
        return AgentAPI.GuestDiagnosticsResponse(mountPoints: mounts, containerCgroups: cgroups, pids: pids.sorted(), zombies: zombies)
    }
}
