import CProtobufC

/// A protobuf message as a Swift value.
///
/// Conforming types are generated from `Protos/` by `make protos`; their encoding and decoding is
/// done by libprotobuf-c, driven by the message's protobuf-c descriptor, so every codec is the
/// reference C implementation. Values are plain `Sendable` structs and can cross threads freely.
public protocol ProtoMessage: Sendable, Hashable {
    /// The full proto name, e.g. `containerd.events.TaskExit` (also the bare `type_url` of an Any).
    static var protoName: String { get }
    /// The protobuf-c descriptor of the message (opaque outside this module).
    static var protoDescriptor: ProtoDescriptor { get }
    /// The default value: every field zero, empty or absent.
    init()
    /// Reads every field out of a decoded protobuf-c message (generated code).
    init(reading: ProtoReader)
    /// Stores every field into a protobuf-c message being built (generated code).
    func write(to: ProtoWriter)
}

extension ProtoMessage {
    /// Decodes the protobuf wire bytes of this message.
    ///
    /// - Throws: `ProtoError.malformed` when the bytes are not a valid encoding of the message.
    public init(serializedBytes bytes: [UInt8]) throws(ProtoError) {
        let desc = Self.protoDescriptor.raw
        let unpacked: UnsafeMutablePointer<ProtobufCMessage>? = bytes.withUnsafeBufferPointer { buf in
            // protobuf-c never reads through a NULL pointer for a zero length, but give it a
            // valid address anyway.
            var dummy: UInt8 = 0
            return buf.baseAddress.map { protobuf_c_message_unpack(desc, nil, buf.count, $0) }
                ?? protobuf_c_message_unpack(desc, nil, 0, &dummy)
        }
        guard let unpacked else { throw ProtoError.malformed(Self.protoName) }
        defer { protobuf_c_message_free_unpacked(unpacked, nil) }
        self.init(reading: ProtoReader(message: UnsafeRawPointer(unpacked), descriptor: desc))
    }

    /// Encodes this message to protobuf wire bytes (deterministic: fields in number order, map
    /// entries sorted by key).
    public func serializedBytes() -> [UInt8] {
        let message = ProtoWriter.allocate(Self.protoDescriptor.raw)
        defer { protobuf_c_message_free_unpacked(message, nil) }
        write(to: ProtoWriter(message: message))
        let size = protobuf_c_message_get_packed_size(message)
        return [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            count = size == 0 ? 0 : protobuf_c_message_pack(message, buf.baseAddress!)
        }
    }

    /// The encoded size in bytes, without producing the bytes.
    public var serializedSize: Int {
        let message = ProtoWriter.allocate(Self.protoDescriptor.raw)
        defer { protobuf_c_message_free_unpacked(message, nil) }
        write(to: ProtoWriter(message: message))
        return protobuf_c_message_get_packed_size(message)
    }
}
