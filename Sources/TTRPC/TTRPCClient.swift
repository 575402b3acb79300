#if canImport(Glibc)
import Glibc
#endif
import Protocols
import Synchronization
import SystemKit

/// A ttRPC client over one connected stream.
///
/// Calls may be made concurrently from any task; each gets the next odd stream id (ids are
/// allocated and written under one lock, so they increase on the wire as ttRPC v1.2 servers
/// require) and responses are matched by id. A lost connection fails every pending call at
/// once with `TTRPCError.closed`, and every later call too.
public final class TTRPCClient: Sendable {
    private struct Pending {
        let continuation: CheckedContinuation<[UInt8], any Error>
        let timer: Reactor.TimerID?
    }

    private struct State {
        var nextStreamID: UInt32 = 1
        var pending: [UInt32: Pending] = [:]
        var closed: TTRPCError?
    }

    private let state = Mutex(State())
    private let reactor: Reactor
    // Set once in init, before any frame can arrive; read from the reactor thread afterwards.
    private let connectionBox = Mutex<FrameConnection?>(nil)

    /// Takes ownership of a connected stream fd.
    public init(taking fd: consuming FileDescriptor, reactor: Reactor = .shared) throws(Errno) {
        self.reactor = reactor
        let connection = try FrameConnection(
            taking: fd, reactor: reactor,
            onOutput: { [weak self] _, output in self?.received(output) },
            onClose: { [weak self] _, reason in self?.connectionClosed(reason) })
        connectionBox.withLock { $0 = connection }
        do {
            try connection.start()
        } catch {
            connection.close()
            throw error
        }
    }

    deinit {
        connectionBox.withLock { $0 }?.close()
    }

    /// Connects to a unix socket path (`@name` for abstract), retrying while the listener's
    /// backlog is full, up to `timeout`.
    public static func connect(path: String, timeout: Duration = .seconds(5), reactor: Reactor = .shared) async throws -> TTRPCClient {
        let deadline = ContinuousClock.now + timeout
        while true {
            let fd: FileDescriptor
            do {
                fd = try UnixSocket.connect(path: path)
            } catch {
                let retry = error.rawValue == EAGAIN && ContinuousClock.now < deadline
                guard retry else { throw error }
                try await Task.sleep(for: .milliseconds(1))
                continue
            }
            return try TTRPCClient(taking: fd, reactor: reactor)
        }
    }

    private var connection: FrameConnection? { connectionBox.withLock { $0 } }

    /// Calls a unary method. `timeout` is sent as `timeout_nano` and enforced locally: the call
    /// fails with DeadlineExceeded when it passes. Cancelling the task fails the call with
    /// `CancellationError` (the server is not told; ttRPC v1 has no cancel frame).
    public func call<Request, Response>(_ method: RPCMethod<Request, Response>, _ request: Request,
                                        timeout: Duration? = nil, metadata: [TTRPCWire.KeyValue] = []) async throws -> Response {
        let bytes = try await callRaw(service: method.service, method: method.method, payload: request.serializedBytes(),
                                      timeout: timeout, metadata: metadata)
        do {
            return try Response(serializedBytes: bytes)
        } catch {
            throw TTRPCError(.internal, "error unmarshalling response of \(method.service)/\(method.method): \(error)")
        }
    }

    public func callRaw(service: String, method: String, payload: [UInt8], timeout: Duration? = nil,
                        metadata: [TTRPCWire.KeyValue] = []) async throws -> [UInt8] {
        var request = TTRPCWire.Request(service: service, method: method, payload: payload, metadata: metadata)
        if let timeout {
            let (s, atto) = timeout.components
            request.timeoutNano = max(1, s * 1_000_000_000 + atto / 1_000_000_000)
        }
        let data = request.serializedBytes()
        guard data.count <= Frame.maxDataLength else {
            throw TTRPCError(.resourceExhausted,
                             "request of \(data.count) bytes exceeds maximum message size of \(Frame.maxDataLength)")
        }
        let slot = CallSlot()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<[UInt8], any Error>) in
                start(data, timeout: timeout, slot: slot, cont)
            }
        } onCancel: {
            if let id = slot.cancel() { fail(id, CancellationError()) }
        }
    }

    private func start(_ data: [UInt8], timeout: Duration?, slot: CallSlot, _ cont: CheckedContinuation<[UInt8], any Error>) {
        guard let connection else {
            cont.resume(throwing: TTRPCError.closed)
            return
        }
        let error: (any Error)? = state.withLock { s in
            if let closed = s.closed { return closed }
            guard s.nextStreamID < UInt32.max - 1 else {
                return TTRPCError(.resourceExhausted, "ttrpc: stream ids exhausted on this connection")
            }
            let id = s.nextStreamID
            s.nextStreamID += 2
            guard slot.assign(id) else { return CancellationError() }
            let timer = timeout.map { t in
                reactor.schedule(after: t) { [weak self] in
                    self?.fail(id, TTRPCError(.deadlineExceeded, "context deadline exceeded"))
                }
            }
            s.pending[id] = Pending(continuation: cont, timer: timer)
            if !connection.send(Frame.encode(streamID: id, type: .request, data: data)) {
                s.pending[id] = nil
                if let timer { reactor.cancel(timer) }
                return TTRPCError.closed
            }
            return nil
        }
        if let error { cont.resume(throwing: error) }
    }

    private func fail(_ id: UInt32, _ error: any Error) {
        guard let p = state.withLock({ $0.pending.removeValue(forKey: id) }) else { return }
        if let t = p.timer { reactor.cancel(t) }
        p.continuation.resume(throwing: error)
    }

    private func received(_ output: FrameDecoder.Output) {
        switch output {
        case .oversized(let header):
            fail(header.streamID, TTRPCError(.resourceExhausted,
                                            "message length \(header.length) exceed maximum message size of \(Frame.maxDataLength)"))
        case .frame(let header, let data):
            guard header.type == .response else { return }
            guard let p = state.withLock({ $0.pending.removeValue(forKey: header.streamID) }) else { return }
            if let t = p.timer { reactor.cancel(t) }
            do {
                let response = try TTRPCWire.Response(serializedBytes: data)
                if let status = response.status, status.code != 0 {
                    p.continuation.resume(throwing: TTRPCError(StatusCode(rawValue: status.code), status.message))
                } else {
                    p.continuation.resume(returning: response.payload)
                }
            } catch {
                p.continuation.resume(throwing: TTRPCError(.internal, "malformed ttrpc.Response on stream \(header.streamID)"))
            }
        }
    }

    private func connectionClosed(_ reason: FrameConnection.CloseReason) {
        let pending = state.withLock { s -> [Pending] in
            if s.closed == nil { s.closed = .closed }
            let p = Array(s.pending.values)
            s.pending = [:]
            return p
        }
        for p in pending {
            if let t = p.timer { reactor.cancel(t) }
            p.continuation.resume(throwing: TTRPCError.closed)
        }
    }

    /// Closes the connection; pending calls fail with `TTRPCError.closed`.
    public func close() {
        connection?.close()
    }

    /// Whether the connection is gone (closed locally or by the peer).
    public var isClosed: Bool { state.withLock { $0.closed != nil } }

    /// Calls waiting for a response.
    public var pendingCalls: Int { state.withLock { $0.pending.count } }
}

/// Links a call's stream id to its cancellation handler, which may run before the id exists.
private final class CallSlot: Sendable {
    private struct State {
        var id: UInt32?
        var cancelled = false
    }
    private let state = Mutex(State())

    /// Records the id; false when the call was cancelled first.
    func assign(_ id: UInt32) -> Bool {
        state.withLock { s in
            if s.cancelled { return false }
            s.id = id
            return true
        }
    }

    /// Marks cancelled; returns the id to fail if the call was already sent.
    func cancel() -> UInt32? {
        state.withLock { s in
            s.cancelled = true
            return s.id
        }
    }
}
