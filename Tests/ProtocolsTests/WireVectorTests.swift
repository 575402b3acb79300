import Protocols
import TestSupport
import Testing

/// The byte-exact vectors of ../shared/reference/containerd-shim-v2.md (§1.9, §2.5, §3.3, §4.1),
/// captured from the real Go implementation: every one must decode to the expected values and
/// encode back to the very same bytes.
@Suite struct WireVectorTests {
    func roundTrip<M: ProtoMessage>(_ bytes: [UInt8], as _: M.Type, _ expected: M) throws {
        let decoded = try M(serializedBytes: bytes)
        #expect(decoded == expected)
        #expect(hex(expected.serializedBytes()) == hex(bytes))
        #expect(expected.serializedSize == bytes.count)
    }

    let t1700000000 = GoogleProtobuf.Timestamp(seconds: 1_700_000_000, nanos: 0)

    @Test func stateRequestEnvelope() throws {
        // §1.9: the Request of a State call with a 2 s deadline and the namespace metadata.
        let data = vector("""
            0a17 "containerd.task.v2.Task" 1205 "State" 1a04 0a02 "c1" 20 f5e7d3b907
            2a25 0a1a "containerd-namespace-ttrpc" 1207 "default"
            """)
        #expect(data.count == 0x53)
        let request = try TTRPCWire.Request(serializedBytes: data)
        #expect(request.service == "containerd.task.v2.Task")
        #expect(request.method == "State")
        #expect(request.timeoutNano > 1_900_000_000 && request.timeoutNano < 2_000_000_000)
        #expect(request.metadata == [TTRPCWire.KeyValue(key: "containerd-namespace-ttrpc", value: "default")])
        #expect(try TaskV2.StateRequest(serializedBytes: request.payload) == TaskV2.StateRequest(id: "c1"))
        #expect(request.serializedBytes() == data)
    }

    @Test func stateResponseWithGoZeroTime() throws {
        let state = TaskV2.StateResponse(id: "c1", bundle: "/b", pid: 42, status: .running)
        #expect(state.exitedAt == .goZero)
        try roundTrip(vector("0a026331 12022f62 182a 2002 520b088092b8c398feffffff01"), as: TaskV2.StateResponse.self, state)
        try roundTrip(vector("1219 0a026331 12022f62 182a 2002 520b088092b8c398feffffff01"),
                      as: TTRPCWire.Response.self, TTRPCWire.Response(payload: state.serializedBytes()))
    }

    @Test func errorResponses() throws {
        try roundTrip(vector(#"0a24 0805 1220 "container not created: not found""#), as: TTRPCWire.Response.self,
                      TTRPCWire.Response(status: GoogleRPC.Status(code: 5, message: "container not created: not found")))
        try roundTrip(vector(#"0a0f 080c 120b "method Nope""#), as: TTRPCWire.Response.self,
                      TTRPCWire.Response(status: GoogleRPC.Status(code: 12, message: "method Nope")))
    }

    @Test func emptyOKResponseIsZeroBytes() throws {
        #expect(TTRPCWire.Response().serializedBytes() == [])
        #expect(GoogleProtobuf.Empty().serializedBytes() == [])
        #expect(try TTRPCWire.Response(serializedBytes: []) == TTRPCWire.Response())
    }

    @Test func connectResponse() throws {
        let connect = TaskV2.ConnectResponse(shimPid: 1234, taskPid: 5678)
        try roundTrip(vector("1206 08d209 10ae2c"), as: TTRPCWire.Response.self,
                      TTRPCWire.Response(payload: connect.serializedBytes()))
        try roundTrip(vector("08d209 10ae2c"), as: TaskV2.ConnectResponse.self, connect)
    }

    @Test func deleteResponses() throws {
        // §2.5: the trace of runc's `delete` action, the all-default message, §3.3's example.
        let traced = try TaskV2.DeleteResponse(serializedBytes: vector("08ca28 108901 1a0b088390c6d80610a0d6da5d"))
        #expect(traced.pid == 5194 && traced.exitStatus == 137)
        #expect(traced.serializedBytes() == vector("08ca28 108901 1a0b088390c6d80610a0d6da5d"))
        try roundTrip(vector("1a0b088092b8c398feffffff01"), as: TaskV2.DeleteResponse.self, TaskV2.DeleteResponse())
        try roundTrip(vector("082a 108901 1a08 0880e2cfaa06 1005"), as: TaskV2.DeleteResponse.self,
                      TaskV2.DeleteResponse(pid: 42, exitStatus: 137,
                                            exitedAt: GoogleProtobuf.Timestamp(seconds: 1_700_000_000, nanos: 5)))
    }

    @Test func timestamps() throws {
        try roundTrip(vector("08 80e2cfaa06 10 05"), as: GoogleProtobuf.Timestamp.self,
                      GoogleProtobuf.Timestamp(seconds: 1_700_000_000, nanos: 5))
        try roundTrip(vector("088092b8c398feffffff01"), as: GoogleProtobuf.Timestamp.self, .goZero)
    }

    @Test func taskEvents() throws {
        let exit = ContainerdEvents.TaskExit(containerID: "c1", id: "c1", pid: 42, exitStatus: 137, exitedAt: t1700000000)
        try roundTrip(vector("0a026331 12026331 182a 208901 2a060880e2cfaa06"), as: ContainerdEvents.TaskExit.self, exit)
        try roundTrip(vector("0a026331 102a"), as: ContainerdEvents.TaskStart.self,
                      ContainerdEvents.TaskStart(containerID: "c1", pid: 42))
    }

    @Test func forwardEnvelopeWithBareTypeURL() throws {
        // §4.1: Forward of TaskExit{c1,c1,42,137,t} in namespace default.
        let exit = ContainerdEvents.TaskExit(containerID: "c1", id: "c1", pid: 42, exitStatus: 137, exitedAt: t1700000000)
        let forward = EventsTTRPCV1.ForwardRequest(envelope: EventsTTRPCV1.Envelope(
            timestamp: t1700000000, namespace: "default", topic: "/tasks/exit",
            event: GoogleProtobuf.AnyMessage(packing: exit)))
        #expect(forward.envelope?.event?.typeURL == "containerd.events.TaskExit")
        try roundTrip(vector("""
            0a53 0a06 0880e2cfaa06 1207 "default" 1a0b "/tasks/exit" 2233 0a1a "containerd.events.TaskExit"
            1215 0a02 "c1" 1202 "c1" 182a 208901 2a06 0880e2cfaa06
            """), as: EventsTTRPCV1.ForwardRequest.self, forward)
        #expect(try forward.envelope?.event?.unpack(ContainerdEvents.TaskExit.self) == exit)
        #expect(throws: ProtoError.self) { try forward.envelope?.event?.unpack(ContainerdEvents.TaskStart.self) }
    }

    @Test func runtimeOptionsFromStartStdin() throws {
        // §2.9: what CRI pipes to `start` for a non-runc runtime with ConfigPath set.
        let any = try GoogleProtobuf.AnyMessage(serializedBytes: vector(#"0a19 "runtimeoptions.v1.Options" 1210 120e "/etc/fake.toml""#))
        #expect(try any.unpack(RuntimeOptionsV1.Options.self) == RuntimeOptionsV1.Options(configPath: "/etc/fake.toml"))
        #expect(GoogleProtobuf.AnyMessage(packing: RuntimeOptionsV1.Options(configPath: "/etc/fake.toml")) == any)
    }

    @Test func pidsResponseFromTrace() throws {
        try roundTrip(vector("0a03 08e62c"), as: TaskV2.PidsResponse.self,
                      TaskV2.PidsResponse(processes: [ContainerdTaskTypes.ProcessInfo(pid: 5734)]))
    }

    @Test func mapFieldsEncodeSortedAndDecode() throws {
        let update = TaskV2.UpdateTaskRequest(id: "c", annotations: ["b": "2", "a": "1"])
        let bytes = update.serializedBytes()
        #expect(hex(bytes) == hex(vector(#"0a01 "c" 1a06 0a01 "a" 1201 "1" 1a06 0a01 "b" 1201 "2""#)))
        #expect(try TaskV2.UpdateTaskRequest(serializedBytes: bytes) == update)
    }

    @Test func malformedBytesThrow() {
        #expect(throws: ProtoError.malformed("ttrpc.Request")) { try TTRPCWire.Request(serializedBytes: [0x0a, 0x05, 0x61]) }
        #expect(throws: ProtoError.self) { try TTRPCWire.Request(serializedBytes: [0xff, 0xff, 0xff]) }
        #expect(throws: ProtoError.self) { try TaskV2.StateRequest(serializedBytes: [0x0a]) }
    }
}
