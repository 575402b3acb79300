import QEMU
import Testing

@Suite struct QEMUCommandLineTests {
    func base() -> QEMUConfiguration {
        var c = QEMUConfiguration(kernel: "/g/vmlinux", initrd: "/g/initrd.cpio",
                                  agent: .virtioSerial(socketPath: "/r/agent.sock"), qmpSocket: "/r/qmp.sock")
        c.name = "sandbox-abc"
        return c
    }

    @Test func tcgWithVirtioSerialAndConsoleFile() {
        var c = base()
        c.console = .file("/r/console.log")
        #expect(QEMUCommandLine.arguments(for: c, kvm: false) == [
            "-name", "sandbox-abc",
            "-machine", "q35", "-accel", "tcg,tb-size=32", "-cpu", "max",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-m", "256M",
            "-smp", "1,maxcpus=1",
            "-kernel", "/g/vmlinux", "-initrd", "/g/initrd.cpio",
            "-append", "console=ttyS0 quiet panic=-1 reboot=k i8042.noaux i8042.nomux i8042.nokbd tsc=reliable no_timer_check noreplace-smp random.trust_cpu=on cryptomgr.notests",
            "-serial", "file:/r/console.log",
            "-qmp", "unix:/r/qmp.sock,server=on,wait=off",
            "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,slot=1",
            "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=2,slot=2",
            "-device", "virtio-serial-pci,id=serial0",
            "-chardev", "socket,id=agent,path=/r/agent.sock,server=on,wait=off",
            "-device", "virtserialport,chardev=agent,id=channel0,name=agent.channel.0",
            "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
            "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on,deflate-on-oom=on",
        ])
    }

    @Test func kvmWithVsockSharesAndConsoleSocket() {
        var c = base()
        c.agent = .vsock(guestCID: 7)
        c.console = .socket("/r/console.sock")
        c.vcpus = 2
        c.maxVCPUs = 4
        c.memoryMiB = 2048
        c.maxMemoryMiB = 8192
        c.memorySlots = 4
        c.hotplugRootPorts = 0
        c.rng = false
        c.freePageReporting = false
        c.kernelParameters = ["agent.log=debug"]
        c.sharedDirectories = [.init(tag: "kataShared", path: "/r/shared"), .init(tag: "vol", path: "/v", securityModel: "passthrough")]
        let a = QEMUCommandLine.arguments(for: c, kvm: true)
        #expect(a == [
            "-name", "sandbox-abc",
            "-machine", "q35", "-accel", "kvm", "-cpu", "host",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-m", "2048M,slots=4,maxmem=8192M",
            "-smp", "2,maxcpus=4",
            "-kernel", "/g/vmlinux", "-initrd", "/g/initrd.cpio",
            "-append", "console=ttyS0 quiet panic=-1 reboot=k i8042.noaux i8042.nomux i8042.nokbd tsc=reliable no_timer_check noreplace-smp random.trust_cpu=on cryptomgr.notests agent.log=debug",
            "-chardev", "socket,id=console,path=/r/console.sock,server=on,wait=off", "-serial", "chardev:console",
            "-qmp", "unix:/r/qmp.sock,server=on,wait=off",
            "-device", "vhost-vsock-pci,id=vsock0,guest-cid=7",
            "-fsdev", "local,id=fs0,path=/r/shared,security_model=none", "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=kataShared",
            "-fsdev", "local,id=fs1,path=/v,security_model=passthrough", "-device", "virtio-9p-pci,fsdev=fs1,mount_tag=vol",
        ])
    }

    @Test func noInitrdNoConsoleNoMemoryHotplug() {
        var c = base()
        c.initrd = nil
        c.hotplugRootPorts = 0
        let a = QEMUCommandLine.arguments(for: c, kvm: false)
        #expect(!a.contains("-initrd"))
        #expect(a.contains("256M"))
        c.memorySlots = 2
        #expect(QEMUCommandLine.arguments(for: c, kvm: false).contains("256M,slots=2,maxmem=2304M"))
        #expect(a.contains("null"))
    }

    @Test func kvmNeedsHardwareVirtualisationFlags() {
        // This host's own answer must be false when its CPU lacks vmx/svm.
        #expect(!QEMUCommandLine.hostSupportsKVM(cpuinfo: "processor : 0\nflags : fpu sse2 hypervisor\n"))
        #expect(QEMUCommandLine.useKVM(.tcg) == false)
        #expect(QEMUCommandLine.useKVM(.kvm) == true)
    }
}
