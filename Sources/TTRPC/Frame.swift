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
        appendHeader(to: &out, length: UInt32(truncatingIfNeeded: data.count), streamID: streamID, type: type, flags: flags)
        out.append(contentsOf: data)
        return out
    }

    private static func appendHeader(to out: inout [UInt8], length n: UInt32, streamID: UInt32, type: MessageType, flags: UInt8) {
        out.append(UInt8(n >> 24)); out.append(UInt8(truncatingIfNeeded: n >> 16))
        out.append(UInt8(truncatingIfNeeded: n >> 8)); out.append(UInt8(truncatingIfNeeded: n))
        out.append(UInt8(streamID >> 24)); out.append(UInt8(truncatingIfNeeded: streamID >> 16))
        out.append(UInt8(truncatingIfNeeded: streamID >> 8)); out.append(UInt8(truncatingIfNeeded: streamID))
        out.append(type.rawValue)
        out.append(flags)
    }

    /// The head of a successful unary Response frame (`Response{payload}`, no status) whose
    /// payload is `payloadLength` bytes: frame header, field tag and length. Followed by the
    /// payload, these are the same bytes as `encode(data: Response(payload:).serializedBytes())`
    /// without the two intermediate copies protobuf-c packing makes, which matters for stream
    /// data (megabytes a second under TCG). Nil if the frame would exceed `maxDataLength`.
    /// `reserving` bytes of capacity are added for what the caller appends.
    public static func successResponseHead(streamID: UInt32, payloadLength: Int, reserving extra: Int = 0) -> [UInt8]? {
        var field: [UInt8] = []
        if payloadLength > 0 {
            field.append(0x12)  // field 2, length-delimited
            appendVarint(payloadLength, to: &field)
        }
        let length = field.count + payloadLength
        guard length <= maxDataLength else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(headerLength + field.count + extra)
        appendHeader(to: &out, length: UInt32(length), streamID: streamID, type: .response, flags: 0)
        out.append(contentsOf: field)
        return out
    }

    /// A whole successful Response frame carrying `payload` (see `successResponseHead`).
    public static func encodeSuccessResponse(streamID: UInt32, payload: [UInt8]) -> [UInt8]? {
        guard var out = successResponseHead(streamID: streamID, payloadLength: payload.count, reserving: payload.count) else { return nil }
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
