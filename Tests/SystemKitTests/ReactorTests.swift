#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import SystemKit
import Testing

@Suite struct ReactorTests {
    @Test func timersFireInDeadlineOrderAndCancelledOnesNever() async throws {
        let order = Mutex<[Int]>([])
        let now = ContinuousClock.now
        let reactor = Reactor.shared
        for (i, ms) in [(3, 60), (1, 20), (2, 40)] {
            reactor.schedule(at: now + .milliseconds(ms)) { order.withLock { $0.append(i) } }
        }
        let cancelled = reactor.schedule(at: now + .milliseconds(30)) { order.withLock { $0.append(99) } }
        #expect(reactor.cancel(cancelled))
        try await Task.sleep(for: .milliseconds(150))
        #expect(order.withLock { $0 } == [1, 2, 3])
    }

    @Test func timerNeverFiresEarly() async throws {
        let fired = Mutex<ContinuousClock.Instant?>(nil)
        let start = ContinuousClock.now
        Reactor.shared.schedule(after: .milliseconds(25)) { fired.withLock { $0 = .now } }
        try await Task.sleep(for: .milliseconds(100))
        let at = try #require(fired.withLock { $0 })
        #expect(at - start >= .milliseconds(25))
    }

    @Test func waitForReadableResumesWhenDataArrives() async throws {
        let p = try UnixSocket.pair()
        let a = p.first, b = p.second
        let fd = a.rawValue
        async let ready: Void = Reactor.shared.wait(for: .readable, on: fd)
        try await Task.sleep(for: .milliseconds(20))
        try b.writeAll([1])
        try await ready
        var byte: UInt8 = 0
        #expect(read(fd, &byte, 1) == 1 && byte == 1)
        _ = a
    }

    @Test func waitIsCancellable() async throws {
        let p = try UnixSocket.pair()
        let a = p.first
        let fd = a.rawValue
        let task = Task { try await Reactor.shared.wait(for: .readable, on: fd) }
        try await Task.sleep(for: .milliseconds(20))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        _ = a
    }

    @Test func tasksPreferringTheReactorRunOnItsThread() async throws {
        let onReactor = await Task(executorPreference: Reactor.shared) { Reactor.shared.isCurrentThread }.value
        #expect(onReactor)
        #expect(!Reactor.shared.isCurrentThread)
    }
}
