#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization
import SystemKit
import TTRPC

/// A source of container output for ReadStdout/ReadStderr: what the RPC answers with, and
/// when the writer side is finished.
protocol OutputSource: Sendable {
    /// The encoded `ReadStreamResponse` for up to `max` bytes, waiting until some exist; an
    /// empty message at end of stream.
    func responseBody(max: Int) async -> ResponseBody
    /// Returns once every writer has closed (the remaining bytes can still be read).
    func waitForEOF() async
    /// Stops and drops everything (the process was removed).
    func closeFD()
}

/// The agent's end of a container output pipe, read by splice(2): the bytes stay in the pipe
/// (1 MiB, the buffer; a writer blocks when it is full, so nothing is lost) until a ReadStdout
/// moves them from the pipe into the agent connection. They never enter the agent, which
/// under TCG saves two emulated copies and most syscalls per MiB.
///
/// One read at a time moves bytes (a second waits for the first splice to complete), so
/// output keeps its order. Thread-safe.
final class PipeOutput: OutputSource {
    private struct State {
        var registration: Reactor.Registration?
        var waiters: [CheckedContinuation<Void, Never>] = []
        var wantData = false
        var inFlight = false
        var hungUp = false
        var closed = false
        var fdClosed = false
    }

    private let fd: CInt
    private let reactor: Reactor
    private let state = Mutex(State())

    /// Takes ownership of the read end of a pipe.
    init(taking fd: consuming FileDescriptor, reactor: Reactor = .shared) throws(Errno) {
        try fd.setNonBlocking()
        self.fd = fd.take()
        self.reactor = reactor
        // No interest until someone waits for data; a hang-up is reported regardless.
        let reg = try reactor.register(self.fd, interest: []) { [self] events in wake(events) }
        state.withLock { $0.registration = reg }
    }

    deinit { closeFD() }

    private func wake(_ events: Reactor.Events) {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            if events.isHangup {
                // Level-triggered and permanent: stop watching, the flag answers from now on.
                s.hungUp = true
                if let reg = s.registration { reactor.deregister(reg) }
                s.registration = nil
            } else if s.wantData, let reg = s.registration {
                s.wantData = false
                try? reactor.modify(reg, interest: [])
            }
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    private enum Next {
        case take(Int)
        case endOfStream
        case wait(Reason)
    }

    func responseBody(max: Int) async -> ResponseBody {
        while true {
            let next: Next = state.withLock { s in
                if s.closed { return .endOfStream }
                if s.inFlight { return .wait(.spliceDone) }
                // Hang-up first: with no writer left, an empty pipe stays empty.
                let hungUp = s.hungUp || cl_hung_up(fd) == 1
                let n = Int(cl_readable_bytes(fd))
                if n > 0 {
                    s.inFlight = true
                    return .take(min(n, max))
                }
                return hungUp ? .endOfStream : .wait(.data)
            }
            switch next {
            case .endOfStream:
                return ResponseBody(bytes: [])
            case .take(let count):
                var prefix: [UInt8] = [0x0a]  // ReadStreamResponse.data: field 1, length-delimited
                appendVarint(count, to: &prefix)
                return ResponseBody(prefix: prefix, splice: ResponseBody.Splice(fd: fd, count: count) { [self] _ in
                    let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
                        s.inFlight = false
                        if s.closed && !s.fdClosed {
                            Glibc.close(fd)  // closeFD waited for this splice
                            s.fdClosed = true
                        }
                        let w = s.waiters
                        s.waiters = []
                        return w
                    }
                    for w in waiters { w.resume() }
                })
            case .wait(let reason):
                await suspend(until: reason)
            }
        }
    }

    func waitForEOF() async {
        while true {
            let done = state.withLock { s in s.closed || s.hungUp || cl_hung_up(fd) == 1 }
            if done { return }
            await suspend(until: .hangUp)
        }
    }

    /// What a reader waits for; each is re-checked under the lock before suspending, so a
    /// wake-up between the caller's check and here is not lost.
    private enum Reason {
        case data, spliceDone, hangUp
    }

    /// Waits for the next wake-up: an event on the pipe (data only when asked for, hang-up
    /// always), a finished splice, or closing.
    private func suspend(until reason: Reason) async {
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.closed { return true }
                switch reason {
                case .data: if s.hungUp { return true }
                case .spliceDone: if !s.inFlight { return true }
                case .hangUp: if s.hungUp { return true }
                }
                s.waiters.append(cont)
                if reason == .data, !s.wantData, let reg = s.registration {
                    s.wantData = true
                    try? reactor.modify(reg, interest: .readable)
                }
                return false
            }
            if now { cont.resume() }
        }
    }

    func closeFD() {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            guard !s.closed else { return [] }
            s.closed = true
            if let reg = s.registration { reactor.deregister(reg) }
            s.registration = nil
            // A splice still queued on the connection keeps the fd until it completes: the
            // number must not be reused under it.
            if !s.inFlight {
                Glibc.close(fd)
                s.fdClosed = true
            }
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }
}
