import Protocols
import TestSupport
import Testing

/// Every generated message, every field: wire bytes that set each field to a non-default value
/// are built from protobuf-c's descriptor, decoded into the Swift value, and must encode back to
/// the same bytes. A field the generated Swift code drops, or writes under the wrong number or
/// type, changes the bytes.
@Suite struct RoundTripTests {
    @Test(arguments: allProtoMessageTypes.map { TypeBox(messageType: $0) })
    func everyFieldSurvivesARoundTrip(_ box: TypeBox) throws {
        let bytes = Synthesizer().message(box.messageType.protoDescriptor, depth: 0)
        try box.check(bytes)
    }

    @Test func registryCoversEveryProtoFile() {
        let names = Set(allProtoMessageTypes.map { $0.protoName })
        #expect(names.contains("containerd.task.v2.CreateTaskRequest"))
        #expect(names.contains("io.containerd.cgroups.v1.Metrics"))
        #expect(names.contains("io.containerd.cgroups.v2.Metrics"))
        #expect(names.contains("containerd.services.events.ttrpc.v1.Envelope"))
        #expect(names.contains("grpc.CreateSandboxRequest"))
        #expect(names.contains("grpc.HealthCheckResponse"))
        #expect(names.contains("runtimeoptions.v1.Options"))
        #expect(allProtoMessageTypes.count > 100)
    }
}

struct TypeBox: CustomTestStringConvertible, Sendable {
    let messageType: any ProtoMessage.Type
    var testDescription: String { messageType.protoName }

    func check(_ bytes: [UInt8]) throws {
        try Self.check(messageType, bytes)
    }

    static func check<M: ProtoMessage>(_: M.Type, _ bytes: [UInt8]) throws {
        let value = try M(serializedBytes: bytes)
        #expect(hex(value.serializedBytes()) == hex(bytes), "\(M.protoName)")
        #expect(try M(serializedBytes: value.serializedBytes()) == value)
        if !bytes.isEmpty { #expect(value != M(), "\(M.protoName) decoded to the default value") }
    }
}

/// Builds canonical wire bytes from a descriptor: each field once, in number order, with a
/// value derived from its number (repeated fields get two elements, packed when proto3 packs).
struct Synthesizer {
    func varint(_ v: UInt64) -> [UInt8] {
        var v = v, out: [UInt8] = []
        while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }

    func tag(_ n: UInt32, _ wire: UInt64) -> [UInt8] { varint(UInt64(n) << 3 | wire) }

    func scalar(_ f: ProtoFieldInfo, _ k: UInt64) -> (wire: UInt64, bytes: [UInt8]) {
        switch f.kind {
        case .bool: return (0, [1])
        case .enumeration: return (0, varint(1))
        case .int32, .int64, .uint32, .uint64: return (0, varint(UInt64(f.number) * 1000 + k))
        case .sint32, .sint64: return (0, varint((UInt64(f.number) + k) << 1))
        case .fixed32, .sfixed32, .float:
            let v = UInt32(f.number) + UInt32(k)
            return (5, (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) })
        case .fixed64, .sfixed64, .double:
            let v = UInt64(f.number) + k
            return (1, (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) })
        case .string: return (2, varint(4) + Array("s\(f.number % 10)x\(k)".utf8))
        case .bytes: return (2, varint(3) + [0x00, 0xff, UInt8(f.number & 0xff)])
        case .message: preconditionFailure()
        }
    }

    func message(_ d: ProtoDescriptor, depth: Int) -> [UInt8] {
        var out: [UInt8] = []
        for f in d.fields.sorted(by: { $0.number < $1.number }) {
            let count: UInt64 = f.isRepeated ? 2 : 1
            if f.kind == .message {
                guard depth < 4, let sub = f.messageDescriptor else { continue }
                let isMapEntry = f.isRepeated && sub.name.hasPrefix(d.name + ".") && sub.name.hasSuffix("Entry")
                for k in 0..<(isMapEntry ? 1 : count) {
                    var body = message(sub, depth: depth + 1)
                    if isMapEntry { body = tag(1, 2) + varint(1) + [UInt8(ascii: "k")] + tag(2, 2) + varint(1) + [UInt8(ascii: "v")] }
                    _ = k
                    out += tag(f.number, 2) + varint(UInt64(body.count)) + body
                }
            } else if f.isRepeated && f.isPacked {
                let body = (0..<count).flatMap { scalar(f, $0).bytes }
                out += tag(f.number, 2) + varint(UInt64(body.count)) + body
            } else {
                for k in 0..<count {
                    let (wire, bytes) = scalar(f, k)
                    out += tag(f.number, wire) + bytes
                }
            }
        }
        return out
    }
}
