#if canImport(Glibc)
import Glibc
#endif
import AgentClient
import Protocols
import QEMU
import SystemKit
import TTRPC
import TestSupport
import Testing

/// Real QEMU under TCG, the real guest image, the real agent.
@Suite(.serialized) struct VMLifecycleTests {
    /// One boot covers: Health, QMP status/pause/resume, CPU and device hot-plug queries, the
    /// agent surviving a reconnect, CreateSandbox with a 9p share whose file the guest reads,
    /// DestroySandbox powering off with status 0, and nothing left behind.
    @Test func bootShareDestroyAndNothingLeft() async throws {
        let shared = TempDir("vmshare")
        let message = Array("written by the host at \(ContinuousClock.now)\n".utf8)
        let fd = open(shared.file("hello.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        #expect(write(fd, message, message.count) == message.count)
        close(fd)

        let rootfs = repositoryRoot + "/build/rootfs/busybox"
        #expect(access(rootfs + "/bin/busybox", X_OK) == 0, "\(rootfs) missing: run `make rootfs` (part of `make test`)")
        let vm = try await VM(shares: [.init(tag: "kataShared", path: shared.path), .init(tag: "testRootfs", path: rootfs)])
        let pid = vm.qemu.pid
        do {
            let agent = try #require(vm.agent)
            let qmp = try #require(vm.qmp)
            #expect(try await agent.check().status == .serving)
            #expect(try await agent.version().agentVersion == "0.1.0")

            // QMP: status, pause, resume.
            #expect(try await qmp.queryStatus() == ("running", true))
            let events = qmp.subscribe()
            try await qmp.stop()
            _ = try await events.next(named: "STOP", timeout: .seconds(5))
            #expect(try await qmp.queryStatus() == ("paused", false))
            try await qmp.cont()
            _ = try await events.next(named: "RESUME", timeout: .seconds(5))
            #expect(try await qmp.queryStatus().running)
            events.cancel()
            #expect(try await qmp.queryHotpluggableCPUs().count == 2)
            await #expect(throws: QMPError.self) { _ = try await qmp.execute("no-such-command") }

            // Hot-plug a device on a root port and unplug it (waits for DEVICE_DELETED).
            try await qmp.deviceAdd(driver: "virtio-rng-pci", id: "rng-hot", properties: ["bus": "rp0"])
            try await qmp.deviceDel(id: "rng-hot", timeout: .seconds(30))

            // The agent survives the host closing and reopening the channel.
            agent.close()
            let again = try await vm.dialAgent(timeout: .seconds(20))
            vm.agent = again
            #expect(try await again.check().status == .serving)

            // CreateSandbox with the 9p share; the guest sees the host's file.
            try await again.createSandbox(AgentAPI.CreateSandboxRequest(
                hostname: "sandbox-test", dns: ["nameserver 10.0.0.1"],
                storages: [AgentAPI.Storage(driver: "9p", source: "kataShared", fstype: "9p",
                                            mountPoint: "/run/kata-containers/shared/containers"),
                           AgentAPI.Storage(driver: "9p", source: "testRootfs",
                                            options: ["trans=virtio", "version=9p2000.L", "msize=524288", "ro"],
                                            mountPoint: "/run/test-rootfs")],
                sandboxID: "sb1"))
            let file = try await again.readGuestFile("/run/kata-containers/shared/containers/hello.txt")
            #expect(file.data == message && file.size == UInt64(message.count))
            #expect(try await again.readGuestFile("/proc/sys/kernel/hostname").data == Array("sandbox-test\n".utf8))
            // The busybox test rootfs is readable through its own (read-only) share.
            let passwd = try await again.readGuestFile("/run/test-rootfs/etc/passwd")
            #expect(passwd.data == TextFile.readBytes(rootfs + "/etc/passwd"))
            let busybox = try await again.readGuestFile("/run/test-rootfs/bin/busybox", length: 4)
            #expect(busybox.data == [0x7f, 0x45, 0x4c, 0x46] && busybox.size > 500_000)
            #expect(try await again.readGuestFile("/etc/resolv.conf").data == Array("nameserver 10.0.0.1\n".utf8))
            await #expect(throws: TTRPCError.self) {
                try await again.createSandbox(AgentAPI.CreateSandboxRequest(sandboxID: "sb1"))
            }
            let details = try await again.guestDetails()
            #expect(details.agentDetails?.initDaemon == true && details.memBlockSizeBytes > 0)
            await #expect(throws: TTRPCError(.notFound, "open /nope: No such file or directory")) {
                _ = try await again.readGuestFile("/nope")
            }

            // DestroySandbox: unmount, power off, QEMU exits 0.
            try await again.destroySandbox()
            let exit = await vm.qemu.waitForExit(within: .seconds(20))
            #expect(exit.status == .exited(0), "\(exit)")
        } catch {
            await vm.destroy()
            shared.remove()
            throw error
        }
        await vm.destroy()
        shared.remove()
        #expect(!processExists(pid))
        #expect(!vm.dir.exists && !shared.exists)
    }

    @Test func killedMidBootIsReportedPromptly() async throws {
        let vm = try await VM(boot: false)
        let dialing = Task { try await vm.dialAgent(timeout: .seconds(60)) }
        try await Task.sleep(for: .milliseconds(700))
        let killed = ContinuousClock.now
        kill(vm.qemu.pid, SIGKILL)
        let exit = await vm.qemu.waitForExit()
        #expect(exit.status == .signaled(SIGKILL))
        #expect(exit.description.contains("killed by signal 9"))
        do {
            _ = try await dialing.value
            Issue.record("dial succeeded against a dead VM")
        } catch let e as AgentDialError {
            #expect(e.lastError == "QEMU exited")
        }
        #expect(ContinuousClock.now - killed < .seconds(2))
        let pid = vm.qemu.pid
        await vm.destroy()
        #expect(!processExists(pid) && !vm.dir.exists)
    }

    @Test func killedAfterBootFailsPendingCallsAndIsReported() async throws {
        let vm = try await VM()
        let agent = try #require(vm.agent)
        kill(vm.qemu.pid, SIGKILL)
        let exit = await vm.qemu.waitForExit()
        #expect(exit.status == .signaled(SIGKILL))
        // The chardev socket died with QEMU: the agent connection reports closed.
        for _ in 0..<200 where !agent.ttrpc.isClosed { try await Task.sleep(for: .milliseconds(10)) }
        await #expect(throws: TTRPCError.closed) { _ = try await agent.check() }
        let status = try? await vm.qmp?.queryStatus()
        #expect(status == nil, "QMP still answers after QEMU died")
        await vm.destroy()
        #expect(!processExists(vm.qemu.pid) && !vm.dir.exists)
    }

    @Test func gracefulStopThroughQMPQuit() async throws {
        let vm = try await VM()
        let exit = await vm.qemu.stop(qmp: vm.qmp, gracePeriod: .seconds(10))
        #expect(exit.status == .exited(0))
        await vm.destroy()
    }

    @Test func badPathsAreNamedAndNothingIsLeft() async throws {
        try requireImage()
        let dir = TempDir("vmtest")
        defer { dir.remove() }
        var c = VM.configuration(dir)
        c.kernel = "/nonexistent/vmlinux"
        await #expect(throws: QEMUError.kernelNotFound("/nonexistent/vmlinux")) { _ = try await QEMUProcess.launch(c, stderrPath: dir.file("q.log")) }
        c = VM.configuration(dir, initrd: "/nonexistent/initrd.cpio")
        await #expect(throws: QEMUError.initrdNotFound("/nonexistent/initrd.cpio")) { _ = try await QEMUProcess.launch(c, stderrPath: dir.file("q.log")) }
        c = VM.configuration(dir)
        c.binary = "/nonexistent/qemu-system-x86_64"
        await #expect(throws: QEMUError.binaryNotFound("/nonexistent/qemu-system-x86_64")) { _ = try await QEMUProcess.launch(c, stderrPath: dir.file("q.log")) }
        c = VM.configuration(dir, shares: [.init(tag: "x", path: "/nonexistent/share")])
        await #expect(throws: QEMUError.sharedDirectoryNotFound("/nonexistent/share")) { _ = try await QEMUProcess.launch(c, stderrPath: dir.file("q.log")) }
        // None of these started anything or created the log.
        #expect(access(dir.file("q.log"), F_OK) != 0)
        let e = QEMUError.kernelNotFound("/nonexistent/vmlinux")
        #expect(e.description == "guest kernel /nonexistent/vmlinux not found")
    }

    @Test func dialTimeoutIncludesTheGuestConsole() async throws {
        // An initrd whose init is not an agent: the dial times out and quotes the console.
        try requireImage()
        let dir = TempDir("vmtest")
        var c = VM.configuration(dir, initrd: guestDir + "/floor.cpio")
        c.kernelParameters = ["loglevel=4"]
        let qemu = try await QEMUProcess.launch(c, stderrPath: dir.file("qemu.log"))
        do {
            _ = try await AgentClient.dial(.virtioSerial(socketPath: dir.file("agent.sock")), timeout: .seconds(1),
                                           consoleLog: dir.file("console.log"))
            Issue.record("dialled an agent that does not exist")
        } catch let e as AgentDialError {
            #expect(e.description.contains("not ready after"))
        }
        qemu.kill()
        _ = await qemu.waitForExit()
        dir.remove()
    }
}

@Suite(.serialized) struct VMFailureTests {
    @Test func agentPowersOffWhenItsChannelNeverAppears() async throws {
        try requireImage()
        let dir = TempDir("vmtest")
        var c = VM.configuration(dir)
        c.kernelParameters = ["agent.channel=no.such.port", "agent.channel_timeout=1"]
        let qemu = try await QEMUProcess.launch(c, stderrPath: dir.file("qemu.log"))
        let exit = await qemu.waitForExit(within: .seconds(30))
        #expect(exit.status == .exited(0), "the guest did not power itself off: \(exit)")
        let console = TextFile.tail(dir.file("console.log"), lines: 10)
        #expect(console.contains("no.such.port did not appear"), "\(console)")
        #expect(console.contains("msg=\"powering off\""), "\(console)")
        dir.remove()
    }

    @Test func qemuRefusingItsConfigurationIsReportedWithItsOwnWords() async throws {
        try requireImage()
        let dir = TempDir("vmtest")
        // This host has no /dev/vhost-vsock: QEMU itself refuses and exits.
        var c = VM.configuration(dir)
        c.agent = .vsock(guestCID: 3)
        let qemu = try await QEMUProcess.launch(c, stderrPath: dir.file("qemu.log"))
        let exit = await qemu.waitForExit()
        #expect(exit.status == .exited(1))
        #expect(exit.description.contains("vhost-vsock"), "\(exit)")
        dir.remove()
    }

    @Test func imageIsReproducible() async throws {
        try requireImage()
        let dir = TempDir("image")
        let child = try await ChildProcess.spawn("/usr/bin/python3", [
            repositoryRoot + "/packaging/guest/build-image.py", "--kernel-deb", guestDir + "/cache/kernel.deb",
            "--init", repositoryRoot + "/.build/release/kata-agent", "--out", dir.path])
        #expect(await child.wait() == .exited(0))
        let fresh = TextFile.read(dir.file("manifest.json")) ?? ""
        let built = TextFile.read(guestDir + "/manifest.json") ?? ""
        func hash(_ manifest: String, _ key: String) -> String? {
            // "initramfs.cpio": { ... "sha256": "…" — the first sha256 after the key.
            guard let r = manifest.firstRange(of: "\"\(key)\"") else { return nil }
            let rest = manifest[r.upperBound...]
            guard let s = rest.firstRange(of: "\"sha256\": \"") else { return nil }
            return String(rest[s.upperBound...].prefix(64))
        }
        #expect(hash(fresh, "initramfs.cpio") != nil)
        #expect(hash(fresh, "initramfs.cpio") == hash(built, "initramfs.cpio"), "rebuilding gave different initramfs bytes")
        #expect(hash(fresh, "kernel") == hash(built, "kernel"))
        dir.remove()
    }
}
