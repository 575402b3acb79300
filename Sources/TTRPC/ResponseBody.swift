/// A unary response payload as a handler hands it to the server: encoded bytes, optionally
/// followed by bytes that move straight from a pipe into the connection with splice(2), never
/// entering this process. The spliced bytes are the tail of the payload (for a protobuf
/// `bytes` field: `prefix` ends with the field's tag and length).
///
/// For streaming container output: under TCG every copy through user space costs more than
/// the channel itself. Value type; the splice's `completion` runs exactly once, on any thread.
public struct ResponseBody: Sendable {
    public var prefix: [UInt8]
    public var splice: Splice?

    /// `count` bytes to take from the pipe `fd`, which must already hold at least that many
    /// and have no other reader until `completion` ran (true: all moved; false: the call or
    /// its connection ended first, and some or all of the bytes may still be in the pipe).
    public struct Splice: Sendable {
        public let fd: CInt
        public let count: Int
        public let completion: @Sendable (Bool) -> Void

        public init(fd: CInt, count: Int, completion: @escaping @Sendable (Bool) -> Void) {
            self.fd = fd
            self.count = count
            self.completion = completion
        }
    }

    public init(bytes: [UInt8]) {
        prefix = bytes
        splice = nil
    }

    public init(prefix: [UInt8], splice: Splice) {
        self.prefix = prefix
        self.splice = splice
    }

    var count: Int { prefix.count + (splice?.count ?? 0) }

    /// Tells the splice's owner it will not happen.
    func abandon() { splice?.completion(false) }
}

/// Protobuf varint encoding (for length prefixes built by hand).
public func appendVarint(_ value: Int, to out: inout [UInt8]) {
    var n = UInt64(value)
    while n >= 0x80 {
        out.append(UInt8(truncatingIfNeeded: n) | 0x80)
        n >>= 7
    }
    out.append(UInt8(n))
}
