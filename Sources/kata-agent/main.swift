// kata-agent: PID 1 of the sandbox VM. Mounts the early filesystems, loads the kernel modules
// the image lists, reaps every process, and serves the agent API over the virtio-serial port
// `agent.channel.0`. Any fatal error powers the VM off: a hung guest is never left behind.
#if canImport(Glibc)
import Glibc
#endif
import CLinux
import GuestAgent
import SystemKit

@main
struct KataAgent {
    static func main() async {
        // Before any thread exists: every thread inherits the blocked SIGCHLD/SIGTERM.
        let signals = Reaper.blockSignals()
        cl_malloc_keep_large_blocks()
        let isPID1 = getpid() == 1
        let early = Logger(fd: 2, minimumLevel: .info, fields: [("source", "agent")])
        if isPID1 {
            do {
                try GuestInit.mountEarlyFilesystems(early)
            } catch {
                early.error("guest init failed", ("error", "\(error)"))
                GuestInit.powerOff(early, reason: "init failure")
            }
        }
        // /proc is mounted now: the agent.* kernel parameters can be read.
        let options = AgentOptions(commandLine: TextFile.read("/proc/cmdline") ?? "")
        var configured = early
        configured.minimumLevel = CommandLine.arguments.contains("--debug") ? .debug : options.logLevel
        let log = configured
        if !options.rejected.isEmpty { log.warning("ignored kernel parameters", ("params", options.rejected.joined(separator: " "))) }
        let powerOff: @Sendable (String) -> Void = { reason in
            if isPID1 { GuestInit.powerOff(log, reason: reason) } else { exit(0) }
        }
        var background: [String] = []
        if isPID1 {
            do {
                let modules = GuestInit.moduleList("/lib/modules/load-order", log)
                try GuestInit.loadModules(modules.boot, log, phase: "boot")
                background = modules.background
            } catch {
                log.error("guest init failed", ("error", "\(error)"))
                GuestInit.powerOff(log, reason: "init failure")
            }
        }
        let reaper = Reaper(signalFD: signals, log: log) { powerOff("SIGTERM") }
        let agent = GuestAgent(log: log, reaper: reaper, powerOff: powerOff)
        // The rest of the modules (9p, vsock, net, blk, overlay…) load while the agent already
        // answers Health; sandbox RPCs wait for them.
        let pending = background
        agent.sandbox.loadInBackground {
            do {
                try GuestInit.loadModules(pending, log, phase: "background")
            } catch {
                log.error("loading modules failed", ("error", "\(error)"))
                powerOff("module load failure")
            }
        }
        do {
            try await agent.run(portName: options.channel, timeout: .seconds(options.channelTimeoutSeconds))
        } catch {
            log.error("agent failed", ("error", "\(error)"))
            powerOff("agent failure")
        }
    }
}
