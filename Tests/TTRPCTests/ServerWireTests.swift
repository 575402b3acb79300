#if canImport(Glibc)
import Glibc
#endif
import Protocols
import SystemKit
import TTRPC
import Synchronization
import TestSupport
import Testing

/// The server's answers, byte for byte, against the vectors captured from Go's ttRPC
/// (../shared/reference/containerd-shim-v2.md §1.9).
@Suite struct ServerWireTests {
    func withServer(_ body: (EchoServerFixture) async throws -> Void) async throws {
        let fixture = try EchoServerFixture { server in
            server.register(TaskV2.TaskService.state) { req, _ in
                guard req.id == "c1" else { throw TTRPCError(.notFound, "container not created: not found") }
                return TaskV2.StateResponse(id: "c1", bundle: "/b", pid: 42, status: .running)
            }
            server.register(TaskV2.TaskService.kill) { _, _ in GoogleProtobuf.Empty() }
        }
        do {
            try await body(fixture)
        } catch {
            await fixture.stop()
            throw error
        }
        await fixture.stop()
    }

    @Test func stateCallMatchesTheGoVectors() async throws {
        try await withServer { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            let data = vector("""
                0a17 "containerd.task.v2.Task" 1205 "State" 1a04 0a02 "c1" 20 f5e7d3b907
                2a25 0a1a "containerd-namespace-ttrpc" 1207 "default"
                """)
            try await peer.send(vector("00000053 00000001 01 00") + data)
            let (h, d) = try await peer.readFrame()
            #expect(hex(Frame.encode(streamID: h.streamID, type: h.type, data: d))
                    == hex(vector("0000001b 00000001 02 00 1219 0a026331 12022f62 182a 2002 520b088092b8c398feffffff01")))

            // NotFound on stream 3.
            try await peer.sendFrame(streamID: 3, data: request("State", service: "containerd.task.v2.Task",
                                                                 payload: TaskV2.StateRequest(id: "nope").serializedBytes()))
            let (h2, d2) = try await peer.readFrame()
            #expect(hex(Frame.encode(streamID: h2.streamID, type: h2.type, data: d2))
                    == hex(vector(#"00000026 00000003 02 00 0a24 0805 1220 "container not created: not found""#)))

            // Empty OK is a bare header.
            try await peer.sendFrame(streamID: 5, data: request("Kill", service: "containerd.task.v2.Task"))
            let (h3, d3) = try await peer.readFrame()
            #expect(hex(Frame.encode(streamID: h3.streamID, type: h3.type, data: d3)) == "00000000000000050200")
        }
    }

    @Test func unknownServiceAndMethod() async throws {
        try await withServer { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            try await peer.sendFrame(streamID: 1, data: request("Nope", service: "containerd.task.v2.Task"))
            let (_, d) = try await peer.readFrame()
            #expect(hex(d) == hex(vector(#"0a0f 080c 120b "method Nope""#)))
            try await peer.sendFrame(streamID: 3, data: request("State", service: "no.Such"))
            let (_, r) = try await peer.readResponse()
            #expect(r.status == GoogleRPC.Status(code: 12, message: "service no.Such"))
        }
    }

    @Test func evenStreamIDIsRejectedOnTheSameStream() async throws {
        try await withServer { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            try await peer.sendFrame(streamID: 2, data: request("Echo", payload: echoPayload("x")))
            let (sid, r) = try await peer.readResponse()
            #expect(sid == 2)
            #expect(r.status == GoogleRPC.Status(code: 3, message: "StreamID must be odd for client initiated streams"))
        }
    }

    @Test func undecodableRequestAndPayloadGetInvalidArgumentAndTheConnectionLives() async throws {
        try await withServer { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            try await peer.sendFrame(streamID: 1, data: [0xff, 0xff, 0xff, 0xff])
            let (sid, r) = try await peer.readResponse()
            #expect(sid == 1 && r.status?.code == 3)
            #expect(r.status?.message.hasPrefix("unmarshal request error") == true)

            try await peer.sendFrame(streamID: 3, data: request("Echo", payload: [0x0a, 0x10, 0x01]))
            let (sid2, r2) = try await peer.readResponse()
            #expect(sid2 == 3 && r2.status?.code == 3)
            #expect(r2.status?.message.hasPrefix("error unmarshalling payload") == true)

            try await peer.sendFrame(streamID: 5, data: request("Echo", payload: echoPayload("still")))
            let (_, r3) = try await peer.readResponse()
            #expect(try EchoV1.EchoResponse(serializedBytes: r3.payload).payload == Array("still".utf8))
        }
    }

    @Test func unknownFrameTypesAreIgnored() async throws {
        try await withServer { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            try await peer.sendFrame(streamID: 1, type: .data, data: [1, 2, 3])
            try await peer.sendFrame(streamID: 3, type: MessageType(rawValue: 0x7f), data: [])
            try await peer.sendFrame(streamID: 5, type: .response, data: [])
            try await peer.sendFrame(streamID: 7, data: request("Echo", payload: echoPayload("after")))
            let (sid, r) = try await peer.readResponse()
            #expect(sid == 7)
            #expect(try EchoV1.EchoResponse(serializedBytes: r.payload).payload == Array("after".utf8))
        }
    }

    @Test func oversizedFrameIsDrainedAndAnsweredWithResourceExhausted() async throws {
        try await withServer { fx in
            let peer = try RawPeer(connectingTo: fx.socket)
            let big = request("Echo", payload: EchoV1.EchoRequest(payload: [UInt8](repeating: 1, count: Frame.maxDataLength)).serializedBytes())
            try await peer.sendFrame(streamID: 9, data: big)
            let (sid, r) = try await peer.readResponse()
            #expect(sid == 9)
            #expect(r.status == GoogleRPC.Status(code: 8, message: "message length \(big.count) exceed maximum message size of 4194304"))
            try await peer.sendFrame(streamID: 11, data: request("Echo", payload: echoPayload("ok")))
            let (sid2, r2) = try await peer.readResponse()
            #expect(sid2 == 11 && r2.status == nil)
        }
    }

    @Test func deadlineExceededCancelsTheHandler() async throws {
        let cancelled = CancelFlag()
        let fixture = try EchoServerFixture { server in
            server.register(TaskV2.TaskService.wait) { _, context in
                #expect(context.deadline != nil)
                do {
                    try await Task.sleep(for: .seconds(10))
                } catch {
                    cancelled.set()
                    throw error
                }
                return TaskV2.WaitResponse()
            }
        }
        let peer = try RawPeer(connectingTo: fixture.socket)
        let started = ContinuousClock.now
        try await peer.sendFrame(streamID: 1, data: request("Wait", service: "containerd.task.v2.Task", timeoutNano: 100_000_000))
        let (sid, r) = try await peer.readResponse()
        let elapsed = ContinuousClock.now - started
        #expect(sid == 1 && r.status == GoogleRPC.Status(code: 4, message: "context deadline exceeded"))
        #expect(elapsed >= .milliseconds(90) && elapsed < .seconds(2))
        for _ in 0..<100 where !cancelled.isSet { try await Task.sleep(for: .milliseconds(10)) }
        #expect(cancelled.isSet)
        await fixture.stop()
    }

    @Test func handlerErrorsMapToCodes() async throws {
        struct Plain: Error {}
        let fixture = try EchoServerFixture { server in
            server.register(TaskV2.TaskService.delete) { req, _ in
                switch req.id {
                case "enoent": throw Errno(ENOENT, "open /x")
                case "eexist": throw Errno(EEXIST)
                case "plain": throw Plain()
                default: throw TTRPCError(.failedPrecondition, "cannot delete a running process")
                }
            }
        }
        let client = try await fixture.client()
        for (id, code) in [("enoent", 5), ("eexist", 6), ("plain", 2), ("run", 9)] {
            do {
                _ = try await client.call(TaskV2.TaskService.delete, TaskV2.DeleteRequest(id: id))
                Issue.record("\(id) succeeded")
            } catch let e as TTRPCError {
                #expect(e.code.rawValue == Int32(code), "\(id): \(e)")
            }
        }
        client.close()
        await fixture.stop()
    }
}

final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}
