import Protocols
import SystemKit

/// What a handler knows about the call it serves.
public struct CallContext: Sendable {
    public let service: String
    public let method: String
    public let streamID: UInt32
    /// Request metadata in wire order; keys may repeat.
    public let metadata: [TTRPCWire.KeyValue]
    /// When the caller stops waiting (from `timeout_nano`); nil when it set none. The server
    /// answers DeadlineExceeded at this instant and cancels the handler's task.
    public let deadline: ContinuousClock.Instant?
    /// The peer's credentials, when the transport is a unix socket.
    public let peer: PeerCredentials?

    /// Every value sent for `key` (keys compare case-insensitively, as Go lowercases them).
    public func metadata(_ key: String) -> [String] {
        let k = key.lowercased()
        return metadata.filter { $0.key.lowercased() == k }.map(\.value)
    }
}
