#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import SystemKit

/// The agent's end of one container output pipe: bytes are read on the reactor into a bounded
/// buffer and handed out by `read(max:)`. When the buffer is full the pipe is no longer read,
/// so a fast writer blocks instead of losing output. EOF is reported only once the writer is
/// gone and every byte has been read.
final class StreamBuffer: Sendable {
    static let capacity = 1 << 20

    private struct State {
        var data: [UInt8] = []
        var eof = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var registration: Reactor.Registration?
        var paused = false
        var closed = false
    }

    private let fd: CInt
    private let reactor: Reactor
    private let state = Mutex(State())

    /// Takes ownership of the read end of a pipe.
    init(taking fd: consuming FileDescriptor, reactor: Reactor = .shared) throws(Errno) {
        try fd.setNonBlocking()
        self.fd = fd.take()
        self.reactor = reactor
        let reg = try reactor.register(self.fd, interest: .readable) { [self] _ in pull() }
        state.withLock { $0.registration = reg }
    }

    deinit { closeFD() }

    private func pull() {
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            guard !s.closed, !s.eof else { return [] }
            var got = false
            while s.data.count < Self.capacity {
                let r = buf.withUnsafeMutableBytes { (try? readNonBlocking(fd, into: $0)) ?? .endOfFile }
                switch r {
                case .bytes(let n): s.data += buf[0..<n]; got = true; continue
                case .wouldBlock: break
                case .endOfFile: s.eof = true; got = true
                }
                break
            }
            if s.eof, let reg = s.registration {
                reactor.deregister(reg)
                s.registration = nil
            } else if s.data.count >= Self.capacity, !s.paused, let reg = s.registration {
                s.paused = true
                try? reactor.modify(reg, interest: [])
            }
            guard got else { return [] }
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    /// Up to `max` bytes, waiting until some exist; empty means end of stream.
    func read(max: Int) async -> [UInt8] {
        while true {
            let out: [UInt8]? = state.withLock { s in
                if !s.data.isEmpty {
                    let n = min(max, s.data.count)
                    let chunk = Array(s.data.prefix(n))
                    s.data.removeFirst(n)
                    if s.paused && s.data.count < Self.capacity / 2, let reg = s.registration {
                        s.paused = false
                        try? reactor.modify(reg, interest: .readable)
                    }
                    return chunk
                }
                return s.eof || s.closed ? [] : nil
            }
            if let out { return out }
            await waitForChange { !$0.data.isEmpty || $0.eof || $0.closed }
        }
    }

    /// Waits until the writer has closed and everything has been read into the buffer.
    func waitForEOF() async {
        await waitForChange { $0.eof || $0.closed }
    }

    /// Suspends until `ready` holds for the state (checked under the lock, then after every
    /// wake-up from `pull` or `closeFD`).
    private func waitForChange(until ready: @escaping (State) -> Bool) async {
        while !state.withLock({ ready($0) }) {
            await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if ready(s) { return true }
                    s.waiters.append(cont)
                    return false
                }
                if now { cont.resume() }
            }
        }
    }

    /// Stops reading and drops buffered data (container removed).
    func closeFD() {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            guard !s.closed else { return [] }
            s.closed = true
            if let reg = s.registration { reactor.deregister(reg) }
            s.registration = nil
            Glibc.close(fd)
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }
}
