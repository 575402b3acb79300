#if canImport(Glibc)
import Glibc
#endif
import EchoService
import Protocols
import SystemKit
import TTRPC
import TestSupport
import Testing

/// Against the reference implementation: containerd's Go ttRPC (Debian's
/// golang-github-containerd-ttrpc-dev, v1.1.1, the version containerd 1.6 links), built by
/// `make interop-peer` into .build/interop/ttrpc-go-peer.
@Suite(.serialized) struct InteropTests {
    static let goPeer = repositoryRoot + "/.build/interop/ttrpc-go-peer"

    func requireGoPeer() throws {
        guard access(Self.goPeer, X_OK) == 0 else {
            Issue.record("\(Self.goPeer) is missing: run `make interop-peer` (part of `make test`)")
            throw TTRPCError(.failedPrecondition, "go peer missing")
        }
    }

    @Test func goClientAgainstSwiftServer() async throws {
        try requireGoPeer()
        let fx = try EchoServerFixture()
        let log = fx.dir.file("go-client.log")
        let out = try FileDescriptor.open(log, O_WRONLY | O_CREAT | O_TRUNC)
        var options = ChildProcess.Options()
        options.fds = [-1, out.rawValue, out.rawValue]
        options.killWithParent = true
        let child = try await ChildProcess.spawn(Self.goPeer, ["scenarios", "-socket", fx.socket], options: options)
        out.close()
        let status = await child.wait()
        let output = TextFile.read(log) ?? ""
        #expect(status == .exited(0), "Go client scenarios failed:\n\(output)")
        #expect(output.contains("9 passed, 0 failed"), "\(output)")
        #expect(!output.contains("FAIL"), "\(output)")
        await fx.stop()
    }

    /// The Go echo server as a child process, stopped (SIGTERM, then reaped) by `stop()`.
    struct GoServer {
        let dir = TempDir("ttrpc-test")
        let child: ChildProcess
        var socket: String { dir.file("go.sock") }

        init() async throws {
            var options = ChildProcess.Options()
            options.killWithParent = true
            child = try await ChildProcess.spawn(InteropTests.goPeer, ["server", "-socket", dir.file("go.sock")], options: options)
            try await waitForFile(dir.file("go.sock"))
        }

        func stop() async {
            child.signal(SIGTERM)
            _ = await child.wait()
            dir.remove()
        }
    }

    func echo(_ client: TTRPCClient, _ request: EchoV1.EchoRequest, timeout: Duration? = nil,
              metadata: [TTRPCWire.KeyValue] = []) async throws -> EchoV1.EchoResponse {
        try await client.call(EchoV1.EchoService.echo, request, timeout: timeout, metadata: metadata)
    }

    @Test func swiftClientAgainstGoServer() async throws {
        try requireGoPeer()
        ignoreSIGPIPE()
        let go = try await GoServer()
        do {
            let client = try await TTRPCClient.connect(path: go.socket)

            // Unary.
            #expect(try await echo(client, EchoV1.EchoRequest(payload: Array("hello".utf8))).payload == Array("hello".utf8))

            // 100 concurrent calls on one connection, answered out of order.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<100 {
                    group.addTask {
                        let want = Array("call-\(i)".utf8)
                        let r = try await self.echo(client, EchoV1.EchoRequest(payload: want, delayMs: UInt32((100 - i) % 7)))
                        #expect(r.payload == want)
                    }
                }
                try await group.waitForAll()
            }

            // Error status with code and message.
            await #expect(throws: TTRPCError(.notFound, "container c1: not found")) {
                _ = try await echo(client, EchoV1.EchoRequest(failCode: 5, failMessage: "container c1: not found"))
            }

            // The deadline reaches the Go handler, and expires.
            let seen = try await echo(client, EchoV1.EchoRequest(payload: [1]), timeout: .seconds(2))
            #expect(seen.deadlineNano > 1_500_000_000 && seen.deadlineNano <= 2_000_000_000)
            let started = ContinuousClock.now
            await #expect(throws: TTRPCError.self) {
                _ = try await echo(client, EchoV1.EchoRequest(delayMs: 3000), timeout: .milliseconds(100))
            }
            #expect(ContinuousClock.now - started < .seconds(1))

            // A payload just under 4 MiB, both ways.
            let big = EchoService.pattern(Frame.maxDataLength - 256)
            #expect(try await echo(client, EchoV1.EchoRequest(payload: big)).payload == big)

            // Oversized: refused before sending; a 5 MiB response from Go (v1.1 sends it) fails
            // only that call.
            await #expect(throws: TTRPCError.self) {
                _ = try await echo(client, EchoV1.EchoRequest(payload: EchoService.pattern(Frame.maxDataLength + 1)))
            }
            do {
                _ = try await echo(client, EchoV1.EchoRequest(responseSize: 5 << 20))
                Issue.record("a 5 MiB response was accepted")
            } catch let e as TTRPCError {
                #expect(e.code == .resourceExhausted)
            }

            // Unknown method and service.
            await #expect(throws: TTRPCError(.unimplemented, "method Nope")) {
                _ = try await client.callRaw(service: "kata.echo.v1.Echo", method: "Nope", payload: [])
            }
            await #expect(throws: TTRPCError(.unimplemented, "service no.such.Service")) {
                _ = try await client.callRaw(service: "no.such.Service", method: "Echo", payload: [])
            }

            // Metadata.
            let md = try await echo(client, EchoV1.EchoRequest(payload: [2]),
                                    metadata: [TTRPCWire.KeyValue(key: "containerd-namespace-ttrpc", value: "default")])
            #expect(md.metadata == ["containerd-namespace-ttrpc=default"])

            // Still usable after all of that.
            #expect(try await echo(client, EchoV1.EchoRequest(payload: [3])).payload == [3])
            client.close()
        } catch {
            await go.stop()
            throw error
        }
        await go.stop()
    }
}
