/// Everything needed to start one sandbox VM. A plain value: `QEMUCommandLine` turns it into
/// arguments without touching the system.
public struct QEMUConfiguration: Sendable, Hashable {
    public enum Accelerator: String, Sendable, Hashable {
        /// KVM when the host has hardware virtualisation (vmx/svm) and /dev/kvm, else TCG.
        case auto, kvm, tcg
    }

    /// How the host reaches the agent.
    public enum AgentChannel: Sendable, Hashable {
        /// A virtio-serial port named `agent.channel.0`, backed by a QEMU chardev socket (server)
        /// at this host path.
        case virtioSerial(socketPath: String)
        /// vhost-vsock with this guest CID (the agent listens on port 1024).
        case vsock(guestCID: UInt32)
    }

    /// Where the guest's serial console goes.
    public enum Console: Sendable, Hashable {
        case file(String)
        case socket(String)
        case none
    }

    /// A host directory exported to the guest over virtio-9p.
    public struct SharedDirectory: Sendable, Hashable {
        public var tag: String
        public var path: String
        /// `none` (default), `passthrough` or `mapped-xattr`.
        public var securityModel: String
        public init(tag: String, path: String, securityModel: String = "none") {
            self.tag = tag
            self.path = path
            self.securityModel = securityModel
        }
    }

    public var binary = "/usr/bin/qemu-system-x86_64"
    public var name = "sandbox"
    public var machineType = "q35"
    public var accelerator = Accelerator.auto
    public var vcpus = 1
    /// Hot-pluggable ceiling; 0 means `vcpus`.
    public var maxVCPUs = 0
    public var memoryMiB = 256
    /// Memory hotplug slots and ceiling (`-m size,slots=…,maxmem=…`); no hotplug when 0 (the
    /// default: any slot costs ~63 MiB of QEMU RSS under TCG, measured, whatever `maxmem` is).
    public var memorySlots = 0
    public var maxMemoryMiB = 0
    public var kernel: String
    public var initrd: String?
    public var kernelParameters: [String] = []
    public var console = Console.none
    public var agent: AgentChannel
    public var sharedDirectories: [SharedDirectory] = []
    /// Empty PCIe root ports, so devices can be hot-plugged on q35.
    public var hotplugRootPorts = 2
    public var qmpSocket: String
    public var rng = true
    /// A virtio-balloon with free page reporting: pages the guest frees go back to the host.
    public var freePageReporting = true
    /// TCG's translation cache, MiB (QEMU's default is much larger; this bounds RSS).
    public var tcgTranslationCacheMiB = 32
    public var extraArguments: [String] = []

    public init(kernel: String, initrd: String?, agent: AgentChannel, qmpSocket: String) {
        self.kernel = kernel
        self.initrd = initrd
        self.agent = agent
        self.qmpSocket = qmpSocket
    }
}
