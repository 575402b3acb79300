#if canImport(Glibc)
import Glibc
#endif
import CProtobufC

/// Fills the fields of a protobuf-c message being built, by field number.
///
/// Used by the generated `write(to:)`. Every member is allocated with `malloc`, so the finished
/// message is released by `protobuf_c_message_free_unpacked(_, nil)`, which frees exactly what a
/// decoded message holds. Empty strings and bytes stay NULL/zero, which protobuf-c treats as
/// "not present" for proto3 fields.
public struct ProtoWriter {
    let message: UnsafeMutablePointer<ProtobufCMessage>

    init(message: UnsafeMutablePointer<ProtobufCMessage>) {
        self.message = message
    }

    /// A zeroed message of the given type (all strings NULL, all counts 0).
    static func allocate(_ descriptor: UnsafePointer<ProtobufCMessageDescriptor>) -> UnsafeMutablePointer<ProtobufCMessage> {
        guard let raw = calloc(1, descriptor.pointee.sizeof_message) else {
            fatalError("out of memory allocating \(String(cString: descriptor.pointee.name))")
        }
        let message = raw.assumingMemoryBound(to: ProtobufCMessage.self)
        message.pointee.descriptor = descriptor
        return message
    }

    private var base: UnsafeMutableRawPointer { UnsafeMutableRawPointer(message) }

    private func field(_ number: UInt32) -> UnsafePointer<ProtobufCFieldDescriptor> {
        guard let field = protobuf_c_message_descriptor_get_field(message.pointee.descriptor, number) else {
            preconditionFailure("\(String(cString: message.pointee.descriptor.pointee.name)) has no field \(number)")
        }
        return field
    }

    private func store<T>(_ number: UInt32, _ value: T) {
        base.storeBytes(of: value, toByteOffset: Int(field(number).pointee.offset), as: T.self)
    }

    /// Stores a repeated field: `count` at the quantifier offset, a malloc'd array at the offset.
    private func storeArray<E, T>(_ number: UInt32, _ values: [E], as: T.Type, _ convert: (E) -> T) {
        guard !values.isEmpty else { return }
        let f = field(number)
        guard let raw = malloc(values.count * MemoryLayout<T>.stride) else {
            fatalError("out of memory")
        }
        let array = raw.bindMemory(to: T.self, capacity: values.count)
        for (i, v) in values.enumerated() { (array + i).initialize(to: convert(v)) }
        base.storeBytes(of: values.count, toByteOffset: Int(f.pointee.quantifier_offset), as: Int.self)
        base.storeBytes(of: Optional(array), toByteOffset: Int(f.pointee.offset), as: UnsafeMutablePointer<T>?.self)
    }

    private static func duplicate(_ s: String) -> UnsafeMutablePointer<CChar>? {
        guard let copy = strdup(s) else { fatalError("out of memory") }
        return copy
    }

    private static func binary(_ b: [UInt8]) -> ProtobufCBinaryData {
        guard !b.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        guard let data = malloc(b.count)?.assumingMemoryBound(to: UInt8.self) else { fatalError("out of memory") }
        b.withUnsafeBufferPointer { data.initialize(from: $0.baseAddress!, count: b.count) }
        return ProtobufCBinaryData(len: b.count, data: data)
    }

    private static func submessage<M: ProtoMessage>(_ value: M) -> UnsafeMutablePointer<ProtobufCMessage> {
        let sub = allocate(M.protoDescriptor.raw)
        value.write(to: ProtoWriter(message: sub))
        return sub
    }

    package func setString(_ number: UInt32, _ value: String) {
        guard !value.isEmpty else { return }
        store(number, Self.duplicate(value))
    }

    package func setBytes(_ number: UInt32, _ value: [UInt8]) {
        guard !value.isEmpty else { return }
        store(number, Self.binary(value))
    }

    package func setInteger<T: FixedWidthInteger>(_ number: UInt32, _ value: T) { store(number, value) }

    package func setBool(_ number: UInt32, _ value: Bool) { store(number, protobuf_c_boolean(value ? 1 : 0)) }

    package func setDouble(_ number: UInt32, _ value: Double) { store(number, value) }

    package func setFloat(_ number: UInt32, _ value: Float) { store(number, value) }

    package func setMessage<M: ProtoMessage>(_ number: UInt32, _ value: M?) {
        guard let value else { return }
        store(number, Optional(Self.submessage(value)))
    }

    package func setRepeatedString(_ number: UInt32, _ values: [String]) {
        // Elements must be non-NULL even when empty: protobuf-c measures them with strlen.
        storeArray(number, values, as: UnsafeMutablePointer<CChar>?.self, Self.duplicate)
    }

    package func setRepeatedBytes(_ number: UInt32, _ values: [[UInt8]]) {
        storeArray(number, values, as: ProtobufCBinaryData.self, Self.binary)
    }

    package func setRepeatedInteger<T: FixedWidthInteger>(_ number: UInt32, _ values: [T]) {
        storeArray(number, values, as: T.self) { $0 }
    }

    package func setRepeatedBool(_ number: UInt32, _ values: [Bool]) {
        storeArray(number, values, as: protobuf_c_boolean.self) { $0 ? 1 : 0 }
    }

    package func setRepeatedDouble(_ number: UInt32, _ values: [Double]) { storeArray(number, values, as: Double.self) { $0 } }

    package func setRepeatedFloat(_ number: UInt32, _ values: [Float]) { storeArray(number, values, as: Float.self) { $0 } }

    package func setRepeatedMessage<M: ProtoMessage>(_ number: UInt32, _ values: [M]) {
        storeArray(number, values, as: UnsafeMutablePointer<ProtobufCMessage>?.self) { Self.submessage($0) }
    }

    /// A `map<string, string>` field, entries sorted by key so the bytes are deterministic.
    package func setStringMap(_ number: UInt32, _ map: [String: String]) {
        let entryDescriptor = field(number).pointee.descriptor.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)
        storeArray(number, map.sorted { $0.key < $1.key }, as: UnsafeMutablePointer<ProtobufCMessage>?.self) { kv in
            let entry = Self.allocate(entryDescriptor)
            let w = ProtoWriter(message: entry)
            w.setString(1, kv.key)
            w.setString(2, kv.value)
            return entry
        }
    }
}
