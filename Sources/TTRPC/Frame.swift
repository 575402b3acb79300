/// The ttRPC frame: a 10-byte big-endian header (data length, stream id, type, flags) and data.
public enum Frame {
    /// The largest data length either side accepts or sends (4 MiB; a frame exactly at the
    /// limit is allowed). containerd 1.6's client panics on more, so we never send more.
    public static let maxDataLength = 4 << 20
    public static let headerLength = 10

    /// Builds header + data in one buffer.
    public static func encode(streamID: UInt32, type: MessageType, flags: UInt8 = 0, data: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(headerLength + data.count)
        let n = UInt32(truncatingIfNeeded: data.count)
        out.append(UInt8(n >> 24)); out.append(UInt8(truncatingIfNeeded: n >> 16))
        out.append(UInt8(truncatingIfNeeded: n >> 8)); out.append(UInt8(truncatingIfNeeded: n))
        out.append(UInt8(streamID >> 24)); out.append(UInt8(truncatingIfNeeded: streamID >> 16))
        out.append(UInt8(truncatingIfNeeded: streamID >> 8)); out.append(UInt8(truncatingIfNeeded: streamID))
        out.append(type.rawValue)
        out.append(flags)
        out.append(contentsOf: data)
        return out
    }

    /// A successful unary Response frame (`Response{payload}`, no status) built in one buffer
    /// with one copy of `payload`: the same bytes as `encode(data: Response(payload:)
    /// .serializedBytes())`, without the two intermediate copies protobuf-c packing makes.
    /// That matters for stream data, megabytes a second under TCG. Nil if the data would
    /// exceed `maxDataLength`.
    public static func encodeSuccessResponse(streamID: UInt32, payload: [UInt8]) -> [UInt8]? {
        var field: [UInt8] = []
        if !payload.isEmpty {
            // Field 2, wire type 2 (length-delimited), then the length as a varint.
            field.append(0x12)
            var n = UInt64(payload.count)
            while n >= 0x80 {
                field.append(UInt8(truncatingIfNeeded: n) | 0x80)
                n >>= 7
            }
            field.append(UInt8(n))
        }
        let length = field.count + payload.count
        guard length <= maxDataLength else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(headerLength + length)
        let n = UInt32(length)
        out.append(UInt8(n >> 24)); out.append(UInt8(truncatingIfNeeded: n >> 16))
        out.append(UInt8(truncatingIfNeeded: n >> 8)); out.append(UInt8(truncatingIfNeeded: n))
        out.append(UInt8(streamID >> 24)); out.append(UInt8(truncatingIfNeeded: streamID >> 16))
        out.append(UInt8(truncatingIfNeeded: streamID >> 8)); out.append(UInt8(truncatingIfNeeded: streamID))
        out.append(MessageType.response.rawValue)
        out.append(0)
        out.append(contentsOf: field)
        out.append(contentsOf: payload)
        return out
    }
}

/// A frame's message type. Only Request and Response are used by unary calls; others are
/// accepted and ignored.
public struct MessageType: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let request = MessageType(rawValue: 1)
    public static let response = MessageType(rawValue: 2)
    public static let data = MessageType(rawValue: 3)
}

/// A decoded frame header.
public struct FrameHeader: Hashable, Sendable {
    public let length: UInt32
    public let streamID: UInt32
    public let type: MessageType
    public let flags: UInt8

    public init(length: UInt32, streamID: UInt32, type: MessageType, flags: UInt8) {
        self.length = length
        self.streamID = streamID
        self.type = type
        self.flags = flags
    }
}
