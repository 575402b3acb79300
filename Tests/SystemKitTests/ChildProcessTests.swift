#if canImport(Glibc)
import Glibc
#endif
import SystemKit
import Testing

@Suite struct ChildProcessTests {
    @Test(arguments: [0, 1, 42])
    func exitCodes(_ code: Int32) async throws {
        let child = try await ChildProcess.spawn("/bin/sh", ["-c", "exit \(code)"])
        #expect(await child.wait() == .exited(code))
    }

    @Test func signalDeathIs128PlusSignal() async throws {
        let child = try await ChildProcess.spawn("/bin/sleep", ["30"])
        child.signal(SIGKILL)
        let status = await child.wait()
        #expect(status == .signaled(SIGKILL) && status.code == 137)
        let term = try await ChildProcess.spawn("/bin/sleep", ["30"])
        term.signal(SIGTERM)
        #expect(await term.wait().code == 143)
    }

    @Test func missingBinaryFailsAtExecWithENOENT() async throws {
        do {
            _ = try await ChildProcess.spawn("/nonexistent/binary")
            Issue.record("spawned a missing binary")
        } catch {
            #expect(error.stage == "exec" && error.errno == Errno(ENOENT))
            #expect(error.description.contains("/nonexistent/binary"))
        }
    }

    @Test func badWorkingDirectoryNamesTheStage() async throws {
        var options = ChildProcess.Options()
        options.workingDirectory = "/nonexistent-dir"
        await #expect(throws: SpawnError.self) { _ = try await ChildProcess.spawn("/bin/true", options: options) }
        do { _ = try await ChildProcess.spawn("/bin/true", options: options) } catch { #expect(error.stage == "chdir") }
    }

    @Test func fdsAreMappedAndNothingElseLeaks() async throws {
        let pipe = try FileDescriptor.pipe()
        let r = pipe.first, w = pipe.second
        var options = ChildProcess.Options()
        options.fds = [-1, w.rawValue, -1]
        // The child lists its fds: only 0, 1, 2 (and ls's own directory fd) may exist.
        let child = try await ChildProcess.spawn("/bin/sh", ["-c", "ls /proc/self/fd | tr '\\n' ' '"], options: options)
        w.close()
        #expect(await child.wait() == .exited(0))
        var buf = [UInt8](repeating: 0, count: 256)
        let n = read(r.rawValue, &buf, buf.count)
        let listed = String(decoding: buf[0..<max(n, 0)], as: UTF8.self).split(separator: " ").compactMap { Int($0) }
        #expect(listed.filter { $0 > 3 }.isEmpty, "leaked fds: \(listed)")
        _ = r
    }

    /// PDEATHSIG follows the spawning thread; Swift's pool threads exit after a few idle
    /// seconds. A child spawned with killWithParent must outlive that.
    @Test func killWithParentChildSurvivesIdlePoolThreads() async throws {
        var options = ChildProcess.Options()
        options.killWithParent = true
        let child = try await ChildProcess.spawn("/bin/sleep", ["30"], options: options)
        try await Task.sleep(for: .seconds(7))
        #expect(child.exitStatus == nil, "the child died with an idle thread: \(String(describing: child.exitStatus))")
        child.signal(SIGKILL)
        #expect(await child.wait() == .signaled(SIGKILL))
    }

    @Test func manyWaitersGetTheSameStatus() async throws {
        let child = try await ChildProcess.spawn("/bin/sh", ["-c", "sleep 0.05; exit 7"])
        let statuses = await withTaskGroup(of: SystemKit.ExitStatus.self) { group in
            for _ in 0..<10 { group.addTask { await child.wait() } }
            var all: [SystemKit.ExitStatus] = []
            for await s in group { all.append(s) }
            return all
        }
        #expect(statuses.count == 10 && statuses.allSatisfy { $0 == .exited(7) })
        #expect(child.exitStatus == .exited(7))
    }
}
