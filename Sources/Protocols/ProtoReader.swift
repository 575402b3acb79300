import CProtobufC

/// Reads the fields of a decoded protobuf-c message by field number.
///
/// Used by the generated `init(reading:)`; valid only inside that call (the C message is freed
/// right after). Field offsets and counts come from protobuf-c's field descriptors, so no code
/// here knows any message's layout.
public struct ProtoReader {
    let message: UnsafeRawPointer
    let descriptor: UnsafePointer<ProtobufCMessageDescriptor>

    init(message: UnsafeRawPointer, descriptor: UnsafePointer<ProtobufCMessageDescriptor>) {
        self.message = message
        self.descriptor = descriptor
    }

    private func field(_ number: UInt32) -> UnsafePointer<ProtobufCFieldDescriptor> {
        guard let field = protobuf_c_message_descriptor_get_field(descriptor, number) else {
            // Generated code only asks for numbers the descriptor declares.
            preconditionFailure("\(String(cString: descriptor.pointee.name)) has no field \(number)")
        }
        return field
    }

    private func load<T>(_ number: UInt32, as type: T.Type) -> T {
        message.load(fromByteOffset: Int(field(number).pointee.offset), as: T.self)
    }

    /// Element count and array base of a repeated field.
    private func array<T>(_ number: UInt32, of: T.Type) -> UnsafeBufferPointer<T> {
        let f = field(number)
        let count = message.load(fromByteOffset: Int(f.pointee.quantifier_offset), as: Int.self)
        let base = message.load(fromByteOffset: Int(f.pointee.offset), as: UnsafePointer<T>?.self)
        guard let base, count > 0 else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: base, count: count)
    }

    private static func string(_ p: UnsafePointer<CChar>?) -> String {
        p.map { String(cString: $0) } ?? ""
    }

    private static func bytes(_ b: ProtobufCBinaryData) -> [UInt8] {
        guard b.len > 0, let data = b.data else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: b.len))
    }

    package func string(_ number: UInt32) -> String {
        Self.string(load(number, as: UnsafePointer<CChar>?.self))
    }

    package func bytes(_ number: UInt32) -> [UInt8] {
        Self.bytes(load(number, as: ProtobufCBinaryData.self))
    }

    /// Any integer field (and enums, as Int32); `T` matches the C member's width by construction.
    package func integer<T: FixedWidthInteger>(_ number: UInt32) -> T {
        load(number, as: T.self)
    }

    package func bool(_ number: UInt32) -> Bool {
        load(number, as: protobuf_c_boolean.self) != 0
    }

    package func double(_ number: UInt32) -> Double { load(number, as: Double.self) }

    package func float(_ number: UInt32) -> Float { load(number, as: Float.self) }

    package func message<M: ProtoMessage>(_ number: UInt32) -> M? {
        guard let sub = load(number, as: UnsafeRawPointer?.self) else { return nil }
        return M(reading: ProtoReader(message: sub, descriptor: M.protoDescriptor.raw))
    }

    package func repeatedString(_ number: UInt32) -> [String] {
        array(number, of: UnsafePointer<CChar>?.self).map(Self.string)
    }

    package func repeatedBytes(_ number: UInt32) -> [[UInt8]] {
        array(number, of: ProtobufCBinaryData.self).map(Self.bytes)
    }

    package func repeatedInteger<T: FixedWidthInteger>(_ number: UInt32) -> [T] {
        Array(array(number, of: T.self))
    }

    package func repeatedBool(_ number: UInt32) -> [Bool] {
        array(number, of: protobuf_c_boolean.self).map { $0 != 0 }
    }

    package func repeatedDouble(_ number: UInt32) -> [Double] { Array(array(number, of: Double.self)) }

    package func repeatedFloat(_ number: UInt32) -> [Float] { Array(array(number, of: Float.self)) }

    package func repeatedMessage<M: ProtoMessage>(_ number: UInt32) -> [M] {
        array(number, of: UnsafeRawPointer?.self).compactMap { sub in
            sub.map { M(reading: ProtoReader(message: $0, descriptor: M.protoDescriptor.raw)) }
        }
    }

    /// A `map<string, string>` field (a repeated entry message with key = 1, value = 2).
    package func stringMap(_ number: UInt32) -> [String: String] {
        let entryDescriptor = field(number).pointee.descriptor.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)
        var map: [String: String] = [:]
        for entry in array(number, of: UnsafeRawPointer?.self) {
            guard let entry else { continue }
            let r = ProtoReader(message: entry, descriptor: entryDescriptor)
            // Protobuf map semantics: the last entry for a key wins.
            map[r.string(1)] = r.string(2)
        }
        return map
    }
}
