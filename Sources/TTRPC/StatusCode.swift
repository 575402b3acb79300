import Protocols
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

/// A gRPC status code as carried in `google.rpc.Status.code`.
public struct StatusCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let ok = StatusCode(rawValue: 0)
    public static let canceled = StatusCode(rawValue: 1)
    public static let unknown = StatusCode(rawValue: 2)
    public static let invalidArgument = StatusCode(rawValue: 3)
    public static let deadlineExceeded = StatusCode(rawValue: 4)
    public static let notFound = StatusCode(rawValue: 5)
    public static let alreadyExists = StatusCode(rawValue: 6)
    public static let permissionDenied = StatusCode(rawValue: 7)
    public static let resourceExhausted = StatusCode(rawValue: 8)
    public static let failedPrecondition = StatusCode(rawValue: 9)
    public static let aborted = StatusCode(rawValue: 10)
    public static let outOfRange = StatusCode(rawValue: 11)
    public static let unimplemented = StatusCode(rawValue: 12)
    public static let `internal` = StatusCode(rawValue: 13)
    public static let unavailable = StatusCode(rawValue: 14)
    public static let dataLoss = StatusCode(rawValue: 15)
    public static let unauthenticated = StatusCode(rawValue: 16)

    private static let names = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
                                "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
                                "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
                                "Unauthenticated"]

    public var description: String {
        rawValue >= 0 && Int(rawValue) < Self.names.count ? Self.names[Int(rawValue)] : "Code(\(rawValue))"
    }
}

/// An error with a gRPC status: what handlers throw to choose the code, and what clients get
/// back for a non-OK response.
public struct TTRPCError: Error, Hashable, Sendable, CustomStringConvertible {
    public let code: StatusCode
    public let message: String

    public init(_ code: StatusCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }

    /// The connection is gone; every pending and later call fails with this.
    public static let closed = TTRPCError(.unavailable, "ttrpc: closed")

    /// The status a server sends for `error` thrown by a handler.
    ///
    /// TTRPCError keeps its code; cancellation maps to Canceled; an `Errno` maps like Go's
    /// ttRPC maps os errors (ENOENT → NotFound, EEXIST → AlreadyExists, EACCES/EPERM →
    /// PermissionDenied, EINVAL → InvalidArgument); anything else is Unknown.
    public init(mapping error: any Error) {
        switch error {
        case let e as TTRPCError:
            self = e
        case is CancellationError:
            self = TTRPCError(.canceled, "context canceled")
        case let e as Errno:
            let code: StatusCode
            switch e.rawValue {
            case ENOENT: code = .notFound
            case EEXIST: code = .alreadyExists
            case EACCES, EPERM: code = .permissionDenied
            case EINVAL: code = .invalidArgument
            case ETIMEDOUT: code = .deadlineExceeded
            default: code = .unknown
            }
            self = TTRPCError(code, e.description)
        case let e as ProtoError:
            self = TTRPCError(.invalidArgument, "error unmarshalling payload: \(e)")
        default:
            self = TTRPCError(.unknown, String(describing: error))
        }
    }

    var status: GoogleRPC.Status { GoogleRPC.Status(code: code.rawValue, message: message) }
}
