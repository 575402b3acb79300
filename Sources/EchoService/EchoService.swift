import Protocols
import TTRPC

/// The `kata.echo.v1.Echo` service: the ttRPC counterpart the interoperability tests, the demo
/// and the benchmark use on both sides (the Go peer implements the same semantics).
public enum EchoService {
    /// Registers `Echo` on `server`.
    ///
    /// The handler echoes `payload` (or returns `response_size` patterned bytes), lists the
    /// metadata it received, reports the time left until its deadline, sleeps `delay_ms` first
    /// (cancellable), and fails with `fail_code`/`fail_message` when a code is given.
    public static func register(on server: TTRPCServer) {
        server.register(EchoV1.EchoService.echo) { request, context in
            let started = ContinuousClock.now
            if request.delayMs > 0 {
                try await Task.sleep(for: .milliseconds(Int(request.delayMs)))
            }
            if request.failCode != 0 {
                throw TTRPCError(StatusCode(rawValue: request.failCode), request.failMessage)
            }
            var response = EchoV1.EchoResponse()
            response.payload = request.responseSize > 0 ? pattern(Int(request.responseSize)) : request.payload
            response.metadata = context.metadata.map { "\($0.key)=\($0.value)" }
            if let deadline = context.deadline {
                let (s, atto) = (deadline - started).components
                response.deadlineNano = s * 1_000_000_000 + atto / 1_000_000_000
            }
            return response
        }
    }

    /// Deterministic filler: byte i is i % 251.
    public static func pattern(_ count: Int) -> [UInt8] {
        (0..<count).map { UInt8($0 % 251) }
    }
}
