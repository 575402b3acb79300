#if canImport(Glibc)
import Glibc
#endif
import Protocols
import SystemKit
import TTRPC
import TestSupport
import Testing

/// The client against a scripted raw server on the other end of a socket pair.
@Suite struct ClientTests {
    func pair() throws -> (TTRPCClient, RawPeer) {
        ignoreSIGPIPE()
        let p = try UnixSocket.pair()
        let client = try TTRPCClient(taking: p.first)
        return (client, RawPeer(taking: p.second))
    }

    func echo(_ client: TTRPCClient, _ text: String, timeout: Duration? = nil) async throws -> String {
        let r = try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: Array(text.utf8)), timeout: timeout)
        return String(decoding: r.payload, as: UTF8.self)
    }

    func reply(_ peer: RawPeer, _ streamID: UInt32, _ text: String) async throws {
        let payload = EchoV1.EchoResponse(payload: Array(text.utf8)).serializedBytes()
        try await peer.sendFrame(streamID: streamID, type: .response, data: TTRPCWire.Response(payload: payload).serializedBytes())
    }

    @Test func streamIDsAreOddAndIncreaseOnTheWireAndResponsesMatchOutOfOrder() async throws {
        let (client, server) = try pair()
        try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<20 {
                group.addTask { (i, try await self.echo(client, "m\(i)")) }
            }
            var requests: [(UInt32, String)] = []
            for _ in 0..<20 {
                let (h, d) = try await server.readFrame()
                #expect(h.type == .request)
                let req = try TTRPCWire.Request(serializedBytes: d)
                #expect(req.service == "kata.echo.v1.Echo" && req.method == "Echo" && req.timeoutNano == 0)
                requests.append((h.streamID, String(decoding: try EchoV1.EchoRequest(serializedBytes: req.payload).payload, as: UTF8.self)))
            }
            let ids = requests.map(\.0)
            #expect(ids == ids.sorted() && Set(ids).count == 20)
            #expect(ids.allSatisfy { $0 % 2 == 1 } && ids.first == 1)
            for (id, text) in requests.reversed() { try await reply(server, id, text) }
            for try await (i, text) in group { #expect(text == "m\(i)") }
        }
        #expect(client.pendingCalls == 0)
        client.close()
    }

    @Test func deadlineIsSentAndEnforcedLocally() async throws {
        let (client, server) = try pair()
        let started = ContinuousClock.now
        await #expect(throws: TTRPCError(.deadlineExceeded, "context deadline exceeded")) {
            _ = try await echo(client, "never answered", timeout: .milliseconds(100))
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed >= .milliseconds(95) && elapsed < .seconds(2))
        let (_, d) = try await server.readFrame()
        let timeout = try TTRPCWire.Request(serializedBytes: d).timeoutNano
        #expect(timeout == 100_000_000)
        #expect(client.pendingCalls == 0)
        // A late answer for the expired stream is dropped; the connection still works.
        try await reply(server, 1, "late")
        async let next = echo(client, "next")
        let (h, _) = try await server.readFrame()
        try await reply(server, h.streamID, "next")
        #expect(try await next == "next")
        client.close()
    }

    @Test func connectionLossFailsEveryPendingCallPromptly() async throws {
        let (client, server) = try pair()
        try await withThrowingTaskGroup(of: (any Error)?.self) { group in
            for i in 0..<5 {
                group.addTask {
                    do { _ = try await self.echo(client, "p\(i)"); return nil } catch { return error }
                }
            }
            for _ in 0..<5 { _ = try await server.readFrame() }
            let started = ContinuousClock.now
            close(server.fd)  // the peer dies
            for try await error in group {
                #expect(error as? TTRPCError == TTRPCError.closed)
            }
            #expect(ContinuousClock.now - started < .seconds(1))
        }
        #expect(client.isClosed)
        await #expect(throws: TTRPCError.closed) { _ = try await echo(client, "after") }
    }

    @Test func refusesToSendAFrameOver4MiB() async throws {
        let (client, server) = try pair()
        await #expect(throws: TTRPCError.self) {
            _ = try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: [UInt8](repeating: 0, count: Frame.maxDataLength)))
        }
        // Nothing was written: the first frame the server sees is the next call's, on stream 1.
        async let next = echo(client, "small")
        let (h, _) = try await server.readFrame()
        #expect(h.streamID == 1)
        try await reply(server, h.streamID, "small")
        #expect(try await next == "small")
        client.close()
    }

    @Test func oversizedResponseFailsThatCallOnly() async throws {
        let (client, server) = try pair()
        async let first: Void = {
            await #expect(throws: TTRPCError.self) { _ = try await echo(client, "big") }
        }()
        let (h, _) = try await server.readFrame()
        let huge = TTRPCWire.Response(payload: [UInt8](repeating: 1, count: Frame.maxDataLength + 100)).serializedBytes()
        try await server.sendFrame(streamID: h.streamID, type: .response, data: huge)
        await first
        async let second = echo(client, "fine")
        let (h2, _) = try await server.readFrame()
        try await reply(server, h2.streamID, "fine")
        #expect(try await second == "fine")
        client.close()
    }

    @Test func errorStatusBecomesTTRPCError() async throws {
        let (client, server) = try pair()
        let call = Task { try await echo(client, "x") }
        let (h, _) = try await server.readFrame()
        try await server.sendFrame(streamID: h.streamID, type: .response,
                                   data: vector(#"0a24 0805 1220 "container not created: not found""#))
        await #expect(throws: TTRPCError(.notFound, "container not created: not found")) { _ = try await call.value }
        client.close()
    }

    @Test func cancellingTheTaskFailsTheCall() async throws {
        let (client, server) = try pair()
        let task = Task { try await echo(client, "cancel me") }
        _ = try await server.readFrame()
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(client.pendingCalls == 0)
        client.close()
    }

    @Test func clientAndServerInProcess() async throws {
        let fx = try EchoServerFixture()
        let client = try await fx.client()
        let metadata = [TTRPCWire.KeyValue(key: "containerd-namespace-ttrpc", value: "k8s.io")]
        let r = try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: [1, 2, 3]),
                                      timeout: .seconds(2), metadata: metadata)
        #expect(r.payload == [1, 2, 3])
        #expect(r.metadata == ["containerd-namespace-ttrpc=k8s.io"])
        #expect(r.deadlineNano > 1_500_000_000 && r.deadlineNano <= 2_000_000_000)
        client.close()
        await fx.stop()
    }
}
