#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import SystemKit

/// One stream transport (unix socket, vsock, virtio-serial port) carrying ttRPC frames.
///
/// Owns its fd. Reads happen on the reactor thread and feed a `FrameDecoder`; decoded output
/// is handed to `onOutput` on the reactor thread, outside any lock. `send` may be called from
/// any thread: it writes immediately when nothing is queued (no thread hop on the hot path),
/// otherwise queues and lets the reactor flush on writability. All fd access happens under the
/// connection's lock, so `close()` from any thread never races a read or write on a reused fd
/// number.
final class FrameConnection: Sendable {
    enum CloseReason: Sendable {
        case endOfFile
        case error(Errno)
        case local
    }

    /// Everything the writers and `close` share. Reading uses `reader` instead, so handler
    /// threads sending responses never wait for the reactor's read syscall.
    /// One queued piece of output: bytes, or bytes still in a pipe that splice(2) moves.
    private enum Chunk {
        case bytes([UInt8])
        /// `staged`: bytes already moved into the staging pipe, not yet into the connection.
        case splice(fd: CInt, remaining: Int, staged: Int, completion: @Sendable (Bool) -> Void)
    }

    private struct State {
        var out: [Chunk] = []
        /// Created on the first splice; closed with the connection.
        var staging: (read: CInt, write: CInt)?
        var outOffset = 0          // bytes of a leading .bytes chunk already written
        var registration: Reactor.Registration?
        var wantWrite = false
        var readPaused = false
        var closeWhenFlushed = false
        var closed = false
    }

    /// Decoder state; touched by the reactor thread (and by `close`, to exclude a read in
    /// progress). Lock order: reader, then state.
    private struct Reader {
        var decoder: FrameDecoder
        var closed = false
    }

    /// Scratch space for reads, touched only under the lock.
    private struct Scratch: @unchecked Sendable {
        let buffer: UnsafeMutableRawBufferPointer
    }

    let fd: CInt
    private let reactor: Reactor
    private let state: Mutex<State>
    private let reader: Mutex<Reader>
    private let queued = Atomic<Int>(0)
    private let paused = Atomic<Bool>(false)
    private let scratch: Scratch
    private let onOutput: @Sendable (FrameConnection, FrameDecoder.Output) -> Void
    private let onClose: @Sendable (FrameConnection, CloseReason) -> Void

    /// Takes ownership of `fd` (made non-blocking here).
    init(taking fd: consuming FileDescriptor, reactor: Reactor, maxDataLength: Int = Frame.maxDataLength,
         onOutput: @escaping @Sendable (FrameConnection, FrameDecoder.Output) -> Void,
         onClose: @escaping @Sendable (FrameConnection, CloseReason) -> Void) throws(Errno) {
        try fd.setNonBlocking()
        self.fd = fd.take()
        self.reactor = reactor
        self.state = Mutex(State())
        self.reader = Mutex(Reader(decoder: FrameDecoder(maxDataLength: maxDataLength)))
        self.scratch = Scratch(buffer: .allocate(byteCount: 64 * 1024, alignment: 16))
        self.onOutput = onOutput
        self.onClose = onClose
    }

    deinit {
        scratch.buffer.deallocate()
        // close() normally ran already; a connection that never started still owns its fd.
        if !state.withLock({ $0.closed }) { Glibc.close(fd) }
    }

    /// Starts reading. The reactor keeps the connection alive until it closes.
    func start() throws(Errno) {
        let reg = try reactor.register(fd, interest: .readable) { [self] events in handle(events) }
        state.withLock { $0.registration = reg }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Bytes queued for writing (not yet accepted by the kernel).
    var queuedBytes: Int { queued.load(ordering: .relaxed) }

    // MARK: - Reading

    private func handle(_ events: Reactor.Events) {
        if events.isWritable { flush() }
        if events.isReadable { readAvailable() }
        // A peer that is completely gone (EPOLLHUP/ERR) cannot receive anything, and while
        // reading is paused level-triggered epoll would report the hang-up forever.
        if events.isHangup && paused.load(ordering: .relaxed) { close(.endOfFile) }
    }

    private func readAvailable() {
        // Bounded work per wake-up (fairness between connections); level-triggered epoll
        // brings us back for the rest.
        for _ in 0..<8 {
            var outputs: [FrameDecoder.Output] = []
            var closeReason: CloseReason?
            let more: Bool = reader.withLock { r in
                guard !r.closed, !paused.load(ordering: .relaxed) else { return false }
                let result: ReadResult
                do {
                    result = try readNonBlocking(fd, into: scratch.buffer)
                } catch {
                    closeReason = .error((error as? Errno) ?? Errno(EIO, "read"))
                    return false
                }
                switch result {
                case .wouldBlock:
                    return false
                case .endOfFile:
                    closeReason = .endOfFile
                    return false
                case .bytes(let n):
                    r.decoder.append(UnsafeRawBufferPointer(rebasing: scratch.buffer[0..<n]))
                    while let o = r.decoder.next() { outputs.append(o) }
                    return n == scratch.buffer.count
                }
            }
            for o in outputs { onOutput(self, o) }
            if let closeReason {
                close(closeReason)
                return
            }
            if !more { return }
        }
    }

    /// Stops reading (backpressure); frames already decoded are still delivered.
    func pauseReading() {
        state.withLock { s in
            guard !s.readPaused, !s.closed else { return }
            s.readPaused = true
            paused.store(true, ordering: .relaxed)
            updateInterest(&s)
        }
    }

    func resumeReading() {
        state.withLock { s in
            guard s.readPaused, !s.closed else { return }
            s.readPaused = false
            paused.store(false, ordering: .relaxed)
            updateInterest(&s)
        }
    }

    private func updateInterest(_ s: inout State) {
        guard let reg = s.registration else { return }
        var interest: Reactor.Interest = []
        if !s.readPaused { interest.insert(.readable) }
        if s.wantWrite { interest.insert(.writable) }
        try? reactor.modify(reg, interest: interest)
    }

    // MARK: - Writing

    /// Queues `bytes` (one whole frame) for writing; false if the connection is closed.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        enqueue([.bytes(bytes)])
    }

    /// Queues a frame made of `head` and then `splice.count` bytes spliced from `splice.fd`;
    /// `splice.completion` runs once they have all moved (or the connection closed first).
    @discardableResult
    func send(_ head: [UInt8], splicing splice: ResponseBody.Splice) -> Bool {
        enqueue([.bytes(head), .splice(fd: splice.fd, remaining: splice.count, staged: 0, completion: splice.completion)])
    }

    /// Writes what it can at once when nothing is queued ahead (no thread hop on the hot
    /// path), queues the rest for the reactor.
    private func enqueue(_ chunks: [Chunk]) -> Bool {
        var failure: Errno?
        var completions: [@Sendable (Bool) -> Void] = []
        let ok: Bool = state.withLock { s in
            guard !s.closed, !s.closeWhenFlushed else { return false }
            let idle = s.out.isEmpty
            for c in chunks {
                s.out.append(c)
                queued.add(Self.size(c), ordering: .relaxed)
            }
            if idle {
                failure = writeQueued(&s, completed: &completions)
                if failure != nil { return false }
                if s.out.isEmpty { return true }
                s.wantWrite = true
                updateInterest(&s)
            }
            return true
        }
        for c in completions { c(true) }
        if let failure {
            // Never run close callbacks inline: the caller may hold its own locks.
            reactor.schedule(after: .zero) { [self] in close(.error(failure)) }
        } else if !ok {
            for case .splice(_, _, _, let completion) in chunks { completion(false) }
        }
        return ok
    }

    static let stagingSize = 1 << 20

    private static func makeStagingPipe() -> (read: CInt, write: CInt)? {
        var fds: [CInt] = [-1, -1]
        guard cl_pipe(&fds) == 0 else { return nil }
        _ = cl_set_nonblocking(fds[0], 1)
        _ = cl_set_nonblocking(fds[1], 1)
        _ = cl_set_pipe_size(fds[1], CInt(stagingSize))
        return (fds[0], fds[1])
    }

    private static func size(_ c: Chunk) -> Int {
        switch c {
        case .bytes(let b): return b.count
        case .splice(_, let remaining, _, _): return remaining
        }
    }

    /// Writes queued chunks until the kernel pushes back; nil, or the error that must close
    /// the connection. Finished splices' completions are collected to run outside the lock.
    private func writeQueued(_ s: inout State, completed: inout [@Sendable (Bool) -> Void]) -> Errno? {
        while let first = s.out.first {
            switch first {
            case .bytes(let bytes):
                let n: Int
                do {
                    n = try bytes.withUnsafeBytes { buf throws(Errno) in
                        try writeNonBlocking(fd, from: UnsafeRawBufferPointer(rebasing: buf[s.outOffset...]))
                    }
                } catch {
                    return (error as? Errno) ?? Errno(EIO, "write")
                }
                if n == 0 { return nil }
                s.outOffset += n
                queued.subtract(n, ordering: .relaxed)
                if s.outOffset == bytes.count {
                    s.out.removeFirst()
                    s.outOffset = 0
                }
            case .splice(let source, let remaining, var staged, let completion):
                // Through a staging pipe that only this connection writes, always emptied
                // whole into the connection: Linux 6.1's virtio-console splice builds zero-length
                // descriptors (QEMU then stops the device) when a splice leaves buffers behind
                // in the pipe, and the container's pipe gets new buffers at any moment.
                guard let staging = s.staging ?? Self.makeStagingPipe() else {
                    return Errno(EMFILE, "staging pipe")
                }
                s.staging = staging
                if staged == 0 {
                    let m = cl_splice(source, staging.write, UInt(min(remaining, Self.stagingSize)))
                    if m <= 0 {
                        return Errno(EIO, m == 0 ? "splice: the source pipe ended early"
                                                 : "splice: the source pipe holds less than promised (\(Errno(CInt(-m))))")
                    }
                    staged = m
                }
                let n = cl_splice(staging.read, fd, UInt(staged))
                if n == -Int(EAGAIN) {
                    s.out[0] = .splice(fd: source, remaining: remaining, staged: staged, completion: completion)
                    return nil
                }
                if n <= 0 { return n == 0 ? Errno(EIO, "splice: staging pipe empty") : Errno(CInt(-n), "splice") }
                queued.subtract(n, ordering: .relaxed)
                if n == remaining {
                    s.out.removeFirst()
                    completed.append(completion)
                } else {
                    s.out[0] = .splice(fd: source, remaining: remaining - n, staged: staged - n, completion: completion)
                }
            }
        }
        return nil
    }

    private func flush() {
        var failure: Errno?
        var finished = false
        var completions: [@Sendable (Bool) -> Void] = []
        state.withLock { s in
            guard !s.closed else { return }
            failure = writeQueued(&s, completed: &completions)
            if failure != nil || !s.out.isEmpty { return }
            s.wantWrite = false
            updateInterest(&s)
            finished = s.closeWhenFlushed
        }
        for c in completions { c(true) }
        if let failure { close(.error(failure)) } else if finished { close(.local) }
    }

    /// Closes once everything queued has been written.
    func closeAfterFlush() {
        let now: Bool = state.withLock { s in
            guard !s.closed else { return false }
            s.closeWhenFlushed = true
            return s.out.isEmpty
        }
        if now { close(.local) }
    }

    // MARK: - Closing

    /// Closes the fd now (queued bytes are dropped) and reports `reason` once.
    func close(_ reason: CloseReason = .local) {
        var abandoned: [@Sendable (Bool) -> Void] = []
        let first: Bool = reader.withLock { r in
            state.withLock { s in
                guard !s.closed else { return false }
                s.closed = true
                r.closed = true
                for case .splice(_, _, _, let completion) in s.out { abandoned.append(completion) }
                s.out = []
                if let staging = s.staging {
                    Glibc.close(staging.read)
                    Glibc.close(staging.write)
                    s.staging = nil
                }
                queued.store(0, ordering: .relaxed)
                if let reg = s.registration { reactor.deregister(reg) }
                s.registration = nil
                Glibc.close(fd)
                return true
            }
        }
        for c in abandoned { c(false) }
        if first { onClose(self, reason) }
    }
}
