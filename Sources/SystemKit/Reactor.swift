#if canImport(Glibc)
import Glibc
#endif
import CLinux
import Synchronization

/// One epoll thread that watches descriptors and runs timers for the whole process.
///
/// Handlers run **on the reactor thread**: they must be short and never block (do non-blocking
/// I/O, resume a continuation, start a Task). Registration, modification and timers may be used
/// from any thread. After `deregister` returns, the handler is not called again for events that
/// the loop has not yet dispatched; a caller that closes the fd right after deregistering is safe.
///
/// Why a thread and not Tasks: a blocking `epoll_wait` on Swift's cooperative pool would take
/// one of the two cores away from every other task (see reference/swift-on-linux.md).
public final class Reactor: TaskExecutor, Sendable {
    /// The process-wide reactor, started on first use.
    public static let shared = Reactor()

    /// Which readiness a registration asks for.
    public struct Interest: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Interest(rawValue: UInt32(CL_EPOLLIN | CL_EPOLLRDHUP))
        public static let writable = Interest(rawValue: UInt32(CL_EPOLLOUT))
    }

    /// What became ready.
    public struct Events: Sendable {
        public let rawValue: UInt32
        private static let readMask = UInt32(CL_EPOLLIN | CL_EPOLLHUP | CL_EPOLLRDHUP | CL_EPOLLERR)
        private static let writeMask = UInt32(CL_EPOLLOUT | CL_EPOLLERR | CL_EPOLLHUP)
        private static let hangupMask = UInt32(CL_EPOLLHUP | CL_EPOLLERR)
        public var isReadable: Bool { rawValue & Self.readMask != 0 }
        public var isWritable: Bool { rawValue & Self.writeMask != 0 }
        public var isHangup: Bool { rawValue & Self.hangupMask != 0 }
    }

    /// A registered descriptor.
    public struct Registration: Sendable, Hashable {
        let token: UInt64
        let fd: CInt
    }

    /// A scheduled timer.
    public struct TimerID: Sendable, Hashable {
        let id: UInt64
    }

    public typealias Handler = @Sendable (Events) -> Void

    private struct Timer {
        let deadline: ContinuousClock.Instant
        let id: UInt64
    }

    private struct State {
        var handlers: [UInt64: Handler] = [:]
        var timerActions: [UInt64: @Sendable () -> Void] = [:]
        var heap: [Timer] = []        // min-heap on deadline; cancelled ids are skipped lazily
        var nextToken: UInt64 = 1
        var sleepingUntil: ContinuousClock.Instant? = nil   // nil: blocked without timeout
        var asleep = false
        var jobs: [UnownedJob] = []
    }

    private let epfd: CInt
    private let wakeFD: CInt
    private let state = Mutex(State())
    private let thread = Mutex<pthread_t?>(nil)
    private static let wakeToken: UInt64 = 0

    private init() {
        let ep = cl_epoll_create()
        let ev = cl_eventfd()
        precondition(ep >= 0 && ev >= 0, "reactor: cannot create epoll/eventfd (\(-ep), \(-ev))")
        epfd = ep
        wakeFD = ev
        precondition(cl_epoll_ctl(ep, CInt(CL_EPOLL_CTL_ADD), ev, UInt32(CL_EPOLLIN), Self.wakeToken) == 0)
        startThread()
    }

    // MARK: - Descriptors

    /// Starts watching `fd` (which stays owned by the caller) for `interest`.
    public func register(_ fd: CInt, interest: Interest, handler: @escaping Handler) throws(Errno) -> Registration {
        let token = state.withLock { s in
            let t = s.nextToken
            s.nextToken += 1
            s.handlers[t] = handler
            return t
        }
        let r = cl_epoll_ctl(epfd, CInt(CL_EPOLL_CTL_ADD), fd, interest.rawValue, token)
        if r < 0 {
            _ = state.withLock { $0.handlers.removeValue(forKey: token) }
            throw Errno(-r, "epoll_ctl ADD fd \(fd)")
        }
        return Registration(token: token, fd: fd)
    }

    /// Changes what a registration waits for.
    public func modify(_ registration: Registration, interest: Interest) throws(Errno) {
        _ = try check(cl_epoll_ctl(epfd, CInt(CL_EPOLL_CTL_MOD), registration.fd, interest.rawValue, registration.token),
                      "epoll_ctl MOD fd \(registration.fd)")
    }

    /// Stops watching; call it before closing the fd.
    public func deregister(_ registration: Registration) {
        _ = cl_epoll_ctl(epfd, CInt(CL_EPOLL_CTL_DEL), registration.fd, 0, registration.token)
        _ = state.withLock { $0.handlers.removeValue(forKey: registration.token) }
    }

    // MARK: - Timers

    /// Runs `action` on the reactor thread at (or soon after) `deadline`.
    @discardableResult
    public func schedule(at deadline: ContinuousClock.Instant, _ action: @escaping @Sendable () -> Void) -> TimerID {
        let (id, wake) = state.withLock { s -> (UInt64, Bool) in
            let id = s.nextToken
            s.nextToken += 1
            s.timerActions[id] = action
            Self.push(&s.heap, Timer(deadline: deadline, id: id))
            // Only wake the loop when it sleeps past the new deadline.
            let wake = s.asleep && (s.sleepingUntil.map { deadline < $0 } ?? true)
            if wake { s.sleepingUntil = deadline }
            return (id, wake)
        }
        if wake { _ = cl_eventfd_signal(wakeFD) }
        return TimerID(id: id)
    }

    /// Runs `action` after `delay`.
    @discardableResult
    public func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> TimerID {
        schedule(at: .now + delay, action)
    }

    /// Cancels a timer; returns false when it already ran (or is running).
    @discardableResult
    public func cancel(_ timer: TimerID) -> Bool {
        state.withLock { $0.timerActions.removeValue(forKey: timer.id) != nil }
    }

    // MARK: - Executor

    /// Runs `job` on the reactor thread, after the current batch of events. Tasks created with
    /// `Task(executorPreference: reactor)` run here: a request decoded on the reactor is then
    /// handled, and its response written, without waking another thread. Such tasks must not
    /// block or compute for long; they share the thread with every descriptor.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        let wake = state.withLock { s -> Bool in
            s.jobs.append(unowned)
            guard s.asleep else { return false }
            s.asleep = false
            return true
        }
        if wake { _ = cl_eventfd_signal(wakeFD) }
    }

    /// Whether the caller runs on the reactor thread.
    public var isCurrentThread: Bool {
        guard let t = thread.withLock({ $0 }) else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    private func runJobs() {
        // Run what is queued now; jobs enqueued meanwhile wait for the next turn so events and
        // timers are never starved.
        let batch = state.withLock { s -> [UnownedJob] in
            let b = s.jobs
            s.jobs.removeAll(keepingCapacity: true)
            return b
        }
        let executor = asUnownedTaskExecutor()
        for job in batch { job.runSynchronously(on: executor) }
    }

    // MARK: - Loop

    private final class ThreadStart {
        let reactor: Reactor
        init(_ reactor: Reactor) { self.reactor = reactor }
    }

    private func startThread() {
        var thread = pthread_t()
        let arg = Unmanaged.passRetained(ThreadStart(self)).toOpaque()
        let r = pthread_create(&thread, nil, { arg in
            let start = Unmanaged<ThreadStart>.fromOpaque(arg!).takeRetainedValue()
            start.reactor.run()
            return nil
        }, arg)
        precondition(r == 0, "reactor: pthread_create failed (\(r))")
        pthread_detach(thread)
    }

    private func run() {
        thread.withLock { $0 = pthread_self() }
        var events = [cl_event](repeating: cl_event(), count: 128)
        while true {
            runJobs()
            let timeout = prepareToSleep()
            let n = events.withUnsafeMutableBufferPointer { cl_epoll_wait(epfd, $0.baseAddress, CInt($0.count), timeout) }
            state.withLock { $0.asleep = false }
            if n < 0 && n != -EINTR { preconditionFailure("reactor: epoll_wait failed: errno \(-n)") }
            if n > 0 {
                for i in 0..<Int(n) {
                    let token = events[i].token
                    if token == Self.wakeToken {
                        _ = cl_eventfd_drain(wakeFD)
                        continue
                    }
                    let handler = state.withLock { $0.handlers[token] }
                    handler?(Events(rawValue: events[i].events))
                }
            }
            runDueTimers()
        }
    }

    /// Computes the epoll timeout from the earliest live timer and marks the loop asleep.
    private func prepareToSleep() -> CInt {
        state.withLock { s in
            while let top = s.heap.first, s.timerActions[top.id] == nil { _ = Self.pop(&s.heap) }
            if !s.jobs.isEmpty { return 0 }
            s.asleep = true
            guard let next = s.heap.first else {
                s.sleepingUntil = nil
                return -1
            }
            s.sleepingUntil = next.deadline
            let remaining = next.deadline - .now
            if remaining <= .zero { return 0 }
            let (sec, atto) = remaining.components
            // Round up so a timer never fires early.
            let ms = sec * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
            return CInt(clamping: ms)
        }
    }

    private func runDueTimers() {
        let now = ContinuousClock.now
        while true {
            let action: (@Sendable () -> Void)? = state.withLock { s in
                while let top = s.heap.first {
                    if s.timerActions[top.id] == nil { _ = Self.pop(&s.heap); continue }
                    guard top.deadline <= now else { return nil }
                    _ = Self.pop(&s.heap)
                    return s.timerActions.removeValue(forKey: top.id)
                }
                return nil
            }
            guard let action else { return }
            action()
        }
    }

    // MARK: - Heap

    private static func push(_ heap: inout [Timer], _ t: Timer) {
        heap.append(t)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].deadline < heap[parent].deadline else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private static func pop(_ heap: inout [Timer]) -> Timer? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
            if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return top
    }
}

extension Reactor {
    /// Suspends until `fd` is ready for `interest` (one shot), without blocking a thread.
    /// Throws `CancellationError` if the task is cancelled first.
    public func wait(for interest: Interest, on fd: CInt) async throws {
        let waiter = OneShotWaiter()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
                guard waiter.install(cont) else { return }
                do {
                    let reg = try register(fd, interest: interest) { [self] _ in
                        waiter.finish(nil) { deregister($0) }
                    }
                    waiter.attach(reg) { deregister($0) }
                } catch {
                    waiter.finish(error) { _ in }
                }
            }
        } onCancel: { [self] in
            waiter.finish(CancellationError()) { deregister($0) }
        }
    }
}

/// State of one `Reactor.wait`: whichever of readiness, failure or cancellation comes first
/// resumes the continuation and removes the registration; the others do nothing.
private final class OneShotWaiter: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Void, any Error>?
        var registration: Reactor.Registration?
        var done = false
        var pendingError: (any Error)?
    }
    private let state = Mutex(State())

    /// False when cancellation already happened (the continuation was resumed here).
    func install(_ cont: CheckedContinuation<Void, any Error>) -> Bool {
        let early: (any Error)? = state.withLock { s in
            if s.done { return s.pendingError ?? CancellationError() }
            s.continuation = cont
            return nil
        }
        if let early {
            cont.resume(throwing: early)
            return false
        }
        return true
    }

    func attach(_ reg: Reactor.Registration, deregister: (Reactor.Registration) -> Void) {
        let late = state.withLock { s -> Bool in
            if s.done { return true }
            s.registration = reg
            return false
        }
        if late { deregister(reg) }
    }

    func finish(_ error: (any Error)?, deregister: (Reactor.Registration) -> Void) {
        let (cont, reg) = state.withLock { s -> (CheckedContinuation<Void, any Error>?, Reactor.Registration?) in
            if s.done { return (nil, nil) }
            s.done = true
            s.pendingError = error
            let c = s.continuation
            s.continuation = nil
            let r = s.registration
            s.registration = nil
            return (c, r)
        }
        if let reg { deregister(reg) }
        guard let cont else { return }
        if let error { cont.resume(throwing: error) } else { cont.resume() }
    }
}
