/// Incremental frame parser: bytes in, frames out, with bounded memory.
///
/// A frame whose declared length exceeds `maxDataLength` is reported once as `.oversized` and
/// its data is then skipped as it arrives (never buffered), so a peer that announces
/// 0xFFFFFFFF bytes costs nothing but the time to discard what it actually sends. Pure value
/// type: no I/O, no locking; the fuzz target drives it directly.
public struct FrameDecoder: Sendable {
    /// One unit of decoder output.
    public enum Output: Hashable, Sendable {
        case frame(FrameHeader, [UInt8])
        /// The frame's data is larger than allowed; it is being discarded.
        case oversized(FrameHeader)
    }

    public let maxDataLength: Int
    private var buffer: [UInt8] = []
    private var head = 0
    private var discarding = 0

    public init(maxDataLength: Int = Frame.maxDataLength) {
        self.maxDataLength = maxDataLength
    }

    /// Bytes held but not yet returned as frames.
    public var bufferedBytes: Int { buffer.count - head }

    /// Bytes of an oversized frame still to be skipped.
    public var pendingDiscard: Int { discarding }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        var start = 0
        if discarding > 0 && head == buffer.count {
            start = min(discarding, bytes.count)
            discarding -= start
        }
        guard start < bytes.count else { return }
        compact()
        buffer.append(contentsOf: bytes[start...])
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// The next complete output, or nil when more bytes are needed.
    public mutating func next() -> Output? {
        if discarding > 0 {
            let skip = min(discarding, buffer.count - head)
            head += skip
            discarding -= skip
            if discarding > 0 { return nil }
        }
        guard buffer.count - head >= Frame.headerLength else {
            releaseIfEmpty()
            return nil
        }
        let header = buffer.withUnsafeBufferPointer { b -> FrameHeader in
            let p = b.baseAddress! + head
            func u32(_ o: Int) -> UInt32 {
                UInt32(p[o]) << 24 | UInt32(p[o + 1]) << 16 | UInt32(p[o + 2]) << 8 | UInt32(p[o + 3])
            }
            return FrameHeader(length: u32(0), streamID: u32(4), type: MessageType(rawValue: p[8]), flags: p[9])
        }
        let length = Int(header.length)
        if length > maxDataLength {
            head += Frame.headerLength
            discarding = length
            let skip = min(discarding, buffer.count - head)
            head += skip
            discarding -= skip
            releaseIfEmpty()
            return .oversized(header)
        }
        guard buffer.count - head >= Frame.headerLength + length else { return nil }
        let start = head + Frame.headerLength
        let data = Array(buffer[start..<(start + length)])
        head = start + length
        releaseIfEmpty()
        return .frame(header, data)
    }

    private mutating func compact() {
        if head > 0 && (head == buffer.count || head >= 64 * 1024) {
            buffer.removeFirst(head)
            head = 0
        }
    }

    /// After a large frame the buffer's capacity would otherwise stay at 4 MiB per connection.
    private mutating func releaseIfEmpty() {
        if head == buffer.count {
            if buffer.capacity > 256 * 1024 { buffer = [] } else { buffer.removeAll(keepingCapacity: true) }
            head = 0
        }
    }
}
