#if canImport(Glibc)
import Glibc
#endif
import AgentClient
import OCI
import Protocols
import QEMU
import SystemKit

/// `kata-bench guest`: the agent's process API under load, in one VM with the busybox rootfs
/// over 9p: (a) exec latency (ExecProcess + WaitProcess of `true` in a running container),
/// (b) stdout throughput (a container writing N MiB, read by this host client), (c) stdin
/// throughput the other way, plus the guest-internal pipe rate of the same producer as the
/// reference ceiling.
enum GuestBench {
    static let rootfsTag = "benchRootfs"
    static let rootfsInGuest = "/run/bench-rootfs"

    static func spec(_ args: [String]) -> [UInt8] {
        Spec(process: Process(args: args, env: ["PATH=/bin"]), root: Root(path: rootfsInGuest, readonly: true),
             mounts: [Mount(destination: "/proc", type: "proc", source: "proc"),
                      Mount(destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["mode=755"])],
             linux: Linux(namespaces: ["pid", "ipc", "uts", "mount"].map { Linux.Namespace(type: $0) })).encoded()
    }

    static func run(guest: String, rootfs: String, runs: Int, mib: Int, vcpus: Int) async throws {
        let dir = tempDir()
        defer { removeDir(dir) }
        do {
            try await measure(dir: dir, guest: guest, rootfs: rootfs, runs: runs, mib: mib, vcpus: vcpus)
        } catch {
            // What the guest said last is usually the explanation.
            TextFile.writeLine("kata-bench: guest console tail:\n" + TextFile.tail(dir + "/console.log", lines: 15), to: 2)
            throw error
        }
    }

    static func measure(dir: String, guest: String, rootfs: String, runs: Int, mib: Int, vcpus: Int) async throws {
        var c = config(guest, dir, initrd: "initramfs.cpio")
        c.sharedDirectories = [.init(tag: rootfsTag, path: rootfs)]
        c.vcpus = vcpus
        c.maxVCPUs = vcpus
        let qemu = try await QEMUProcess.launch(c, stderrPath: dir + "/qemu.log")
        defer { qemu.kill() }  // PDEATHSIG covers a crash of this process; this covers a throw
        let agent = try await AgentClient.dial(.virtioSerial(socketPath: dir + "/agent.sock"), timeout: .seconds(120),
                                               consoleLog: dir + "/console.log", abort: { qemu.hasExited ? "QEMU exited" : nil })
        try await agent.createSandbox(AgentAPI.CreateSandboxRequest(
            storages: [AgentAPI.Storage(driver: "9p", source: rootfsTag, options: ["trans=virtio", "version=9p2000.L", "msize=524288", "ro"],
                                        mountPoint: rootfsInGuest)], sandboxID: "bench"))

        // (a) exec latency.
        try await agent.createContainer("idle", spec: spec(["sleep", "3600"]))
        try await agent.startContainer("idle")
        let trueProcess = Process(args: ["true"], env: ["PATH=/bin"]).encoded()
        var latencies: [Double] = []
        for i in 0..<(runs + 5) {
            let start = ContinuousClock.now
            let code: Int32
            do {
                try await agent.execProcess("idle", execID: "e\(i)", process: trueProcess)
            } catch {
                TextFile.writeLine("kata-bench: ExecProcess \(i) failed", to: 2)
                throw error
            }
            do {
                code = try await agent.waitProcess("idle", execID: "e\(i)", timeout: .seconds(10))
            } catch {
                TextFile.writeLine("kata-bench: WaitProcess \(i) failed", to: 2)
                throw error
            }
            guard code == 0 else { fail("exec exited \(code)") }
            if i >= 5 { latencies.append(seconds(ContinuousClock.now - start) * 1000) }  // first 5 warm up
        }
        try await agent.removeContainer("idle")
        latencies.sort()
        let p50 = latencies[latencies.count / 2], p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)]

        let bytes = mib << 20
        // Reference: the same producer into a pipe inside the guest (no channel involved).
        // busybox dd moves 1 MiB per write(2) (head -c copies in small blocks).
        let produce = "dd if=/dev/zero bs=1048576 count=\(mib)", consume = "dd of=/dev/null bs=1048576"
        let local = try await timed(agent, "local", ["sh", "-c", "\(produce) 2>/dev/null | \(consume)"]) { id in
            _ = try await agent.readAll(id)
        }
        // (b) stdout: the guest writes, this client reads 1 MiB per call.
        let agentCPU0 = try await agentCPUSeconds(agent)
        let stdout = try await timed(agent, "out", ["sh", "-c", "\(produce) 2>/dev/null"]) { id in
            var got = 0
            while true {
                let chunk = try await agent.readStdout(id, length: 1 << 20)
                if chunk.isEmpty { break }
                got += chunk.count
            }
            guard got == bytes else { fail("stdout delivered \(got) of \(bytes) bytes") }
        }
        let agentCPUStdout = try await agentCPUSeconds(agent) - agentCPU0
        // (c) stdin: this client writes 1 MiB per call, the guest counts.
        let block = [UInt8](repeating: 0x61, count: 1 << 20)
        let stdin = try await timed(agent, "in", ["sh", "-c", consume]) { id in
            for _ in 0..<mib { _ = try await agent.writeStdin(id, block) }
            try await agent.closeStdin(id)
            _ = try await agent.readAll(id)
        }
        say("exec-p50-ms: \(KataBench.format2(p50))")
        say("exec-p99-ms: \(KataBench.format2(p99))")
        say("stdout-mibps: \(KataBench.format2(Double(mib) / stdout))")
        say("stdin-mibps: \(KataBench.format2(Double(mib) / stdin))")
        say("guest-pipe-mibps: \(KataBench.format2(Double(mib) / local))")
        say("stdout-ratio-to-guest-pipe: \(KataBench.format2(local / stdout))")
        // What limits the streams: the share of the transfer the agent (PID 1) spent on CPU.
        say("stdout-agent-cpu-share: \(KataBench.format2(agentCPUStdout / stdout))")
        say("exec-runs: \(runs)")
        say("vcpus: \(vcpus)")
        say("stream-mib: \(mib)")
        agent.close()
        qemu.kill()
        _ = await qemu.waitForExit()
    }

    /// The consumer's count (`wc -c` on stdout) must be exactly `bytes`.
    static func expectCount(_ agent: AgentClient, _ id: String, _ bytes: Int) async throws {
        let count = String(decoding: try await agent.readAll(id), as: UTF8.self).split(separator: " ").first.map(String.init)
        guard count == "\(bytes)\n" || count == "\(bytes)" else { fail("\(id): counted \(count ?? "nothing"), not \(bytes) bytes") }
    }

    /// utime + stime of the guest's PID 1 (the agent), from /proc/1/stat (USER_HZ = 100).
    static func agentCPUSeconds(_ agent: AgentClient) async throws -> Double {
        let stat = String(decoding: try await agent.readGuestFile("/proc/1/stat").data, as: UTF8.self)
        guard let close = stat.lastIndex(of: ")") else { fail("/proc/1/stat: \(stat)") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After "(comm)": state is field 3 of the file, utime 14 and stime 15.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { fail("/proc/1/stat: \(stat)") }
        return (user + system) / 100
    }

    /// Seconds from StartContainer to the process's exit with `body` consuming its IO.
    static func timed(_ agent: AgentClient, _ id: String, _ args: [String],
                      _ body: (String) async throws -> Void) async throws -> Double {
        TextFile.writeLine("kata-bench: \(id): \(args.joined(separator: " "))", to: 2)
        try await agent.createContainer(id, spec: spec(args))
        let start = ContinuousClock.now
        try await agent.startContainer(id)
        try await body(id)
        let code = try await agent.waitProcess(id)
        let elapsed = seconds(ContinuousClock.now - start)
        guard code == 0 else { fail("\(args) exited \(code)") }
        try await agent.removeContainer(id)
        return elapsed
    }
}
