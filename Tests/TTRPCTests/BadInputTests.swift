#if canImport(Glibc)
import Glibc
#endif
import Protocols
import SystemKit
import TTRPC
import Synchronization
import Testing

/// Hostile or broken peers must not crash or wedge the server: after each case it still
/// serves other connections, and it holds no descriptor for the dead ones.
@Suite(.serialized) struct BadInputTests {
    func afterwards(_ fx: EchoServerFixture, baselineFDs: Int) async throws {
        try await expectServes(fx)
        for _ in 0..<200 where fx.server.connectionCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(fx.server.connectionCount == 0)
        #expect(openFDCount() <= baselineFDs, "\(fdList())")
    }

    func run(_ body: (EchoServerFixture) async throws -> Void) async throws {
        let fx = try EchoServerFixture()
        let baseline = openFDCount()
        do {
            try await body(fx)
            try await afterwards(fx, baselineFDs: baseline)
        } catch {
            await fx.stop()
            throw error
        }
        await fx.stop()
    }

    @Test func garbageBytes() async throws {
        try await run { fx in
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<20 {
                let peer = try RawPeer(connectingTo: fx.socket)
                try await peer.send((0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) })
            }
        }
    }

    @Test func truncatedHeaderThenClose() async throws {
        try await run { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            try await peer.send([0, 0, 0, 5, 0])
        }
    }

    @Test func truncatedBodyThenClose() async throws {
        try await run { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            let frame = Frame.encode(streamID: 1, type: .request, data: request("Echo", payload: echoPayload("cut")))
            try await peer.send(Array(frame.dropLast(3)))
        }
    }

    @Test func maximalLengthHeaderIsAnsweredAndCostsNoMemory() async throws {
        try await run { fx in
            let before = residentMiB()
            let peer = try RawPeer(connectingTo: fx.socket)
            try await peer.send([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0])
            let (sid, r) = try await peer.readResponse()
            #expect(sid == 1 && r.status?.code == 8)
            // Send 32 MiB of the announced 4 GiB: all of it is discarded, none buffered.
            let chunk = [UInt8](repeating: 0x55, count: 1 << 20)
            for _ in 0..<32 { try await peer.send(chunk) }
            try await Task.sleep(for: .milliseconds(50))
            #expect(residentMiB() - before < 16, "RSS grew \(residentMiB() - before) MiB")
        }
    }

    @Test func disconnectMidFrameWithCallsInFlight() async throws {
        try await run { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            try await peer.sendFrame(streamID: 1, data: request("Echo", payload: echoPayload("slow", delayMs: 100)))
            let frame = Frame.encode(streamID: 3, type: .request, data: request("Echo", payload: echoPayload("x")))
            try await peer.send(Array(frame.prefix(12)))
            // peer is dropped here: the server finds EOF mid-frame and a call still running.
        }
    }

    @Test func floodOfSmallFramesWithoutReadingStaysBounded() async throws {
        try await run { fx in
            let before = residentMiB()
            let peer = try RawPeer(connectingTo: fx.socket)
            let one = Frame.encode(streamID: 1, type: .request, data: request("Echo", payload: echoPayload(String(repeating: "f", count: 200))))
            var burst: [UInt8] = []
            for _ in 0..<1000 { burst += one }
            // 100k requests; the client never reads. The server must stop reading once its
            // response queue is full, so our writes stall instead of its memory growing.
            let sent = Atomic<Int>(0)
            let writer = Task {
                for _ in 0..<100 {
                    try await peer.send(burst)
                    sent.add(1000, ordering: .relaxed)
                }
            }
            try await Task.sleep(for: .seconds(2))
            let grown = residentMiB() - before
            #expect(grown < 96, "RSS grew \(grown) MiB")
            #expect(sent.load(ordering: .relaxed) < 100_000, "the server never pushed back")
            writer.cancel()
        }
    }

    @Test func floodOfSmallFramesAllAnswered() async throws {
        try await run { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            var burst: [UInt8] = []
            let n = 5000
            for i in 0..<n {
                burst += Frame.encode(streamID: UInt32(2 * i + 1), type: .request, data: request("Echo", payload: echoPayload("\(i)")))
            }
            let writer = Task { try await peer.send(burst) }
            var seen = Set<UInt32>()
            while seen.count < n {
                let (sid, r) = try await peer.readResponse()
                #expect(r.status == nil)
                seen.insert(sid)
            }
            try await writer.value
            #expect(seen.count == n)
        }
    }

    @Test func thousandSequentialConnections() async throws {
        try await run { fx in
            for i in 0..<1000 {
                let client = try await fx.client()
                let r = try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: Array("\(i)".utf8)))
                #expect(r.payload == Array("\(i)".utf8))
                client.close()
            }
        }
    }
}
