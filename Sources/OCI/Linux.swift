/// `linux`: namespaces, devices, cgroup resources, seccomp, masked and read-only paths.
public struct Linux: Codable, Sendable, Hashable {
    public var uidMappings: [IDMapping]?
    public var gidMappings: [IDMapping]?
    public var sysctl: [String: String]?
    public var resources: Resources?
    public var cgroupsPath: String?
    public var namespaces: [Namespace]?
    public var devices: [Device]?
    public var seccomp: Seccomp?
    public var rootfsPropagation: String?
    public var maskedPaths: [String]?
    public var readonlyPaths: [String]?
    public var mountLabel: String?

    public init(namespaces: [Namespace]? = nil, resources: Resources? = nil, seccomp: Seccomp? = nil) {
        self.namespaces = namespaces
        self.resources = resources
        self.seccomp = seccomp
    }

    public struct IDMapping: Codable, Sendable, Hashable {
        public var containerID: UInt32
        public var hostID: UInt32
        public var size: UInt32
    }

    public struct Namespace: Codable, Sendable, Hashable {
        /// `pid`, `network`, `mount`, `ipc`, `uts`, `user`, `cgroup`.
        public var type: String
        /// Join this namespace instead of creating one.
        public var path: String?

        public init(type: String, path: String? = nil) {
            self.type = type
            self.path = path
        }
    }

    public struct Device: Codable, Sendable, Hashable {
        public var type: String
        public var path: String
        public var major: Int64?
        public var minor: Int64?
        public var fileMode: UInt32?
        public var uid: UInt32?
        public var gid: UInt32?
    }

    /// The spec's namespace of `type`, if listed.
    public func namespace(_ type: String) -> Namespace? {
        namespaces?.first { $0.type == type }
    }
}

/// `linux.resources` (also the JSON body of containerd's Update RPC).
public struct Resources: Codable, Sendable, Hashable {
    public var devices: [DeviceRule]?
    public var memory: Memory?
    public var cpu: CPU?
    public var pids: Pids?
    public var unified: [String: String]?

    public init(memory: Memory? = nil, cpu: CPU? = nil, pids: Pids? = nil) {
        self.memory = memory
        self.cpu = cpu
        self.pids = pids
    }

    /// Decodes a `specs.LinuxResources` (containerd's Update payload).
    public static func decode(_ json: [UInt8]) throws(SpecError) -> Resources {
        try decodeJSON(Resources.self, json)
    }

    public struct DeviceRule: Codable, Sendable, Hashable {
        public var allow: Bool
        public var type: String?
        public var major: Int64?
        public var minor: Int64?
        public var access: String?
    }

    public struct Memory: Codable, Sendable, Hashable {
        public var limit: Int64?
        public var reservation: Int64?
        public var swap: Int64?
        public var kernel: Int64?
        public var kernelTCP: Int64?
        public var swappiness: UInt64?
        public var disableOOMKiller: Bool?

        public init(limit: Int64? = nil) { self.limit = limit }
    }

    public struct CPU: Codable, Sendable, Hashable {
        public var shares: UInt64?
        public var quota: Int64?
        public var period: UInt64?
        public var realtimeRuntime: Int64?
        public var realtimePeriod: UInt64?
        public var cpus: String?
        public var mems: String?

        public init(shares: UInt64? = nil, quota: Int64? = nil, period: UInt64? = nil) {
            self.shares = shares
            self.quota = quota
            self.period = period
        }
    }

    public struct Pids: Codable, Sendable, Hashable {
        public var limit: Int64

        public init(limit: Int64) { self.limit = limit }
    }
}

/// `linux.seccomp`.
public struct Seccomp: Codable, Sendable, Hashable {
    /// e.g. `SCMP_ACT_ERRNO`, `SCMP_ACT_ALLOW`.
    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    public var architectures: [String]?
    public var flags: [String]?
    public var syscalls: [Syscall]?

    public init(defaultAction: String, architectures: [String]? = nil, syscalls: [Syscall]? = nil) {
        self.defaultAction = defaultAction
        self.architectures = architectures
        self.syscalls = syscalls
    }

    public struct Syscall: Codable, Sendable, Hashable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [Arg]?

        public init(names: [String], action: String, errnoRet: UInt32? = nil, args: [Arg]? = nil) {
            self.names = names
            self.action = action
            self.errnoRet = errnoRet
            self.args = args
        }
    }

    public struct Arg: Codable, Sendable, Hashable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64?
        /// `SCMP_CMP_EQ`, `SCMP_CMP_MASKED_EQ`, ...
        public var op: String

        public init(index: UInt32, value: UInt64, valueTwo: UInt64? = nil, op: String) {
            self.index = index
            self.value = value
            self.valueTwo = valueTwo
            self.op = op
        }
    }
}
