#if canImport(Glibc)
import Glibc
#endif
import SystemKit

/// Builds QEMU's argument list from a configuration. Pure: the only input besides the
/// configuration is whether KVM may be used, which `hostSupportsKVM()` answers separately.
public enum QEMUCommandLine {
    /// Kernel parameters every boot gets: the serial console, quiet boot (the console is slow
    /// under TCG), no reboot loops on panic, no unneeded probing, and no crypto self-tests at
    /// boot (they cost ~0.7 s under TCG; Kata's guest kernels disable them too).
    public static let baseKernelParameters = [
        "console=ttyS0", "quiet", "panic=-1", "reboot=k", "i8042.noaux", "i8042.nomux", "i8042.nokbd",
        "tsc=reliable", "no_timer_check", "noreplace-smp", "random.trust_cpu=on", "cryptomgr.notests",
    ]

    /// argv[1...] for `config` (argv[0] is `config.binary`).
    public static func arguments(for config: QEMUConfiguration, kvm: Bool) -> [String] {
        var a: [String] = ["-name", config.name]
        a += ["-machine", config.machineType, "-accel", kvm ? "kvm" : "tcg,tb-size=\(config.tcgTranslationCacheMiB)"]
        a += ["-cpu", kvm ? "host" : "max"]
        a += ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]

        var memory = "\(config.memoryMiB)M"
        if config.memorySlots > 0 {
            let max = config.maxMemoryMiB > config.memoryMiB ? config.maxMemoryMiB : config.memoryMiB + 2048
            memory += ",slots=\(config.memorySlots),maxmem=\(max)M"
        }
        a += ["-m", memory]
        let maxCPUs = max(config.maxVCPUs, config.vcpus)
        a += ["-smp", "\(config.vcpus),maxcpus=\(maxCPUs)"]

        a += ["-kernel", config.kernel]
        if let initrd = config.initrd { a += ["-initrd", initrd] }
        a += ["-append", (baseKernelParameters + config.kernelParameters).joined(separator: " ")]

        switch config.console {
        case .file(let path): a += ["-serial", "file:\(path)"]
        case .socket(let path):
            a += ["-chardev", "socket,id=console,path=\(path),server=on,wait=off", "-serial", "chardev:console"]
        case .none: a += ["-serial", "null"]
        }

        a += ["-qmp", "unix:\(config.qmpSocket),server=on,wait=off"]

        for i in 0..<config.hotplugRootPorts {
            a += ["-device", "pcie-root-port,id=rp\(i),bus=pcie.0,chassis=\(i + 1),slot=\(i + 1)"]
        }

        switch config.agent {
        case .virtioSerial(let socket):
            a += ["-device", "virtio-serial-pci,id=serial0",
                  "-chardev", "socket,id=agent,path=\(socket),server=on,wait=off",
                  "-device", "virtserialport,chardev=agent,id=channel0,name=agent.channel.0"]
        case .vsock(let cid):
            a += ["-device", "vhost-vsock-pci,id=vsock0,guest-cid=\(cid)"]
        }

        for (i, share) in config.sharedDirectories.enumerated() {
            a += ["-fsdev", "local,id=fs\(i),path=\(share.path),security_model=\(share.securityModel)",
                  "-device", "virtio-9p-pci,fsdev=fs\(i),mount_tag=\(share.tag)"]
        }

        if config.rng {
            a += ["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"]
        }
        if config.freePageReporting {
            a += ["-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on"]
        }
        return a + config.extraArguments
    }

    /// Whether KVM is usable for a stock guest: the CPU advertises vmx or svm and /dev/kvm
    /// exists. (On these hosts /dev/kvm exists without either flag, and KVM cannot boot.)
    public static func hostSupportsKVM(cpuinfo: String? = nil) -> Bool {
        guard access("/dev/kvm", R_OK | W_OK) == 0 else { return false }
        let text = cpuinfo ?? TextFile.read("/proc/cpuinfo") ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            let flags = line.split(separator: " ")
            return flags.contains("vmx") || flags.contains("svm")
        }
        return false
    }

    /// Resolves `accelerator` to KVM (true) or TCG (false).
    public static func useKVM(_ accelerator: QEMUConfiguration.Accelerator) -> Bool {
        switch accelerator {
        case .kvm: return true
        case .tcg: return false
        case .auto: return hostSupportsKVM()
        }
    }
}
