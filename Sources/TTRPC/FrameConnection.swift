#if canImport(Glibc)
import Glibc
#endif
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
    private struct State {
        var out: [[UInt8]] = []
        var outOffset = 0          // bytes of out[0] already written
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
        var failure: Errno?
        let ok: Bool = state.withLock { s in
            guard !s.closed, !s.closeWhenFlushed else { return false }
            if s.out.isEmpty {
                do {
                    let n = try bytes.withUnsafeBytes { buf throws(Errno) in try writeNonBlocking(fd, from: buf) }
                    if n == bytes.count { return true }
                    s.out.append(bytes)
                    s.outOffset = n
                    queued.add(bytes.count - n, ordering: .relaxed)
                } catch {
                    failure = (error as? Errno) ?? Errno(EIO, "write")
                    return false
                }
                s.wantWrite = true
                updateInterest(&s)
            } else {
                s.out.append(bytes)
                queued.add(bytes.count, ordering: .relaxed)
            }
            return true
        }
        if let failure {
            // Never run close callbacks inline: the caller may hold its own locks.
            reactor.schedule(after: .zero) { [self] in close(.error(failure)) }
        }
        return ok
    }

    private func flush() {
        var failure: Errno?
        var finished = false
        state.withLock { s in
            guard !s.closed else { return }
            while let first = s.out.first {
                let n: Int
                do {
                    n = try first.withUnsafeBytes { buf throws(Errno) in
                        try writeNonBlocking(fd, from: UnsafeRawBufferPointer(rebasing: buf[s.outOffset...]))
                    }
                } catch {
                    failure = (error as? Errno) ?? Errno(EIO, "write")
                    return
                }
                if n == 0 { return }
                s.outOffset += n
                queued.subtract(n, ordering: .relaxed)
                if s.outOffset == first.count {
                    s.out.removeFirst()
                    s.outOffset = 0
                }
            }
            s.wantWrite = false
            updateInterest(&s)
            finished = s.closeWhenFlushed
        }
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
        let first: Bool = reader.withLock { r in
            state.withLock { s in
                guard !s.closed else { return false }
                s.closed = true
                r.closed = true
                s.out = []
                queued.store(0, ordering: .relaxed)
                if let reg = s.registration { reactor.deregister(reg) }
                s.registration = nil
                Glibc.close(fd)
                return true
            }
        }
        if first { onClose(self, reason) }
    }
}
