// swift-tools-version: 6.0
// A Kata-Containers-style containerd shim v2 in Swift. See README.md "Architecture" for the layout.
import PackageDescription

let strict: [SwiftSetting] = [.unsafeFlags(["-warnings-as-errors"])]

var targets: [Target] = [
    // C libraries and our own small C layer.
    .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c",
                   providers: [.apt(["libprotobuf-c-dev"])]),
    .target(name: "CProtocols", dependencies: ["CProtobufC"],
            cSettings: [.headerSearchPath("include")]),
    .target(name: "CLinux", cSettings: [.define("_GNU_SOURCE")]),
    .target(name: "CSeccomp", cSettings: [.define("_GNU_SOURCE")], linkerSettings: [.linkedLibrary("seccomp")]),

    // Swift libraries, dependencies pointing one way.
    .target(name: "SystemKit", dependencies: ["CLinux"], swiftSettings: strict),
    .target(name: "Protocols", dependencies: ["CProtocols", "CProtobufC"], swiftSettings: strict),
    .target(name: "TTRPC", dependencies: ["SystemKit", "Protocols"], swiftSettings: strict),

    .target(name: "JSON", swiftSettings: strict),
    .target(name: "QEMU", dependencies: ["SystemKit", "JSON"], swiftSettings: strict),
    .target(name: "OCI", dependencies: ["JSON"], swiftSettings: strict),
    .target(name: "AgentClient", dependencies: ["TTRPC", "Protocols", "SystemKit"], swiftSettings: strict),
    .target(name: "GuestAgent", dependencies: ["SystemKit", "Protocols", "TTRPC", "CLinux", "CSeccomp", "OCI"], swiftSettings: strict),
    .target(name: "EchoService", dependencies: ["TTRPC", "Protocols"], swiftSettings: strict),

    // Executables.
    .executableTarget(name: "ttrpc-peer", dependencies: ["TTRPC", "SystemKit", "Protocols", "EchoService"],
                      swiftSettings: strict),

    .executableTarget(name: "kata-agent", dependencies: ["GuestAgent", "SystemKit", "CLinux"], swiftSettings: strict),

    .executableTarget(name: "kata-bench", dependencies: ["QEMU", "AgentClient", "SystemKit", "OCI", "Protocols"], swiftSettings: strict),

    // Tests.
    .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
    .testTarget(name: "ProtocolsTests", dependencies: ["Protocols", "TestSupport"], swiftSettings: strict),
    .testTarget(name: "SystemKitTests", dependencies: ["SystemKit"], swiftSettings: strict),
    .testTarget(name: "OCITests", dependencies: ["OCI", "JSON", "SystemKit"], exclude: ["Fixtures"], swiftSettings: strict),
    .testTarget(name: "GuestAgentTests", dependencies: ["GuestAgent", "SystemKit"], swiftSettings: strict),
    .testTarget(name: "VMTests", dependencies: ["QEMU", "AgentClient", "Protocols", "SystemKit", "TTRPC", "OCI", "JSON", "TestSupport"],
                swiftSettings: strict),
    .testTarget(name: "TTRPCTests", dependencies: ["TTRPC", "SystemKit", "Protocols", "EchoService", "TestSupport"],
                swiftSettings: strict),
]

// The libFuzzer harness links no main of its own; it is built only by `make fuzz-ttrpc`.
if Context.environment["KATA_FUZZ"] != nil {
    targets.append(.target(name: "FuzzSupport", path: "Tests/FuzzSupport"))
    targets.append(.executableTarget(name: "ttrpc-fuzz", dependencies: ["TTRPC", "Protocols", "FuzzSupport"],
                                     path: "Tests/Fuzz",
                                     swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
}

let package = Package(
    name: "kata-swift",
    products: [
        .executable(name: "ttrpc-peer", targets: ["ttrpc-peer"]),
        .executable(name: "kata-agent", targets: ["kata-agent"]),
    ],
    targets: targets,
    swiftLanguageModes: [.v6]
)
