#if canImport(Glibc)
import Glibc
#endif

extension GoogleProtobuf.Timestamp {
    /// Go's zero `time.Time` (0001-01-01T00:00:00Z): what containerd sends for "not exited".
    public static let goZero = GoogleProtobuf.Timestamp(seconds: -62_135_596_800, nanos: 0)

    /// The current wall-clock time (CLOCK_REALTIME).
    public static func now() -> GoogleProtobuf.Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return GoogleProtobuf.Timestamp(seconds: Int64(ts.tv_sec), nanos: Int32(ts.tv_nsec))
    }

    /// Whether this is Go's zero time.
    public var isGoZero: Bool { self == .goZero }
}

extension GoogleProtobuf.AnyMessage {
    /// Packs `message` with a **bare** type URL (its full proto name), as containerd's typeurl
    /// registry expects; a `type.googleapis.com/` prefix would not be found there.
    public init<M: ProtoMessage>(packing message: M) {
        self.init(typeURL: M.protoName, value: message.serializedBytes())
    }

    /// Decodes the packed message, accepting the bare name and the `…/name` URL forms.
    public func unpack<M: ProtoMessage>(_: M.Type = M.self) throws(ProtoError) -> M {
        let name = typeURL.split(separator: "/").last.map(String.init) ?? typeURL
        guard name == M.protoName else {
            throw ProtoError.typeMismatch(expected: M.protoName, actual: typeURL)
        }
        return try M(serializedBytes: value)
    }
}
