import CProtobufC

/// The protobuf-c descriptor of one message type.
///
/// Wraps a pointer to a `static const` descriptor compiled into CProtocols: it is immutable
/// and lives for the whole process, which is why sharing it across threads is safe.
public struct ProtoDescriptor: @unchecked Sendable, Hashable {
    let raw: UnsafePointer<ProtobufCMessageDescriptor>

    package init(_ raw: UnsafePointer<ProtobufCMessageDescriptor>) {
        self.raw = raw
    }

    /// The full proto name as protobuf-c records it.
    public var name: String { String(cString: raw.pointee.name) }
}

/// What protobuf-c's descriptor says about one field.
public struct ProtoFieldInfo: Sendable, Hashable {
    /// The wire type family of a field.
    public enum Kind: Sendable, Hashable {
        case int32, sint32, sfixed32, int64, sint64, sfixed64, uint32, fixed32, uint64, fixed64
        case float, double, bool, enumeration, string, bytes, message
    }
    public let number: UInt32
    public let name: String
    public let kind: Kind
    public let isRepeated: Bool
    /// Repeated scalars encoded in packed form (the proto3 default).
    public let isPacked: Bool
    /// The descriptor of a message-typed field (map entries included).
    public let messageDescriptor: ProtoDescriptor?
}

extension ProtoDescriptor {
    /// Every field, in declaration order.
    public var fields: [ProtoFieldInfo] {
        (0..<Int(raw.pointee.n_fields)).map { i in
            let f = raw.pointee.fields[i]
            // ProtobufCType's values, in the order protobuf-c.h declares them.
            let kinds: [ProtoFieldInfo.Kind] = [.int32, .sint32, .sfixed32, .int64, .sint64, .sfixed64,
                                                .uint32, .fixed32, .uint64, .fixed64, .float, .double,
                                                .bool, .enumeration, .string, .bytes, .message]
            let kind = kinds[Int(f.type.rawValue)]
            let sub = kind == .message
                ? ProtoDescriptor(f.descriptor.assumingMemoryBound(to: ProtobufCMessageDescriptor.self))
                : nil
            return ProtoFieldInfo(number: f.id, name: String(cString: f.name), kind: kind,
                                  isRepeated: f.label.rawValue == 2 /* PROTOBUF_C_LABEL_REPEATED */,
                                  isPacked: f.flags & 1 /* PROTOBUF_C_FIELD_FLAG_PACKED */ != 0,
                                  messageDescriptor: sub)
        }
    }
}
