#if canImport(Glibc)
import Glibc
#endif
import AgentClient
import OCI
import Protocols
import TTRPC
import Testing

/// The process API beyond one process: execs, signals, terminals, security settings, cgroups
/// and leftovers. Called from `ContainerTests.containersRunInTheGuest` to share its VM.
extension ContainerTests {
    static func process(_ args: [String], terminal: Bool = false, env: [String] = ["PATH=/bin"]) -> [UInt8] {
        Process(args: args, env: env, terminal: terminal).encoded()
    }

    /// Reads stdout until it contains `marker` (or the stream ends); returns all of it.
    static func readUntil(_ agent: AgentClient, _ id: String, execID: String = "", _ marker: String) async throws -> String {
        var out: [UInt8] = []
        while !String(decoding: out, as: UTF8.self).contains(marker) {
            let chunk = try await agent.readStdout(id, execID: execID)
            if chunk.isEmpty { break }
            out += chunk
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func execs(_ agent: AgentClient) async throws {
        try await agent.createContainer("host", spec: spec(["sleep", "60"], hostname: "box"))
        try await agent.startContainer("host")

        // An exec joins the container's namespaces: its hostname, its PID 1, its root.
        try await agent.execProcess("host", execID: "look", process: process(["sh", "-c", "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; ls /bin/busybox; exit 5"]))
        async let lookErr = agent.readAll("host", execID: "look", stderr: true)
        #expect(String(decoding: try await agent.readAll("host", execID: "look"), as: UTF8.self) == "box\nsleep 60 \n/bin/busybox\n")
        #expect(try await lookErr.isEmpty)
        #expect(try await agent.waitProcess("host", execID: "look") == 5)

        // ListProcesses names the first process and the exec.
        try await agent.execProcess("host", execID: "nap", process: process(["sleep", "100"]))
        let listed = try await agent.listProcesses("host")
        #expect(listed.map(\.args) == [["sleep", "60"], ["sleep", "100"]], "\(listed)")
        #expect(listed.map(\.execID) == ["", "nap"], "\(listed)")

        // SIGTERM to an exec: a death by signal 15 → 143.
        try await agent.signalProcess("host", execID: "nap", signal: SIGTERM)
        #expect(try await agent.waitProcess("host", execID: "nap") == 143)

        // Errors: duplicate exec id, unknown exec, unknown container, bad id, bad process.
        try await agent.execProcess("host", execID: "again", process: process(["true"]))
        await #expect(throws: TTRPCError(.alreadyExists, "process again of container host already exists")) {
            try await agent.execProcess("host", execID: "again", process: process(["true"]))
        }
        #expect(try await agent.waitProcess("host", execID: "again") == 0)
        await #expect(throws: TTRPCError(.notFound, "process ghost of container host not found")) {
            _ = try await agent.waitProcess("host", execID: "ghost")
        }
        await #expect(throws: TTRPCError(.notFound, "container ghost not found")) {
            try await agent.execProcess("ghost", execID: "x", process: process(["true"]))
        }
        await #expect(throws: TTRPCError(.invalidArgument, "invalid exec id \"a/b\"")) {
            try await agent.execProcess("host", execID: "a/b", process: process(["true"]))
        }
        do {
            try await agent.execProcess("host", execID: "noargs", process: Array("{\"cwd\":\"/\",\"user\":{\"uid\":0,\"gid\":0}}".utf8))
            Issue.record("accepted a process without args")
        } catch let e as TTRPCError {
            #expect(e.code == .invalidArgument && e.message.contains("no args"), "\(e)")
        }

        // An exec of a missing binary fails at once and exits 127.
        let started = ContinuousClock.now
        do {
            try await agent.execProcess("host", execID: "missing", process: process(["no-such-binary"]))
            Issue.record("exec of a missing binary succeeded")
        } catch let e as TTRPCError {
            #expect(e.code == .notFound && e.message.contains("no-such-binary"), "\(e)")
        }
        #expect(try await agent.waitProcess("host", execID: "missing") == 127)
        #expect(ContinuousClock.now - started < .seconds(3))

        // Many execs in a row, as a non-root user (the credential calls in the vfork child once
        // hung the agent after a few dozen): all exit 0, nothing is left behind.
        var user = Process(args: ["true"], env: ["PATH=/bin"])
        user.user = Process.User(uid: 1000, gid: 1000, additionalGids: [1000])
        let userTrue = user.encoded()
        for i in 0..<120 {
            try await agent.execProcess("host", execID: "many\(i)", process: userTrue)
            #expect(try await agent.waitProcess("host", execID: "many\(i)", timeout: .seconds(20)) == 0)
        }
        let diagnostics = try await agent.guestDiagnostics()
        #expect(diagnostics.zombies == 0 && diagnostics.pids.count == 1, "\(diagnostics)")

        // Killing the container's first process takes its execs with it.
        try await agent.execProcess("host", execID: "long", process: process(["sleep", "100"]))
        try await agent.signalProcess("host", execID: "host", signal: SIGKILL)
        #expect(try await agent.waitProcess("host") == 137)
        #expect(try await agent.waitProcess("host", execID: "long") == 137)
        await #expect(throws: TTRPCError.self) { try await agent.execProcess("host", execID: "late", process: process(["true"])) }
        try await agent.removeContainer("host")
    }

    static func signals(_ agent: AgentClient) async throws {
        // Without its own PID namespace the first process is an ordinary process: SIGTERM → 143.
        try await agent.createContainer("term", spec: spec(["sleep", "100"]) { s in
            s.linux?.namespaces?.removeAll { $0.type == "pid" }
        })
        try await agent.startContainer("term")
        try await agent.signalProcess("term", execID: "term", signal: SIGTERM)
        #expect(try await agent.waitProcess("term") == 143)
        try await agent.removeContainer("term")

        // Signal to all: SIGTERM reaches the exec (PID 1 of the namespace, with no handler,
        // ignores it, as on any Linux); SIGKILL to all ends everything.
        try await agent.createContainer("all", spec: spec(["sleep", "100"]))
        try await agent.startContainer("all")
        try await agent.execProcess("all", execID: "e", process: process(["sleep", "100"]))
        try await agent.signalProcess("all", signal: SIGTERM)
        #expect(try await agent.waitProcess("all", execID: "e") == 143)
        #expect(try await agent.listProcesses("all").map(\.args) == [["sleep", "100"]])
        try await agent.signalProcess("all", signal: SIGKILL)
        #expect(try await agent.waitProcess("all") == 137)
        await #expect(throws: TTRPCError(.invalidArgument, "signal 99 is not valid")) {
            try await agent.signalProcess("all", signal: 99)
        }
        try await agent.removeContainer("all")
    }

    static func terminal(_ agent: AgentClient) async throws {
        try await agent.createContainer("tty", spec: spec(["sh", "-c", "stty size; read line; stty size; echo got $line; [ -t 0 ] && [ -t 1 ] && echo is-a-tty"]) { s in
            s.process?.terminal = true
            s.process?.consoleSize = Process.Box(height: 24, width: 80)
        })
        try await agent.startContainer("tty")
        // The line discipline turns "\n" into "\r\n", as on any terminal.
        #expect(try await readUntil(agent, "tty", "\r\n") == "24 80\r\n")
        try await agent.ttyWinResize("tty", rows: 50, columns: 132)
        _ = try await agent.writeStdin("tty", Array("hello\n".utf8))
        let rest = String(decoding: try await agent.readAll("tty"), as: UTF8.self)
        // The terminal echoes the input, then the new size shows.
        #expect(rest == "hello\r\n50 132\r\ngot hello\r\nis-a-tty\r\n", "\(rest)")
        #expect(try await agent.waitProcess("tty") == 0)
        #expect(try await agent.readStderr("tty").isEmpty)
        try await agent.removeContainer("tty")

        // A process without a terminal cannot be resized.
        try await agent.createContainer("notty", spec: spec(["true"]))
        await #expect(throws: TTRPCError(.failedPrecondition, "the container's process has no terminal")) {
            try await agent.ttyWinResize("notty", rows: 1, columns: 1)
        }
        try await agent.removeContainer("notty")
    }

    static func security(_ agent: AgentClient) async throws {
        // Capabilities, rlimits, no_new_privs, oom score, umask as the kernel reports them.
        let limits = try await run(agent, "limits", spec(["sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ulimit -n; cat /proc/self/oom_score_adj; umask"]) { s in
            s.process?.capabilities = Process.Capabilities(bounding: ["CAP_KILL"], effective: ["CAP_KILL"],
                                                           inheritable: [], permitted: ["CAP_KILL"], ambient: [])
            s.process?.rlimits = [Process.Rlimit(type: "RLIMIT_NOFILE", hard: 123, soft: 123)]
            s.process?.oomScoreAdj = 500
            s.process?.user.umask = 0o077
        })
        #expect(limits == Result(stdout: "CapEff:\t0000000000000020\nCapBnd:\t0000000000000020\nNoNewPrivs:\t1\n123\n500\n0077\n",
                                 stderr: "", status: 0))

        // A seccomp profile that denies mkdir: EPERM inside the container, for execs too.
        let deny = Seccomp(defaultAction: "SCMP_ACT_ALLOW", architectures: ["SCMP_ARCH_X86_64"],
                           syscalls: [Seccomp.Syscall(names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: UInt32(EPERM))])
        let denied = try await run(agent, "seccomp", spec(["mkdir", "/tmp/x"]) { $0.linux?.seccomp = deny })
        #expect(denied.status == 1 && denied.stderr.contains("Operation not permitted"), "\(denied)")
        #expect(try await run(agent, "noseccomp", spec(["mkdir", "/tmp/x"])) == Result(stdout: "", stderr: "", status: 0))
        try await agent.createContainer("sc", spec: spec(["sleep", "60"]) { $0.linux?.seccomp = deny })
        try await agent.startContainer("sc")
        try await agent.execProcess("sc", execID: "mk", process: process(["mkdir", "/tmp/y"]))
        let execErr = String(decoding: try await agent.readAll("sc", execID: "mk", stderr: true), as: UTF8.self)
        #expect(execErr.contains("Operation not permitted"), "\(execErr)")
        #expect(try await agent.waitProcess("sc", execID: "mk") == 1)
        try await agent.removeContainer("sc")

        // Bad security settings are refused before anything starts.
        for (name, configure, needle) in [
            ("badaction", { (s: inout Spec) in s.linux?.seccomp = Seccomp(defaultAction: "SCMP_ACT_NOPE") }, "SCMP_ACT_NOPE"),
            ("badrlimit", { (s: inout Spec) in s.process?.rlimits = [Process.Rlimit(type: "RLIMIT_NOPE", hard: 1, soft: 1)] }, "RLIMIT_NOPE"),
        ] as [(String, (inout Spec) -> Void, String)] {
            do {
                try await agent.createContainer(name, spec: spec(["true"], configure: configure))
                Issue.record("\(name) accepted")
            } catch let e as TTRPCError {
                #expect(e.code == .invalidArgument && e.message.contains(needle), "\(e)")
            }
        }
    }

    static func cgroups(_ agent: AgentClient) async throws {
        // Pause/resume: the container's CPU time (the counter) stops while frozen.
        try await agent.createContainer("spin", spec: spec(["sh", "-c", "while :; do :; done"]))
        try await agent.startContainer("spin")
        try await Task.sleep(for: .milliseconds(200))
        try await agent.pauseContainer("spin")
        let frozen = try await agent.statsContainer("spin").cpuUsageUsec
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await agent.statsContainer("spin").cpuUsageUsec == frozen)
        await #expect(throws: TTRPCError(.failedPrecondition, "container spin is paused, not running")) {
            try await agent.pauseContainer("spin")
        }
        try await agent.resumeContainer("spin")
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await agent.statsContainer("spin").cpuUsageUsec > frozen)
        // Removing a paused container works too.
        try await agent.pauseContainer("spin")
        try await agent.removeContainer("spin")

        // pids limit: forks beyond it fail; UpdateContainer changes limits live; stats show them.
        let forks = try await run(agent, "pids", spec(["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 1 & done; wait"]) { s in
            s.linux?.resources = Resources(pids: Resources.Pids(limit: 4))
        })
        #expect(forks.stderr.contains("fork"), "\(forks)")
        try await agent.createContainer("upd", spec: spec(["sleep", "60"]) { s in
            s.linux?.resources = Resources(memory: Resources.Memory(limit: 64 << 20), pids: Resources.Pids(limit: 10))
        })
        var stats = try await agent.statsContainer("upd")
        #expect(stats.memoryLimit == 64 << 20 && stats.pidsLimit == 10 && stats.pidsCurrent == 1, "\(stats)")
        try await agent.updateContainer("upd", resources: Resources(memory: Resources.Memory(limit: 96 << 20), pids: Resources.Pids(limit: 20)).encoded())
        stats = try await agent.statsContainer("upd")
        #expect(stats.memoryLimit == 96 << 20 && stats.pidsLimit == 20, "\(stats)")
        await #expect(throws: TTRPCError.self) { try await agent.updateContainer("upd", resources: Array("{\"pids\":7}".utf8)) }
        try await agent.removeContainer("upd")

        // A memory limit and a process that keeps allocating: the OOM killer, reported as an event.
        async let event = agent.nextOOMEvent(timeout: .seconds(60))
        try await agent.createContainer("oom", spec: spec(["tail", "/dev/zero"]) { s in
            s.linux?.resources = Resources(memory: Resources.Memory(limit: 24 << 20))
        })
        try await agent.startContainer("oom")
        #expect(try await event == "oom")
        #expect(try await agent.waitProcess("oom") == 137)
        #expect(try await agent.statsContainer("oom").oomKills >= 1)
        try await agent.removeContainer("oom")
    }

    /// 50 containers one after the other leave no mounts, cgroups, processes or zombies.
    static func noLeftovers(_ agent: AgentClient) async throws {
        let before = try await agent.guestDiagnostics()
        #expect(before.containerCgroups.isEmpty && before.pids.isEmpty && before.zombies == 0, "\(before)")
        for i in 0..<50 {
            let r = try await run(agent, "seq\(i)", spec(["sh", "-c", "echo \(i) & wait"]))
            #expect(r == Result(stdout: "\(i)\n", stderr: "", status: 0))
        }
        let after = try await agent.guestDiagnostics()
        #expect(after.mountPoints == before.mountPoints)
        #expect(after.containerCgroups.isEmpty && after.pids.isEmpty && after.zombies == 0, "\(after)")
    }
}
