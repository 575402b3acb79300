#if canImport(Glibc)
import Glibc
#endif
import AgentClient
import OCI
import Protocols
import QEMU
import SystemKit
import TTRPC
import TestSupport
import Testing

/// Containers in the guest through the agent API alone: one VM, many containers, each from
/// the busybox-static rootfs shared read-only over 9p.
@Suite(.serialized) struct ContainerTests {
    static let rootfsTag = "testRootfs"
    static let rootfsInGuest = "/run/test-rootfs"

    static func spec(_ args: [String], env: [String] = ["PATH=/bin"], cwd: String = "/", uid: UInt32 = 0, gid: UInt32 = 0,
                     hostname: String = "ctr", configure: (inout Spec) -> Void = { _ in }) -> [UInt8] {
        var process = Process(user: Process.User(uid: uid, gid: gid), args: args, env: env, cwd: cwd)
        process.noNewPrivileges = true
        var spec = Spec(process: process, root: Root(path: rootfsInGuest, readonly: true), hostname: hostname,
                        mounts: [Mount(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
                                 Mount(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
                                 Mount(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "size=16m"])],
                        linux: Linux(namespaces: ["pid", "ipc", "uts", "mount", "network"].map { Linux.Namespace(type: $0) }))
        configure(&spec)
        return spec.encoded()
    }

    struct Result: Equatable {
        var stdout: String
        var stderr: String
        var status: Int32
    }

    /// Create, start, drain both streams, wait, remove.
    static func run(_ agent: AgentClient, _ id: String, _ spec: [UInt8]) async throws -> Result {
        try await agent.createContainer(id, spec: spec)
        try await agent.startContainer(id)
        async let out = agent.readAll(id)
        async let err = agent.readAll(id, stderr: true)
        let (o, e) = try await (out, err)
        let status = try await agent.waitProcess(id)
        try await agent.removeContainer(id)
        return Result(stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self), status: status)
    }

    static func runBytes(_ agent: AgentClient, _ id: String, _ spec: [UInt8]) async throws -> (stdout: [UInt8], status: Int32) {
        try await agent.createContainer(id, spec: spec)
        try await agent.startContainer(id)
        let out = try await agent.readAll(id)
        let status = try await agent.waitProcess(id)
        try await agent.removeContainer(id)
        return (out, status)
    }

    @Test func containersRunInTheGuest() async throws {
        let rootfs = repositoryRoot + "/build/rootfs/busybox"
        #expect(access(rootfs + "/bin/busybox", X_OK) == 0, "\(rootfs) missing: run `make rootfs` (part of `make test`)")
        let vm = try await VM(shares: [.init(tag: Self.rootfsTag, path: rootfs)])
        do {
            let agent = try #require(vm.agent)
            try await agent.createSandbox(AgentAPI.CreateSandboxRequest(
                storages: [AgentAPI.Storage(driver: "9p", source: Self.rootfsTag,
                                            options: ["trans=virtio", "version=9p2000.L", "msize=524288", "ro"],
                                            mountPoint: Self.rootfsInGuest)],
                sandboxID: "sb"))

            // Exact stdout and stderr bytes, and the exit code.
            #expect(try await Self.run(agent, "echo", Self.spec(["sh", "-c", "echo hello; echo oops >&2; exit 3"]))
                    == Result(stdout: "hello\n", stderr: "oops\n", status: 3))
            for code: Int32 in [0, 1, 42] {
                #expect(try await Self.run(agent, "exit\(code)", Self.spec(["sh", "-c", "exit \(code)"])).status == code)
            }
            // Environment, working directory, identity, hostname, PID namespace.
            #expect(try await Self.run(agent, "env", Self.spec(["sh", "-c", "echo $FOO; pwd"], env: ["PATH=/bin", "FOO=bar"], cwd: "/etc")).stdout
                    == "bar\n/etc\n")
            #expect(try await Self.run(agent, "user", Self.spec(["sh", "-c", "id -u; id -g"], uid: 1000, gid: 1000)).stdout == "1000\n1000\n")
            #expect(try await Self.run(agent, "host", Self.spec(["hostname"], hostname: "box")).stdout == "box\n")
            #expect(try await Self.run(agent, "pid1", Self.spec(["sh", "-c", "echo $$"])).stdout == "1\n")
            // The read-only rootfs refuses writes.
            let ro = try await Self.run(agent, "ro", Self.spec(["sh", "-c", "touch /x"]))
            #expect(ro.status == 1 && ro.stderr.contains("Read-only file system"), "\(ro)")

            // stdin round trip through cat, EOF by CloseStdin.
            try await agent.createContainer("cat", spec: Self.spec(["cat"]))
            try await agent.startContainer("cat")
            let input = Array("line one\nline two\n".utf8) + [0x00, 0xff, 0x7f]
            #expect(try await agent.writeStdin("cat", input) == UInt32(input.count))
            try await agent.closeStdin("cat")
            #expect(try await agent.readAll("cat") == input)
            #expect(try await agent.waitProcess("cat") == 0)
            try await agent.removeContainer("cat")

            // A 10 MiB burst written right before exit arrives complete and byte-exact.
            let burst = try await Self.runBytes(agent, "burst", Self.spec(["sh", "-c", "yes abcdefgh | head -c 10485760; exit 7"]))
            #expect(burst.status == 7)
            #expect(burst.stdout.count == 10 << 20)
            let line = Array("abcdefgh\n".utf8)
            #expect(burst.stdout.enumerated().allSatisfy { $0.element == line[$0.offset % line.count] }, "burst bytes differ")

            // A missing binary fails fast: StartContainer says why, the process exits 127.
            let started = ContinuousClock.now
            try await agent.createContainer("missing", spec: Self.spec(["/no/such/binary"]))
            do {
                try await agent.startContainer("missing")
                Issue.record("started a missing binary")
            } catch let e as TTRPCError {
                #expect(e.code == .notFound && e.message.contains("/no/such/binary"), "\(e)")
            }
            #expect(try await agent.waitProcess("missing") == 127)
            try await agent.removeContainer("missing")
            #expect(ContinuousClock.now - started < .seconds(3))

            // SIGKILL → 137.
            try await agent.createContainer("sleeper", spec: Self.spec(["sleep", "30"]))
            try await agent.startContainer("sleeper")
            try await agent.signalProcess("sleeper", signal: SIGKILL)
            #expect(try await agent.waitProcess("sleeper") == 137)
            await #expect(throws: TTRPCError(.notFound, "sleeper: process sleeper already finished")) {
                try await agent.signalProcess("sleeper", execID: "sleeper", signal: SIGKILL)
            }
            try await agent.removeContainer("sleeper")

            // Errors: unknown, duplicate, wrong state, bad spec; a never-started container is removable.
            await #expect(throws: TTRPCError(.notFound, "container nope not found")) { _ = try await agent.waitProcess("nope") }
            try await agent.createContainer("twice", spec: Self.spec(["true"]))
            await #expect(throws: TTRPCError(.alreadyExists, "container twice already exists")) {
                try await agent.createContainer("twice", spec: Self.spec(["true"]))
            }
            try await agent.removeContainer("twice")
            await #expect(throws: TTRPCError.self) { try await agent.startContainer("twice") }
            do {
                try await agent.createContainer("bad", spec: Array("{\"ociVersion\":1}".utf8))
                Issue.record("accepted a malformed spec")
            } catch let e as TTRPCError {
                #expect(e.code == .invalidArgument && e.message.contains("ociVersion"), "\(e)")
            }
            try await agent.createContainer("started", spec: Self.spec(["true"]))
            try await agent.startContainer("started")
            await #expect(throws: TTRPCError.self) { try await agent.startContainer("started") }
            _ = try await agent.waitProcess("started")
            try await agent.removeContainer("started")

            try await Self.execs(agent)
            try await Self.signals(agent)
            try await Self.terminal(agent)
            try await Self.security(agent)
            try await Self.cgroups(agent)
            try await Self.noLeftovers(agent)
        } catch {
            await vm.destroy()
            throw error
        }
        await vm.destroy()
    }
}
