// kata-bench: benchmarks that need the project's own libraries. Prints `name: value` lines.
//
//   kata-bench boot --guest DIR [--runs N]
//       (a) QEMU spawn → agent Health.Check answered, (b) the same kernel and QEMU flags with
//       an init that powers off at once (the floor: spawn → QEMU exit), medians over N runs,
//       alternating so both see the same machine; plus the initramfs size and QEMU's RSS once
//       the agent answered.
//
//   kata-bench guest --guest DIR --rootfs DIR [--runs N] [--mib N] [--vcpus N]
//       exec latency p50/p99 over N execs of `true`, stdout and stdin throughput of N MiB
//       through the agent (see GuestBench.swift).
#if canImport(Glibc)
import Glibc
#endif
import AgentClient
import QEMU
import SystemKit

func say(_ text: String) { TextFile.writeLine(text) }

func fail(_ text: String) -> Never {
    TextFile.writeLine("kata-bench: " + text, to: 2)
    exit(2)
}

func tempDir() -> String {
    var t = Array("/tmp/kata-bench-XXXXXX".utf8CString)
    guard let p = t.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { fail("mkdtemp") }
    return String(cString: p)
}

func removeDir(_ d: String) {
    for f in ["agent.sock", "qmp.sock", "console.log", "qemu.log"] { unlink(d + "/" + f) }
    rmdir(d)
}

func seconds(_ d: Duration) -> Double {
    let (s, a) = d.components
    return Double(s) + Double(a) / 1e18
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func rssMiB(_ pid: pid_t) -> Double {
    guard let f = fopen("/proc/\(pid)/status", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("VmRSS:") {
            let kb = s.split(separator: " ").compactMap { Double($0) }.first ?? -1
            return kb / 1024
        }
    }
    return -1
}

func config(_ guest: String, _ dir: String, initrd: String) -> QEMUConfiguration {
    var c = QEMUConfiguration(kernel: guest + "/vmlinux", initrd: guest + "/" + initrd,
                              agent: .virtioSerial(socketPath: dir + "/agent.sock"), qmpSocket: dir + "/qmp.sock")
    c.console = .file(dir + "/console.log")
    c.memoryMiB = 256
    return c
}

func bootAgent(_ guest: String) async throws -> (Double, Double) {
    let dir = tempDir()
    defer { removeDir(dir) }
    let start = ContinuousClock.now
    let qemu = try await QEMUProcess.launch(config(guest, dir, initrd: "initramfs.cpio"), stderrPath: dir + "/qemu.log")
    let agent = try await AgentClient.dial(.virtioSerial(socketPath: dir + "/agent.sock"), timeout: .seconds(120),
                                           consoleLog: dir + "/console.log", abort: { qemu.hasExited ? "QEMU exited" : nil })
    let ready = seconds(ContinuousClock.now - start)
    let rss = rssMiB(qemu.pid)
    agent.close()
    qemu.kill()
    _ = await qemu.waitForExit()
    return (ready, rss)
}

func bootFloor(_ guest: String) async throws -> Double {
    let dir = tempDir()
    defer { removeDir(dir) }
    let start = ContinuousClock.now
    let qemu = try await QEMUProcess.launch(config(guest, dir, initrd: "floor.cpio"), stderrPath: dir + "/qemu.log")
    let exit = await qemu.waitForExit()
    guard exit.status == .exited(0) else { fail("floor VM: \(exit)") }
    return seconds(ContinuousClock.now - start)
}

@main
struct KataBench {
    static func main() async {
        ignoreSIGPIPE()
        let args = Array(CommandLine.arguments.dropFirst())
        guard let mode = args.first, mode == "boot" || mode == "guest" else {
            fail("usage: kata-bench boot --guest DIR [--runs N] | guest --guest DIR --rootfs DIR [--runs N] [--mib N]")
        }
        var guest = "build/guest", rootfs = "build/rootfs/busybox"
        var runs = mode == "boot" ? 5 : 100
        var mib = 256, vcpus = 1
        var i = 1
        while i < args.count {
            guard i + 1 < args.count else { fail("\(args[i]) needs a value") }
            switch args[i] {
            case "--guest": guest = args[i + 1]
            case "--rootfs": rootfs = args[i + 1]
            case "--runs": runs = Int(args[i + 1]) ?? runs
            case "--mib": mib = Int(args[i + 1]) ?? mib
            case "--vcpus": vcpus = Int(args[i + 1]) ?? vcpus
            default: fail("unknown argument \(args[i])")
            }
            i += 2
        }
        if mode == "guest" {
            do { try await GuestBench.run(guest: guest, rootfs: rootfs, runs: max(runs, 50), mib: mib, vcpus: vcpus) } catch { fail("\(error)") }
            return
        }
        var agentTimes: [Double] = [], floorTimes: [Double] = [], rss: [Double] = []
        do {
            // Warm the page cache so the first run is not an outlier.
            _ = try await bootFloor(guest)
            for _ in 0..<runs {
                let (t, r) = try await bootAgent(guest)
                agentTimes.append(t)
                rss.append(r)
                floorTimes.append(try await bootFloor(guest))
            }
        } catch {
            fail("\(error)")
        }
        var st = stat()
        stat(guest + "/initramfs.cpio", &st)
        let a = median(agentTimes), f = median(floorTimes)
        say("boot-agent-ready-s: \(String(format2(a)))")
        say("boot-floor-s: \(String(format2(f)))")
        say("boot-ratio: \(String(format2(a / f)))")
        say("initramfs-mib: \(String(format2(Double(st.st_size) / 1_048_576)))")
        say("qemu-rss-mib: \(String(format2(median(rss))))")
        say("boot-runs: \(runs)")
    }

    static func format2(_ x: Double) -> String {
        let scaled = (x * 100).rounded() / 100
        var s = String(scaled)
        if let dot = s.firstIndex(of: ".") {
            let decimals = s.distance(from: dot, to: s.endIndex) - 1
            if decimals < 2 { s += String(repeating: "0", count: 2 - decimals) }
        }
        return s
    }
}
