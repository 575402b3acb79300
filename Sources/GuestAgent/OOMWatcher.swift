#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import SystemKit

/// Turns OOM kills in container cgroups into events for GetOOMEvent: an inotify watch on each
/// container's `memory.events` (the kernel signals modification when a counter moves); a rise
/// of `oom_kill` queues the container id. Long-polling callers take events in order.
/// Thread-safe.
final class OOMWatcher: Sendable {
    private struct Watch {
        let id: String
        let cgroup: ContainerCgroup
        var kills: UInt64
    }

    private struct State {
        var watches: [CInt: Watch] = [:]
        var pending: [String] = []
        var waiters: [CheckedContinuation<String, Never>] = []
    }

    private let fd: CInt
    private let state = Mutex(State())
    private let log: Logger

    init(log: Logger, reactor: Reactor = .shared) throws(Errno) {
        let fd = cl_inotify_init()
        if fd < 0 { throw Errno(-fd, "inotify_init1") }
        self.fd = fd
        self.log = log
        _ = try reactor.register(fd, interest: .readable) { [self] _ in drain() }
    }

    func watch(_ id: String, _ cgroup: ContainerCgroup) {
        let wd = cl_inotify_watch_modify(fd, cgroup.eventsFile)
        guard wd >= 0 else {
            log.warning("cannot watch for OOM kills", ("container", id), ("errno", String(-wd)))
            return
        }
        let kills = cgroup.oomKills
        state.withLock { $0.watches[wd] = Watch(id: id, cgroup: cgroup, kills: kills) }
    }

    func unwatch(_ id: String) {
        let wds = state.withLock { s -> [CInt] in
            let found = s.watches.filter { $0.value.id == id }.map(\.key)
            for wd in found { s.watches[wd] = nil }
            return found
        }
        for wd in wds { _ = cl_inotify_unwatch(fd, wd) }
    }

    /// The next container that had a process OOM-killed, waiting until one does.
    func next() async -> String {
        await withCheckedContinuation { cont in
            let ready = state.withLock { s -> String? in
                if !s.pending.isEmpty { return s.pending.removeFirst() }
                s.waiters.append(cont)
                return nil
            }
            if let ready { cont.resume(returning: ready) }
        }
    }

    private func drain() {
        var wds = [CInt](repeating: 0, count: 64)
        while true {
            let n = Int(wds.withUnsafeMutableBufferPointer { cl_inotify_read(fd, $0.baseAddress, CInt($0.count)) })
            if n <= 0 { return }
            for wd in Set(wds[0..<n]) { check(wd) }
        }
    }

    private func check(_ wd: CInt) {
        let resumed = state.withLock { s -> [(CheckedContinuation<String, Never>, String)] in
            guard var w = s.watches[wd] else { return [] }
            let now = w.cgroup.oomKills
            guard now > w.kills else { return [] }
            let id = w.id
            w.kills = now
            s.watches[wd] = w
            if s.waiters.isEmpty {
                s.pending.append(id)
                if s.pending.count > 1024 { s.pending.removeFirst() }
                return []
            }
            return [(s.waiters.removeFirst(), id)]
        }
        for (cont, id) in resumed {
            log.info("container OOM kill", ("container", id))
            cont.resume(returning: id)
        }
    }
}
