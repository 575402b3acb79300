#if canImport(Glibc)
import Glibc
#endif
import Protocols
import Synchronization
import SystemKit
import TTRPC

/// The agent's end of one container output pipe: bytes are read on the reactor into a bounded
/// buffer and handed out by `read(max:)`. When the buffer is full the pipe is no longer read,
/// so a fast writer blocks instead of losing output. EOF is reported only once the writer is
/// gone and every byte has been read.
final class StreamBuffer: OutputSource {
    static let capacity = 1 << 20
    /// Where pipe reads land before they become exact-size chunks: as large as a pipe, so a
    /// full pipe becomes one chunk a ReadStdout can hand out without joining. Pulls run on the
    /// reactor thread, so the lock is never contended; one buffer serves every stream.
    private static let scratch = Mutex(UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16))

    private struct State {
        /// FIFO of chunks as read from the pipe; `head` indexes the first live one, so taking
        /// a chunk never shifts the bytes behind it.
        var chunks: [[UInt8]] = []
        var head = 0
        var buffered = 0
        var eof = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var registration: Reactor.Registration?
        var paused = false
        var closed = false

        /// Up to `max` bytes: the first chunk as it is when it fits (no copy), else joined or
        /// split chunks.
        mutating func take(max: Int) -> [UInt8] {
            let first = chunks[head]
            if first.count <= max && (head + 1 == chunks.count || first.count + chunks[head + 1].count > max) {
                chunks[head] = []
                advance()
                buffered -= first.count
                return first
            }
            var out: [UInt8] = []
            out.reserveCapacity(min(max, buffered))
            while out.count < max && head < chunks.count {
                let c = chunks[head]
                let n = min(max - out.count, c.count)
                out += c[0..<n]
                if n == c.count {
                    chunks[head] = []
                    advance()
                } else {
                    chunks[head] = Array(c[n...])
                }
            }
            buffered -= out.count
            return out
        }

        private mutating func advance() {
            head += 1
            if head == chunks.count {
                chunks.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 64 {
                chunks.removeFirst(head)
                head = 0
            }
        }
    }

    private let fd: CInt
    private let reactor: Reactor
    private let state = Mutex(State())

    /// Takes ownership of the read end of a pipe (or a pty master).
    init(taking fd: consuming FileDescriptor, reactor: Reactor = .shared) throws(Errno) {
        try fd.setNonBlocking()
        self.fd = fd.take()
        self.reactor = reactor
        let reg = try reactor.register(self.fd, interest: .readable) { [self] _ in pull() }
        state.withLock { $0.registration = reg }
    }

    deinit { closeFD() }

    private func pull() {
        let waiters: [CheckedContinuation<Void, Never>] = Self.scratch.withLock { buf in
            state.withLock { s in
                guard !s.closed, !s.eof else { return [] }
                var got = false
                while s.buffered < Self.capacity {
                    // A pty master reports EIO once the other side is gone: that is its EOF.
                    let r = (try? readNonBlocking(fd, into: buf)) ?? .endOfFile
                    switch r {
                    case .bytes(let n):
                        s.chunks.append(Array(UnsafeRawBufferPointer(rebasing: buf[0..<n])))
                        s.buffered += n
                        got = true
                        continue
                    case .wouldBlock: break
                    case .endOfFile: s.eof = true; got = true
                    }
                    break
                }
                if s.eof, let reg = s.registration {
                    reactor.deregister(reg)
                    s.registration = nil
                } else if s.buffered >= Self.capacity, !s.paused, let reg = s.registration {
                    s.paused = true
                    try? reactor.modify(reg, interest: [])
                }
                guard got else { return [] }
                let w = s.waiters
                s.waiters = []
                return w
            }
        }
        for w in waiters { w.resume() }
    }

    /// Up to `max` bytes, waiting until some exist; empty means end of stream.
    func read(max: Int) async -> [UInt8] {
        while true {
            let out: [UInt8]? = state.withLock { s in
                if s.buffered > 0 {
                    let chunk = s.take(max: max)
                    if s.paused && s.buffered < Self.capacity / 2, let reg = s.registration {
                        s.paused = false
                        try? reactor.modify(reg, interest: .readable)
                    }
                    return chunk
                }
                return s.eof || s.closed ? [] : nil
            }
            if let out { return out }
            await waitForChange { $0.buffered > 0 || $0.eof || $0.closed }
        }
    }

    func responseBody(max: Int) async -> ResponseBody {
        ResponseBody(bytes: AgentAPI.ReadStreamResponse(data: await read(max: max)).serializedBytes())
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
