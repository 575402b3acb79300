import OCI
import SystemKit
import Testing

let fixtures: String = {
    var path = #filePath
    path = String(path[..<path.lastIndex(of: "/")!])
    return path + "/Fixtures"
}()

func fixture(_ name: String) throws -> [UInt8] {
    try #require(TextFile.readBytes(fixtures + "/" + name), "fixture \(name) missing")
}

@Suite struct SpecTests {
    /// The spec `ctr oci spec` (containerd 1.6.20, Debian) prints: what every ctr-created bundle
    /// starts from.
    @Test func decodesContainerdsDefaultSpec() throws {
        let spec = try Spec.decode(try fixture("containerd-1.6-default-spec.json"))
        #expect(spec.ociVersion == "1.0.2-dev")
        let process = try #require(spec.process)
        #expect(process.user.uid == 0 && process.user.gid == 0 && process.cwd == "/")
        #expect(process.capabilities?.bounding?.contains("CAP_NET_BIND_SERVICE") == true)
        #expect(process.rlimits == [Process.Rlimit(type: "RLIMIT_NOFILE", hard: 1024, soft: 1024)])
        #expect(process.noNewPrivileges == true)
        #expect(spec.root == Root(path: "rootfs"))
        #expect(spec.mounts?.first == Mount(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]))
        let linux = try #require(spec.linux)
        #expect(linux.namespaces?.map(\.type) == ["pid", "ipc", "uts", "mount", "network"])
        #expect(linux.namespace("network")?.path == nil)
        #expect(linux.resources?.devices?.first?.allow == false)
        #expect(linux.maskedPaths?.contains("/proc/kcore") == true)
        #expect(linux.readonlyPaths?.contains("/proc/sys") == true)
        #expect(spec.containerType == .sandbox && spec.sandboxID == nil)
    }

    @Test func decodesACRIContainerWithResourcesAndSeccomp() throws {
        let json = Array("""
        {"ociVersion":"1.1.0","process":{"terminal":true,"consoleSize":{"height":40,"width":120},
         "user":{"uid":1000,"gid":1000,"additionalGids":[10,20],"umask":18},"args":["sh","-c","echo hi"],
         "env":["PATH=/bin"],"cwd":"/work","oomScoreAdj":-998},
         "root":{"path":"/run/kata-containers/shared/containers/c1/rootfs","readonly":true},
         "hostname":"pod","annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"sb1"},
         "linux":{"cgroupsPath":"/kubepods/pod1/c1","namespaces":[{"type":"network","path":"/proc/1/ns/net"},{"type":"pid"}],
          "resources":{"memory":{"limit":67108864},"cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0"},"pids":{"limit":64}},
          "seccomp":{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
           "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                       {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]},
          "futureField":{"ignored":true}},
         "unknownTopLevel":[1,2,3]}
        """.utf8)
        let spec = try Spec.decode(json)
        #expect(spec.containerType == .container && spec.sandboxID == "sb1")
        #expect(spec.process?.user.additionalGids == [10, 20] && spec.process?.user.umask == 18)
        #expect(spec.process?.consoleSize == Process.Box(height: 40, width: 120))
        #expect(spec.process?.oomScoreAdj == -998)
        #expect(spec.root?.readonly == true)
        #expect(spec.linux?.namespace("network")?.path == "/proc/1/ns/net")
        #expect(spec.linux?.resources?.memory?.limit == 64 << 20)
        #expect(spec.linux?.resources?.cpu == Resources.CPU(shares: 512, quota: 50000, period: 100000).with(cpus: "0"))
        #expect(spec.linux?.resources?.pids?.limit == 64)
        let seccomp = try #require(spec.linux?.seccomp)
        #expect(seccomp.syscalls?.first == Seccomp.Syscall(names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 1))
        #expect(seccomp.syscalls?.last?.args?.first?.op == "SCMP_CMP_EQ")
        // Encoding and decoding again gives the same value.
        #expect(try Spec.decode(spec.encoded()) == spec)
    }

    @Test func errorsNameThePath() {
        #expect(throws: SpecError(message: "invalid OCI spec: process.user.uid: Expected to decode UInt32 but found a string instead.")) {
            _ = try Spec.decode(Array(#"{"ociVersion":"1","process":{"user":{"uid":"root","gid":0},"cwd":"/"}}"#.utf8))
        }
        do {
            _ = try Spec.decode(Array(#"{"process":{"user":{"uid":0,"gid":0},"cwd":"/"}}"#.utf8))
            Issue.record("accepted a spec without ociVersion")
        } catch {
            #expect(error.message == "invalid OCI spec: ociVersion is required")
        }
        #expect(throws: SpecError.self) { _ = try Spec.decode(Array("{not json".utf8)) }
        do {
            _ = try Process.decode(Array(#"{"user":{"uid":0,"gid":0},"args":["x"],"cwd":"/","rlimits":[{"type":"RLIMIT_NOFILE","soft":1}]}"#.utf8))
            Issue.record("accepted an rlimit without hard")
        } catch {
            #expect(error.message == "invalid OCI spec: rlimits[0].hard is required")
        }
    }

    @Test func execProcessAndUpdateResourcesDecode() throws {
        let p = try Process.decode(Array(#"{"user":{"uid":0,"gid":0},"args":["true"],"env":["A=1"],"cwd":"/","terminal":false}"#.utf8))
        #expect(p.args == ["true"] && p.env == ["A=1"] && p.terminal == false)
        let r = try Resources.decode(Array(#"{"memory":{"limit":1048576,"swap":-1},"pids":{"limit":10}}"#.utf8))
        #expect(r.memory?.limit == 1 << 20 && r.memory?.swap == -1 && r.pids == Resources.Pids(limit: 10))
    }
}

extension Resources.CPU {
    func with(cpus: String) -> Resources.CPU {
        var c = self
        c.cpus = cpus
        return c
    }
}
