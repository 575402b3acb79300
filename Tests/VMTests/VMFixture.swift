#if canImport(Glibc)
import Glibc
#endif
import AgentClient
import QEMU
import SystemKit
import TestSupport
import Testing

let guestDir = repositoryRoot + "/build/guest"

/// Fails the test with a clear message when the guest image has not been built.
func requireImage() throws {
    for f in ["vmlinux", "initramfs.cpio"] where access(guestDir + "/" + f, R_OK) != 0 {
        Issue.record("\(guestDir)/\(f) is missing: run `make image` (part of `make test`)")
        throw QEMUError.kernelNotFound(guestDir + "/" + f)
    }
}

/// One booted sandbox VM: QEMU, its QMP monitor and the agent, all in a private directory.
final class VM: @unchecked Sendable {
    // Mutated only by the owning test task.
    let dir: TempDir
    let qemu: QEMUProcess
    var qmp: QMPClient?
    var agent: AgentClient?

    var console: String { dir.file("console.log") }
    var agentSocket: String { dir.file("agent.sock") }

    static func configuration(_ dir: TempDir, initrd: String = guestDir + "/initramfs.cpio",
                              shares: [QEMUConfiguration.SharedDirectory] = []) -> QEMUConfiguration {
        var c = QEMUConfiguration(kernel: guestDir + "/vmlinux", initrd: initrd,
                                  agent: .virtioSerial(socketPath: dir.file("agent.sock")), qmpSocket: dir.file("qmp.sock"))
        c.console = .file(dir.file("console.log"))
        c.memoryMiB = 256
        c.maxVCPUs = 2
        c.sharedDirectories = shares
        return c
    }

    /// Launches QEMU; with `boot`, also connects QMP and waits for the agent.
    init(shares: [QEMUConfiguration.SharedDirectory] = [], boot: Bool = true, dir: TempDir = TempDir("vmtest")) async throws {
        try requireImage()
        ignoreSIGPIPE()
        self.dir = dir
        qemu = try await QEMUProcess.launch(Self.configuration(dir, shares: shares), stderrPath: dir.file("qemu.log"))
        guard boot else { return }
        do {
            qmp = try await QMPClient.connect(path: dir.file("qmp.sock"), timeout: .seconds(10))
            agent = try await dialAgent()
        } catch {
            await destroy()
            throw error
        }
    }

    func dialAgent(timeout: Duration = .seconds(60)) async throws -> AgentClient {
        let qemu = self.qemu
        return try await AgentClient.dial(.virtioSerial(socketPath: agentSocket), timeout: timeout, consoleLog: console,
                                          abort: { qemu.hasExited ? "QEMU exited" : nil })
    }

    /// Kills QEMU if still running, waits for it, removes the directory.
    func destroy() async {
        agent?.close()
        qmp?.close()
        qemu.kill()
        _ = await qemu.waitForExit()
        dir.remove()
    }
}

/// Whether a process exists (a zombie counts as gone once reaped by us).
func processExists(_ pid: pid_t) -> Bool {
    kill(pid, 0) == 0 || errno != ESRCH
}
