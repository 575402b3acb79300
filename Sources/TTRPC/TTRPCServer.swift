#if canImport(Glibc)
import Glibc
#endif
import Protocols
import Synchronization
import SystemKit

/// A ttRPC server: handlers registered per service and method, any number of connections,
/// many concurrent calls per connection.
///
/// Each request runs in its own Task, so a blocking-until-exit `Wait` never holds up `State`
/// on the same connection. Responses are written by the connection's single writer in
/// completion order. Thread-safe; register handlers before serving.
public final class TTRPCServer: Sendable {
    /// Tunables; the defaults suit containerd and the agent.
    public struct Options: Sendable {
        /// Close connections whose peer has another uid than ours (SO_PEERCRED), as
        /// containerd's runc shim does.
        public var requireSameUser = false
        /// Reading from a connection pauses while this many of its calls run.
        public var maxInFlightPerConnection = 1024
        /// Reading pauses while this many response bytes wait for the peer to read them.
        public var maxQueuedResponseBytes = 16 << 20
        /// Where handlers run. `.reactor` (the default) runs them on the reactor thread that
        /// decoded the request: no thread hop per call, the fastest choice for handlers that
        /// await I/O and do little computation. `.globalPool` runs them on Swift's cooperative
        /// pool, for handlers that compute for long.
        public var handlerExecutor: HandlerExecutor = .reactor
        public init() {}
    }

    /// See `Options.handlerExecutor`.
    public enum HandlerExecutor: Sendable {
        case reactor
        case globalPool
    }

    /// A handler over raw payload bytes.
    public typealias RawHandler = @Sendable (_ payload: [UInt8], _ context: CallContext) async throws -> [UInt8]
    /// A handler over raw payload bytes whose response may end in spliced pipe bytes.
    public typealias BodyHandler = @Sendable (_ payload: [UInt8], _ context: CallContext) async throws -> ResponseBody

    private struct State {
        var listeners: [(Reactor.Registration, CInt)] = []
        var connections: [ObjectIdentifier: ServerConnection] = [:]
        var drainedWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let options: Options
    private let reactor: Reactor
    // Connection bookkeeping changes per connect/close; the hot path per call touches only the
    // handler table (read by the reactor thread) and the connection's own atomics.
    private let state = Mutex(State())
    private let handlers = Mutex<[String: [String: BodyHandler]]>([:])
    private let shuttingDown = Atomic<Bool>(false)

    public init(options: Options = Options(), reactor: Reactor = .shared) {
        self.options = options
        self.reactor = reactor
    }

    // MARK: - Registration

    /// Registers a typed unary handler. A payload that does not decode as `Request` is answered
    /// with InvalidArgument without calling the handler.
    public func register<Request, Response>(_ method: RPCMethod<Request, Response>,
                                            _ handler: @escaping @Sendable (Request, CallContext) async throws -> Response) {
        registerBody(method) { request, context in ResponseBody(bytes: try await handler(request, context).serializedBytes()) }
    }

    /// Registers a typed handler that builds its encoded response itself (see `ResponseBody`):
    /// the response type's encoding is the handler's contract.
    public func registerBody<Request, Response>(_ method: RPCMethod<Request, Response>,
                                                _ handler: @escaping @Sendable (Request, CallContext) async throws -> ResponseBody) {
        registerBody(service: method.service, method: method.method) { payload, context in
            let request: Request
            do {
                request = try Request(serializedBytes: payload)
            } catch {
                throw TTRPCError(.invalidArgument, "error unmarshalling payload: \(error)")
            }
            return try await handler(request, context)
        }
    }

    public func registerRaw(service: String, method: String, _ handler: @escaping RawHandler) {
        registerBody(service: service, method: method) { payload, context in ResponseBody(bytes: try await handler(payload, context)) }
    }

    public func registerBody(service: String, method: String, _ handler: @escaping BodyHandler) {
        handlers.withLock { $0[service, default: [:]][method] = handler }
    }

    // MARK: - Serving

    /// Accepts connections on `listener` (a listening socket this server now owns).
    public func serve(listener: consuming FileDescriptor) throws(Errno) {
        try listener.setNonBlocking()
        let fd = listener.take()
        do {
            let reg = try reactor.register(fd, interest: .readable) { [self] _ in acceptAll(fd) }
            state.withLock { $0.listeners.append((reg, fd)) }
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Serves one already-connected stream (socketpair, virtio-serial port, vsock).
    /// `onClose` runs (on the reactor thread) once the stream has closed, for either side.
    public func serve(connection fd: consuming FileDescriptor, onClose: (@Sendable () -> Void)? = nil) throws(Errno) {
        try adopt(fd, peer: nil, onClose: onClose)
    }

    private func acceptAll(_ listener: CInt) {
        while true {
            let accepted: FileDescriptor?
            do {
                accepted = try UnixSocket.accept(listener)
            } catch {
                if error.rawValue == EMFILE || error.rawValue == ENFILE {
                    pauseListener(listener)
                }
                return
            }
            guard let accepted else { return }
            let peer = try? UnixSocket.peerCredentials(accepted.rawValue)
            if options.requireSameUser && peer?.uid != geteuid() {
                accepted.close()
                continue
            }
            try? adopt(accepted, peer: peer)
        }
    }

    /// Out of descriptors: level-triggered epoll would spin on the pending connection, so stop
    /// watching the listener for a moment.
    private func pauseListener(_ fd: CInt) {
        guard let reg = state.withLock({ s in s.listeners.first { $0.1 == fd }?.0 }) else { return }
        try? reactor.modify(reg, interest: [])
        reactor.schedule(after: .milliseconds(100)) { [self] in
            if state.withLock({ s in s.listeners.contains { $0.1 == fd } }) {
                try? reactor.modify(reg, interest: .readable)
            }
        }
    }

    private func adopt(_ fd: consuming FileDescriptor, peer: PeerCredentials?,
                       onClose: (@Sendable () -> Void)? = nil) throws(Errno) {
        let box = Mutex<ServerConnection?>(nil)
        let frames = try FrameConnection(
            taking: fd, reactor: reactor,
            onOutput: { [self] _, output in
                if let conn = box.withLock({ $0 }) { received(output, on: conn) }
            },
            onClose: { [self] frames, _ in
                box.withLock { $0 = nil }
                connectionClosed(frames)
                onClose?()
            })
        let connection = ServerConnection(frames: frames, peer: peer)
        box.withLock { $0 = connection }
        let accepted = state.withLock { s -> Bool in
            guard !shuttingDown.load(ordering: .acquiring) else { return false }
            s.connections[ObjectIdentifier(frames)] = connection
            return true
        }
        guard accepted else {
            frames.close()
            return
        }
        do {
            try frames.start()
        } catch {
            frames.close()
            throw error
        }
    }

    private func connectionClosed(_ frames: FrameConnection) {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            s.connections.removeValue(forKey: ObjectIdentifier(frames))
            guard shuttingDown.load(ordering: .acquiring), s.connections.isEmpty else { return [] }
            let w = s.drainedWaiters
            s.drainedWaiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    // MARK: - Requests

    private func received(_ output: FrameDecoder.Output, on connection: ServerConnection) {
        switch output {
        case .oversized(let header):
            guard header.type == .request else { return }
            respond(on: connection, streamID: header.streamID,
                    error: TTRPCError(.resourceExhausted,
                                      "message length \(header.length) exceed maximum message size of \(Frame.maxDataLength)"))
        case .frame(let header, let data):
            // Unknown frame types (v1.2 Data frames, future types) are ignored, as Go v1.1 does.
            guard header.type == .request else { return }
            dispatch(header, data, on: connection)
        }
    }

    private func dispatch(_ header: FrameHeader, _ data: [UInt8], on connection: ServerConnection) {
        let streamID = header.streamID
        guard streamID % 2 == 1 else {
            respond(on: connection, streamID: streamID,
                    error: TTRPCError(.invalidArgument, "StreamID must be odd for client initiated streams"))
            return
        }
        let request: TTRPCWire.Request
        do {
            request = try TTRPCWire.Request(serializedBytes: data)
        } catch {
            respond(on: connection, streamID: streamID, error: TTRPCError(.invalidArgument, "unmarshal request error: \(error)"))
            return
        }
        let handler: BodyHandler? = handlers.withLock { table in
            table[request.service]?[request.method]
        }
        guard let handler else {
            let known = handlers.withLock { $0[request.service] != nil }
            let message = known ? "method \(request.method)" : "service \(request.service)"
            respond(on: connection, streamID: streamID, error: TTRPCError(.unimplemented, message))
            return
        }
        let peer = connection.peer
        connection.callStarted(limit: options.maxInFlightPerConnection, queueLimit: options.maxQueuedResponseBytes,
                               reactor: reactor)

        let deadline: ContinuousClock.Instant? = request.timeoutNano > 0 ? .now + .nanoseconds(request.timeoutNano) : nil
        let context = CallContext(service: request.service, method: request.method, streamID: streamID,
                                  metadata: request.metadata, deadline: deadline, peer: peer)
        let call = PendingCall()
        let timer = deadline.map { d in
            reactor.schedule(at: d) { [self] in
                guard call.finish() else { return }
                respond(on: connection, streamID: streamID, error: TTRPCError(.deadlineExceeded, "context deadline exceeded"))
                call.cancelTask()
            }
        }
        let payload = request.payload
        let preference: (any TaskExecutor)? = options.handlerExecutor == .reactor ? reactor : nil
        let task = Task(executorPreference: preference) { [self] in
            let result: Result<ResponseBody, any Error>
            do {
                result = .success(try await handler(payload, context))
            } catch {
                result = .failure(error)
            }
            if let timer { reactor.cancel(timer) }
            if call.finish() {
                switch result {
                case .success(let body): respond(on: connection, streamID: streamID, body: body)
                case .failure(let error): respond(on: connection, streamID: streamID, error: TTRPCError(mapping: error))
                }
            } else if case .success(let body) = result {
                body.abandon()  // the deadline answered already
            }
            callEnded(on: connection)
        }
        call.setTask(task)
    }

    private func callEnded(on connection: ServerConnection) {
        let remaining = connection.callEnded(limit: options.maxInFlightPerConnection, queueLimit: options.maxQueuedResponseBytes)
        if remaining == 0 && shuttingDown.load(ordering: .acquiring) {
            connection.frames.closeAfterFlush()
        }
    }

    private func respond(on connection: ServerConnection, streamID: UInt32, body: ResponseBody) {
        guard var frame = Frame.successResponseHead(streamID: streamID, payloadLength: body.count, reserving: body.prefix.count) else {
            body.abandon()
            var length: [UInt8] = []
            appendVarint(body.count, to: &length)
            let size = 1 + length.count + body.count  // the Response message: tag, length, payload
            respond(on: connection, streamID: streamID, error: TTRPCError(
                .resourceExhausted, "response of \(size) bytes exceeds maximum message size of \(Frame.maxDataLength)"))
            return
        }
        frame.append(contentsOf: body.prefix)
        if let splice = body.splice {
            connection.frames.send(frame, splicing: splice)
        } else {
            connection.frames.send(frame)
        }
    }

    private func respond(on connection: ServerConnection, streamID: UInt32, error: TTRPCError) {
        let data = TTRPCWire.Response(status: error.status).serializedBytes()
        connection.frames.send(Frame.encode(streamID: streamID, type: .response, data: data))
    }

    // MARK: - Shutdown

    /// Stops accepting, lets in-flight calls finish and their responses flush, closes each
    /// connection as it becomes idle, and returns when all are closed or `gracePeriod` ran out
    /// (the rest are then closed, their calls' tasks cancelled by their own deadlines).
    public func shutdown(gracePeriod: Duration = .seconds(5)) async {
        shuttingDown.store(true, ordering: .releasing)
        let (listeners, idle, all) = state.withLock { s -> ([(Reactor.Registration, CInt)], [FrameConnection], Int) in
            let l = s.listeners
            s.listeners = []
            let idle = s.connections.values.filter { $0.inFlight == 0 }.map(\.frames)
            return (l, idle, s.connections.count)
        }
        for (reg, fd) in listeners {
            reactor.deregister(reg)
            Glibc.close(fd)
        }
        for c in idle { c.closeAfterFlush() }
        guard all > 0 else { return }
        let timer = reactor.schedule(after: gracePeriod) { [self] in
            let rest = state.withLock { $0.connections.values.map(\.frames) }
            for c in rest { c.close() }
        }
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.connections.isEmpty { return true }
                s.drainedWaiters.append(cont)
                return false
            }
            if done { cont.resume() }
        }
        reactor.cancel(timer)
    }

    /// Connections currently open (for tests and diagnostics).
    public var connectionCount: Int { state.withLock { $0.connections.count } }
}

/// A served connection and its in-flight accounting (atomics: touched on every call).
private final class ServerConnection: Sendable {
    let frames: FrameConnection
    let peer: PeerCredentials?
    private let running = Atomic<Int>(0)
    private let paused = Atomic<Bool>(false)

    init(frames: FrameConnection, peer: PeerCredentials?) {
        self.frames = frames
        self.peer = peer
    }

    var inFlight: Int { running.load(ordering: .relaxed) }

    /// Counts a call in; stops reading when too many run or too many response bytes wait.
    func callStarted(limit: Int, queueLimit: Int, reactor: Reactor) {
        let n = running.add(1, ordering: .relaxed).newValue
        let backedUp = frames.queuedBytes >= queueLimit
        if n >= limit || backedUp {
            if !paused.exchange(true, ordering: .acquiringAndReleasing) {
                frames.pauseReading()
                if backedUp { watchDrain(limit: limit, queueLimit: queueLimit, reactor: reactor) }
            }
        }
    }

    /// Counts a call out and resumes reading if it was paused for that; returns calls left.
    func callEnded(limit: Int, queueLimit: Int) -> Int {
        let n = running.subtract(1, ordering: .relaxed).newValue
        if n < limit && paused.load(ordering: .relaxed) { resumeIfPossible(limit: limit, queueLimit: queueLimit) }
        return n
    }

    private func resumeIfPossible(limit: Int, queueLimit: Int) {
        guard running.load(ordering: .relaxed) < limit, frames.queuedBytes < queueLimit / 2 + 1 else { return }
        if paused.exchange(false, ordering: .acquiringAndReleasing) { frames.resumeReading() }
    }

    /// A slow reader: poll until its queue drained below half, then read again.
    private func watchDrain(limit: Int, queueLimit: Int, reactor: Reactor) {
        reactor.schedule(after: .milliseconds(5)) { [self] in
            guard !frames.isClosed, paused.load(ordering: .relaxed) else { return }
            if frames.queuedBytes < queueLimit / 2 + 1 {
                resumeIfPossible(limit: limit, queueLimit: queueLimit)
            } else {
                watchDrain(limit: limit, queueLimit: queueLimit, reactor: reactor)
            }
        }
    }
}

/// The race between a handler finishing and its deadline firing: exactly one of them answers.
private final class PendingCall: Sendable {
    private struct State {
        var finished = false
        var task: Task<Void, Never>?
        var cancelRequested = false
    }
    private let state = Mutex(State())

    /// True for the first caller only.
    func finish() -> Bool {
        state.withLock { s in
            if s.finished { return false }
            s.finished = true
            return true
        }
    }

    func setTask(_ task: Task<Void, Never>) {
        let cancel = state.withLock { s -> Bool in
            s.task = task
            return s.cancelRequested
        }
        if cancel { task.cancel() }
    }

    func cancelTask() {
        let task = state.withLock { s -> Task<Void, Never>? in
            s.cancelRequested = true
            return s.task
        }
        task?.cancel()
    }
}
