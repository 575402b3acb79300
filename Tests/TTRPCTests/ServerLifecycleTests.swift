#if canImport(Glibc)
import Glibc
#endif
import Protocols
import SystemKit
import TTRPC
import TestSupport
import Testing

@Suite struct ServerLifecycleTests {
    @Test func callsOnOneConnectionRunConcurrently() async throws {
        // containerd keeps Wait outstanding while State/Kill arrive on the same connection.
        let fx = try EchoServerFixture()
        let client = try await fx.client()
        let slow = Task { try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: [1], delayMs: 500)) }
        let started = ContinuousClock.now
        for _ in 0..<10 {
            _ = try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: [2]))
        }
        #expect(ContinuousClock.now - started < .milliseconds(400))
        #expect(try await slow.value.payload == [1])
        client.close()
        await fx.stop()
    }

    @Test func gracefulShutdownFinishesInFlightCallsAndRefusesNewConnections() async throws {
        let fx = try EchoServerFixture()
        let client = try await fx.client()
        let inFlight = Task { try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: [9], delayMs: 300)) }
        try await Task.sleep(for: .milliseconds(50))
        let started = ContinuousClock.now
        await fx.server.shutdown(gracePeriod: .seconds(5))
        let took = ContinuousClock.now - started
        #expect(try await inFlight.value.payload == [9])
        #expect(took >= .milliseconds(200) && took < .seconds(3))
        #expect(fx.server.connectionCount == 0)
        #expect(throws: Errno.self) { _ = try UnixSocket.connect(path: fx.socket) }
        // The client sees the connection go once the server closed it.
        for _ in 0..<100 where !client.isClosed { try await Task.sleep(for: .milliseconds(10)) }
        #expect(client.isClosed)
        fx.dir.remove()
    }

    @Test func shutdownGracePeriodBoundsAStuckHandler() async throws {
        let fx = try EchoServerFixture()
        let client = try await fx.client()
        let stuck = Task { try await client.call(EchoV1.EchoService.echo, EchoV1.EchoRequest(payload: [9], delayMs: 30_000)) }
        try await Task.sleep(for: .milliseconds(50))
        let started = ContinuousClock.now
        await fx.server.shutdown(gracePeriod: .milliseconds(200))
        #expect(ContinuousClock.now - started < .seconds(2))
        await #expect(throws: TTRPCError.closed) { _ = try await stuck.value }
        fx.dir.remove()
    }

    /// Runs `ttrpc-peer call` as uid/gid 65534 (nobody) against `fx`.
    func callAsNobody(_ fx: EchoServerFixture) async throws -> SystemKit.ExitStatus {
        chmod(fx.dir.path, 0o755)
        chmod(fx.socket, 0o777)
        let peer = repositoryRoot + "/.build/debug/ttrpc-peer"
        #expect(access(peer, X_OK) == 0, "\(peer) missing: build the package first (make test does)")
        let child = try await ChildProcess.spawn("/usr/bin/setpriv",
                                           ["--reuid=65534", "--regid=65534", "--clear-groups", peer, "call", "--socket", fx.socket])
        return await child.wait()
    }

    @Test func peerCredentialCheckRejectsAnotherUser() async throws {
        // Control: without the check, nobody is served (so a failure below is the check's).
        let open = try EchoServerFixture()
        #expect(try await callAsNobody(open) == .exited(0))
        await open.stop()

        var options = TTRPCServer.Options()
        options.requireSameUser = true
        let fx = try EchoServerFixture(options: options)
        try await expectServes(fx)
        #expect(try await callAsNobody(fx) == .exited(2), "a foreign uid got an answer")
        try await expectServes(fx)
        await fx.stop()
    }
}
