#if canImport(Glibc)
import Glibc
#endif
import EchoService
import Protocols
import SystemKit
import TTRPC
import TestSupport
import Testing

/// An echo server on a fresh socket, torn down by `stop()`.
struct EchoServerFixture {
    let dir = TempDir("ttrpc-test")
    let server: TTRPCServer
    var socket: String { dir.file("echo.sock") }

    init(options: TTRPCServer.Options = TTRPCServer.Options(), configure: (TTRPCServer) -> Void = { _ in }) throws {
        ignoreSIGPIPE()
        server = TTRPCServer(options: options)
        EchoService.register(on: server)
        configure(server)
        try server.serve(listener: UnixSocket.listen(path: dir.file("echo.sock")))
    }

    func client() async throws -> TTRPCClient {
        try await TTRPCClient.connect(path: socket)
    }

    func stop() async {
        await server.shutdown(gracePeriod: .seconds(2))
        dir.remove()
    }
}

/// A peer speaking raw bytes, for exact-wire and bad-input tests. Reads go through the reactor,
/// so no test blocks a cooperative thread.
final class RawPeer: @unchecked Sendable {
    // Used by one test task at a time.
    let fd: CInt
    private var decoder = FrameDecoder(maxDataLength: 64 << 20)

    init(connectingTo path: String) throws {
        fd = try UnixSocket.connect(path: path).take()
    }

    init(taking fd: consuming FileDescriptor) {
        self.fd = fd.take()
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) async throws {
        var offset = 0
        while offset < bytes.count {
            let n = try bytes.withUnsafeBytes { try writeNonBlocking(fd, from: UnsafeRawBufferPointer(rebasing: $0[offset...])) }
            if n == 0 { try await Reactor.shared.wait(for: .writable, on: fd) }
            offset += n
        }
    }

    func sendFrame(streamID: UInt32, type: MessageType = .request, data: [UInt8]) async throws {
        try await send(Frame.encode(streamID: streamID, type: type, data: data))
    }

    /// The next frame, or nil at end of file; fails after `timeout`.
    func readOutput(timeout: Duration = .seconds(10)) async throws -> FrameDecoder.Output? {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            if let o = decoder.next() { return o }
            guard ContinuousClock.now < deadline else { throw TTRPCError(.deadlineExceeded, "RawPeer: no frame in \(timeout)") }
            let r = try buffer.withUnsafeMutableBytes { try readNonBlocking(fd, into: $0) }
            switch r {
            case .bytes(let n): buffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            case .endOfFile: return nil
            case .wouldBlock: try await waitReadable(until: deadline)
            }
        }
    }

    func readFrame(timeout: Duration = .seconds(10)) async throws -> (FrameHeader, [UInt8]) {
        guard case .frame(let h, let d)? = try await readOutput(timeout: timeout) else {
            throw TTRPCError(.unavailable, "RawPeer: connection closed or oversized frame")
        }
        return (h, d)
    }

    /// Reads a Response frame and decodes it.
    func readResponse(timeout: Duration = .seconds(10)) async throws -> (UInt32, TTRPCWire.Response) {
        let (h, d) = try await readFrame(timeout: timeout)
        #expect(h.type == .response && h.flags == 0)
        return (h.streamID, try TTRPCWire.Response(serializedBytes: d))
    }

    private func waitReadable(until deadline: ContinuousClock.Instant) async throws {
        // Bounded wait: poll in short slices so a test never hangs on a silent peer.
        let slice = min(Duration.milliseconds(50), deadline - .now)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await Reactor.shared.wait(for: .readable, on: self.fd) }
            group.addTask { try await Task.sleep(for: max(slice, .milliseconds(1))) }
            _ = try await group.next()
            group.cancelAll()
        }
    }
}

func request(_ method: String, service: String = "kata.echo.v1.Echo", payload: [UInt8] = [], timeoutNano: Int64 = 0,
             metadata: [TTRPCWire.KeyValue] = []) -> [UInt8] {
    TTRPCWire.Request(service: service, method: method, payload: payload, timeoutNano: timeoutNano, metadata: metadata)
        .serializedBytes()
}

func echoPayload(_ text: String, delayMs: UInt32 = 0) -> [UInt8] {
    EchoV1.EchoRequest(payload: Array(text.utf8), delayMs: delayMs).serializedBytes()
}

/// Checks that the server still answers a normal call on a fresh connection.
func expectServes(_ fixture: EchoServerFixture) async throws {
    let client = try await fixture.client()
    let r = try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: Array("alive".utf8)), timeout: .seconds(5))
    #expect(r.payload == Array("alive".utf8))
    client.close()
}

/// Open socket descriptors of this process (what the ttRPC code creates; Dispatch's lazily
/// created timerfds and the like are not counted).
func openFDCount() -> Int {
    var n = 0
    for fd in 0..<4096 {
        var buf = [UInt8](repeating: 0, count: 64)
        let len = buf.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { readlink("/proc/self/fd/\(fd)", $0.baseAddress!, 63) }
        }
        if len > 0 && String(decoding: buf[0..<len], as: UTF8.self).hasPrefix("socket:") { n += 1 }
    }
    return n
}

/// Resident set size of this process in MiB.
func residentMiB() -> Double {
    guard let f = fopen("/proc/self/statm", "r") else { return -1 }
    defer { fclose(f) }
    var size = 0, resident = 0
    _ = withUnsafeMutablePointer(to: &size) { s in
        withUnsafeMutablePointer(to: &resident) { r in
            withVaList([s, r]) { vfscanf(f, "%ld %ld", $0) }
        }
    }
    return Double(resident) * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}

/// Where each open descriptor points, for failure messages.
func fdList() -> String {
    var out: [String] = []
    for fd in 0..<256 {
        var buf = [UInt8](repeating: 0, count: 256)
        let n = buf.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { readlink("/proc/self/fd/\(fd)", $0.baseAddress!, 255) }
        }
        if n > 0 { out.append("\(fd)->\(String(decoding: buf[0..<n], as: UTF8.self))") }
    }
    return out.joined(separator: " ")
}
