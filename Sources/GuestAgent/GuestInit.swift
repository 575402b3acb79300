#if canImport(Glibc)
import Glibc
#endif
import CLinux
import SystemKit

/// PID-1 duties of the guest: the early mounts, kernel modules, and powering off.
///
/// Runs before anything else in the VM, single-threaded; no state.
public enum GuestInit {
    struct Mount {
        let source: String, target: String, fstype: String, flags: Int, data: String?
    }

    static let earlyMounts: [Mount] = [
        Mount(source: "proc", target: "/proc", fstype: "proc", flags: CL_MS_NOSUID | CL_MS_NODEV | CL_MS_NOEXEC, data: nil),
        Mount(source: "sysfs", target: "/sys", fstype: "sysfs", flags: CL_MS_NOSUID | CL_MS_NODEV | CL_MS_NOEXEC, data: nil),
        Mount(source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: CL_MS_NOSUID, data: "mode=0755"),
        Mount(source: "devpts", target: "/dev/pts", fstype: "devpts", flags: CL_MS_NOSUID | CL_MS_NOEXEC,
              data: "newinstance,ptmxmode=0666,mode=0620"),
        Mount(source: "shm", target: "/dev/shm", fstype: "tmpfs", flags: CL_MS_NOSUID | CL_MS_NODEV, data: "mode=1777"),
        Mount(source: "tmpfs", target: "/run", fstype: "tmpfs", flags: CL_MS_NOSUID | CL_MS_NODEV, data: "mode=0755"),
        // favordynmods: moving a process into a cgroup (every container process does) then skips
        // an RCU grace period, which costs milliseconds on one emulated vCPU; forks pay a little.
        Mount(source: "cgroup2", target: "/sys/fs/cgroup", fstype: "cgroup2", flags: CL_MS_NOSUID | CL_MS_NODEV | CL_MS_NOEXEC,
              data: "favordynmods"),
    ]

    /// Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run and cgroup2.
    public static func mountEarlyFilesystems(_ log: Logger) throws(Errno) {
        for m in earlyMounts {
            try makeDirectories(m.target)
            let r = cl_mount(m.source, m.target, m.fstype, UInt(m.flags), m.data)
            if r == -EBUSY { continue }  // already mounted (e.g. devtmpfs automount)
            if r < 0 { throw Errno(-r, "mount \(m.fstype) on \(m.target)") }
        }
        log.debug("early filesystems mounted")
    }

    /// The marker line in the module list after which modules may load in the background.
    public static let backgroundMarker = "@background"

    /// Reads the module list (one `path [params]` per line, in dependency order). Returns the
    /// modules before the `@background` marker and those after it.
    public static func moduleList(_ listFile: String, _ log: Logger) -> (boot: [String], background: [String]) {
        guard let text = TextFile.read(listFile) else {
            log.warning("no module list", ("path", listFile))
            return ([], [])
        }
        var boot: [String] = [], background: [String] = []
        var afterMarker = false
        for line in text.split(separator: "\n").map(String.init) where !line.hasPrefix("#") && !line.isEmpty {
            if line == backgroundMarker { afterMarker = true } else if afterMarker { background.append(line) } else { boot.append(line) }
        }
        return (boot, background)
    }

    /// Loads modules in order (each line `path [params]`); one already built in or loaded counts
    /// as loaded.
    public static func loadModules(_ lines: [String], _ log: Logger, phase: String) throws(Errno) {
        for line in lines {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            let r = cl_load_module(parts[0], parts.count > 1 ? parts[1] : "")
            if r < 0 { throw Errno(-r, "finit_module \(parts[0])") }
        }
        log.info("kernel modules loaded", ("phase", phase), ("count", String(lines.count)))
    }

    /// Syncs and powers the VM off. Never returns: if reboot(2) fails, PID 1 exits, which
    /// panics the kernel, which QEMU (started with -no-reboot) turns into an exit.
    public static func powerOff(_ log: Logger, reason: String) -> Never {
        log.info("powering off", ("reason", reason))
        let r = cl_power_off(0)
        log.error("reboot(POWER_OFF) failed", ("errno", String(-r)))
        exit(1)
    }

    /// mkdir -p.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(Errno) {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) != 0 && errno != EEXIST { throw Errno.current("mkdir \(current)") }
        }
    }
}
