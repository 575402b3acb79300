/// A failure to decode protobuf bytes.
public enum ProtoError: Error, Equatable, CustomStringConvertible {
    /// The bytes are not a valid encoding of the named message.
    case malformed(String)
    /// An `Any` holds another message type than the one asked for.
    case typeMismatch(expected: String, actual: String)

    public var description: String {
        switch self {
        case .malformed(let name): return "malformed \(name)"
        case .typeMismatch(let expected, let actual): return "Any holds \(actual), not \(expected)"
        }
    }
}
