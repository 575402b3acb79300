#if canImport(Glibc)
import Glibc
#endif
import JSON
import Synchronization
import SystemKit

/// A QMP error: QEMU's `{"error": {"class", "desc"}}`, or the monitor going away.
public enum QMPError: Error, Hashable, Sendable, CustomStringConvertible {
    case command(name: String, errorClass: String, description: String)
    case disconnected
    case timeout(String)
    case protocolError(String)

    public var description: String {
        switch self {
        case .command(let n, let c, let d): return "QMP \(n): \(c): \(d)"
        case .disconnected: return "QMP: monitor disconnected"
        case .timeout(let what): return "QMP: timed out \(what)"
        case .protocolError(let m): return "QMP: \(m)"
        }
    }
}

/// An asynchronous QMP event (`SHUTDOWN`, `STOP`, `RESUME`, `GUEST_PANICKED`, `DEVICE_DELETED`, …).
public struct QMPEvent: Sendable, Hashable {
    public let name: String
    public let data: JSONValue
}

/// A client of QEMU's QMP monitor over its unix socket.
///
/// Commands carry ids and are matched to their replies; events go to every subscriber.
/// Reading happens on the reactor; writes are queued and pumped in order, so concurrent
/// commands never interleave. Thread-safe.
public final class QMPClient: Sendable {
    private struct State {
        var buffer: [UInt8] = []
        var greeting: JSONValue?
        var greetingWaiters: [CheckedContinuation<JSONValue, any Error>] = []
        var pending: [Int: (String, CheckedContinuation<JSONValue, any Error>)] = [:]
        var nextID = 1
        var subscribers: [Int: AsyncStream<QMPEvent>.Continuation] = [:]
        var nextSubscriber = 1
        var out: [UInt8] = []
        var pumping = false
        var closed = false
        var registration: Reactor.Registration?
    }

    private let fd: CInt
    private let reactor: Reactor
    private let state = Mutex(State())

    private init(fd: CInt, reactor: Reactor) {
        self.fd = fd
        self.reactor = reactor
    }

    deinit { close() }

    /// Connects to the monitor socket, waiting up to `timeout` for QEMU to create it, then
    /// reads the greeting and negotiates capabilities (`qmp_capabilities`) under the same
    /// deadline.
    public static func connect(path: String, timeout: Duration = .seconds(10), reactor: Reactor = .shared) async throws -> QMPClient {
        let deadline = ContinuousClock.now + timeout
        var fd: FileDescriptor?
        while fd == nil {
            do {
                fd = try UnixSocket.connect(path: path)
            } catch {
                guard ContinuousClock.now < deadline else { throw QMPError.timeout("connecting to \(path): \(error)") }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        let client = QMPClient(fd: fd!.take(), reactor: reactor)
        try client.start()
        let left = deadline - .now
        _ = try await client.withTimeout(left, "waiting for the QMP greeting", { try await client.greeting() },
                                         onTimeout: { client.close() })
        _ = try await client.execute("qmp_capabilities", timeout: deadline - .now)
        return client
    }

    private func start() throws {
        let reg = try reactor.register(fd, interest: .readable) { [self] _ in readAvailable() }
        state.withLock { $0.registration = reg }
    }

    // MARK: - Commands

    /// Runs `command` and returns its `return` value.
    public func execute(_ command: String, arguments: JSONValue? = nil, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        let id = state.withLock { s -> Int in
            let id = s.nextID
            s.nextID += 1
            return id
        }
        var message: JSONValue = ["execute": .string(command), "id": JSONValue(id)]
        if let arguments, case .object(var o) = message {
            o["arguments"] = arguments
            message = .object(o)
        }
        let bytes = message.serialized() + [0x0a]
        return try await withTimeout(timeout, "waiting for \(command)") {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<JSONValue, any Error>) in
                let closed = self.state.withLock { s -> Bool in
                    if s.closed { return true }
                    s.pending[id] = (command, cont)
                    s.out += bytes
                    return false
                }
                if closed { cont.resume(throwing: QMPError.disconnected) } else { self.pump() }
            }
        } onTimeout: {
            // The waiting child must be resumed, or the task group would wait for it forever.
            self.state.withLock { $0.pending.removeValue(forKey: id) }?.1.resume(throwing: QMPError.timeout("waiting for \(command)"))
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, …) and whether it runs.
    public func queryStatus() async throws -> (status: String, running: Bool) {
        let r = try await execute("query-status")
        return (r["status"]?.string ?? "unknown", r["running"]?.bool ?? false)
    }

    /// Pauses the vCPUs.
    public func stop() async throws { _ = try await execute("stop") }

    /// Resumes the vCPUs.
    public func cont() async throws { _ = try await execute("cont") }

    /// Asks QEMU to exit now. The monitor closes as QEMU exits, so a disconnect counts as done.
    public func quit() async throws {
        do {
            _ = try await execute("quit", timeout: .seconds(5))
        } catch QMPError.disconnected {
        }
    }

    public func queryHotpluggableCPUs() async throws -> [JSONValue] {
        try await execute("query-hotpluggable-cpus").array ?? []
    }

    /// `device_add` with `driver`, `id` and further properties.
    public func deviceAdd(driver: String, id: String, properties: [String: JSONValue] = [:]) async throws {
        var args = properties
        args["driver"] = .string(driver)
        args["id"] = .string(id)
        _ = try await execute("device_add", arguments: .object(args))
    }

    /// `device_del`, then waits for the guest to release the device (DEVICE_DELETED for `id`).
    public func deviceDel(id: String, timeout: Duration = .seconds(20)) async throws {
        let events = subscribe()
        defer { events.cancel() }
        _ = try await execute("device_del", arguments: ["id": .string(id)])
        _ = try await events.next(named: "DEVICE_DELETED", timeout: timeout) { $0.data["device"]?.string == id }
    }

    // MARK: - Events

    /// A stream of every event from now on. Cancel it (or let it go) when done.
    public func subscribe() -> QMPEventSubscription {
        let (stream, continuation) = AsyncStream<QMPEvent>.makeStream(bufferingPolicy: .bufferingNewest(256))
        let key = state.withLock { s -> Int? in
            if s.closed { return nil }
            let k = s.nextSubscriber
            s.nextSubscriber += 1
            s.subscribers[k] = continuation
            return k
        }
        if key == nil { continuation.finish() }
        return QMPEventSubscription(stream: stream) { [weak self] in
            guard let key else { return }
            self?.state.withLock { $0.subscribers.removeValue(forKey: key) }?.finish()
        }
    }

    // MARK: - I/O

    private func greeting() async throws -> JSONValue {
        try await withCheckedThrowingContinuation { cont in
            let ready: JSONValue?? = state.withLock { s in
                if let g = s.greeting { return .some(g) }
                if s.closed { return .some(nil) }
                s.greetingWaiters.append(cont)
                return .none
            }
            switch ready {
            case .some(.some(let g)): cont.resume(returning: g)
            case .some(.none): cont.resume(throwing: QMPError.disconnected)
            case .none: break
            }
        }
    }

    /// Writes queued bytes in order; one pump at a time, resumed by writability.
    private func pump() {
        let start = state.withLock { s -> Bool in
            if s.pumping || s.closed { return false }
            s.pumping = true
            return true
        }
        guard start else { return }
        while true {
            let result: Int? = state.withLock { s in
                guard !s.out.isEmpty, !s.closed else {
                    s.pumping = false
                    return nil
                }
                let n = s.out.withUnsafeBytes { (try? writeNonBlocking(fd, from: $0)) ?? -1 }
                if n > 0 { s.out.removeFirst(n) }
                return n
            }
            guard let n = result else { return }
            if n < 0 {
                close()
                return
            }
            if n == 0 {
                Task { [self] in
                    try? await reactor.wait(for: .writable, on: fd)
                    state.withLock { $0.pumping = false }
                    pump()
                }
                return
            }
        }
    }

    private func readAvailable() {
        var buf = [UInt8](repeating: 0, count: 65536)
        var messages: [JSONValue] = []
        var eof = false
        state.withLock { s in
            guard !s.closed else { return }
            while true {
                let r = buf.withUnsafeMutableBytes { (try? readNonBlocking(fd, into: $0)) ?? .endOfFile }
                switch r {
                case .bytes(let n): s.buffer += buf[0..<n]
                case .wouldBlock: break
                case .endOfFile: eof = true
                }
                if case .bytes = r { continue }
                break
            }
            while let nl = s.buffer.firstIndex(of: 0x0a) {
                let line = Array(s.buffer[..<nl])
                s.buffer.removeFirst(nl + 1)
                if let v = try? JSONValue(parsing: line) { messages.append(v) }
            }
        }
        for m in messages { dispatch(m) }
        if eof { close() }
    }

    private func dispatch(_ message: JSONValue) {
        if message["QMP"] != nil {
            let waiters = state.withLock { s -> [CheckedContinuation<JSONValue, any Error>] in
                s.greeting = message
                let w = s.greetingWaiters
                s.greetingWaiters = []
                return w
            }
            for w in waiters { w.resume(returning: message) }
        } else if let name = message["event"]?.string {
            let event = QMPEvent(name: name, data: message["data"] ?? .null)
            let subs = state.withLock { Array($0.subscribers.values) }
            for s in subs { s.yield(event) }
        } else if let id = message["id"]?.int {
            guard let (command, cont) = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
            if let error = message["error"] {
                cont.resume(throwing: QMPError.command(name: command, errorClass: error["class"]?.string ?? "GenericError",
                                                       description: error["desc"]?.string ?? "\(error)"))
            } else {
                cont.resume(returning: message["return"] ?? .null)
            }
        }
    }

    /// Closes the monitor connection; pending commands fail with `.disconnected` and event
    /// streams finish.
    public func close() {
        let taken = state.withLock { s -> (Reactor.Registration?, [CheckedContinuation<JSONValue, any Error>], [AsyncStream<QMPEvent>.Continuation])? in
            guard !s.closed else { return nil }
            s.closed = true
            let reg = s.registration
            s.registration = nil
            if let reg { reactor.deregister(reg) }
            Glibc.close(fd)
            let conts = s.pending.values.map(\.1) + s.greetingWaiters
            s.pending = [:]
            s.greetingWaiters = []
            let subs = Array(s.subscribers.values)
            s.subscribers = [:]
            return (reg, conts, subs)
        }
        guard let (_, conts, subs) = taken else { return }
        for c in conts { c.resume(throwing: QMPError.disconnected) }
        for s in subs { s.finish() }
    }

    public var isClosed: Bool { state.withLock { $0.closed } }

    // MARK: - Timeouts

    private func withTimeout<T: Sendable>(_ timeout: Duration, _ what: String,
                                          _ body: @escaping @Sendable () async throws -> T,
                                          onTimeout: @escaping @Sendable () -> Void = {}) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                onTimeout()
                throw QMPError.timeout(what)
            }
            return value
        }
    }
}

/// One subscriber's view of the event stream.
public struct QMPEventSubscription: Sendable {
    let stream: AsyncStream<QMPEvent>
    let cancelHandler: @Sendable () -> Void

    public var events: AsyncStream<QMPEvent> { stream }

    public func cancel() { cancelHandler() }

    /// The next event called `name` (and matching `predicate`), within `timeout`.
    public func next(named name: String, timeout: Duration, where predicate: @escaping @Sendable (QMPEvent) -> Bool = { _ in true }) async throws -> QMPEvent {
        let stream = self.stream
        return try await withThrowingTaskGroup(of: QMPEvent?.self) { group in
            group.addTask {
                for await e in stream where e.name == name && predicate(e) { return e }
                throw QMPError.disconnected
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let event = first else { throw QMPError.timeout("waiting for \(name)") }
            return event
        }
    }
}
