/// A unary ttRPC method: its service and method names and its request and response types.
///
/// Generated once per RPC in `Protos/` (e.g. `TaskV2.TaskService.state`) so that names are
/// never spelled twice.
public struct RPCMethod<Request: ProtoMessage, Response: ProtoMessage>: Sendable {
    /// Full service name, e.g. `containerd.task.v2.Task`.
    public let service: String
    /// Bare method name, e.g. `State`.
    public let method: String

    public init(service: String, method: String) {
        self.service = service
        self.method = method
    }
}
