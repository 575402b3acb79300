#if canImport(Glibc)
import Glibc
#endif
import SystemKit

/// The guest end of the host ⇄ agent channel.
public enum AgentChannel {
    /// The virtio-serial port name QEMU is given (`virtserialport,name=…`).
    public static let portName = "agent.channel.0"

    /// The device node of the virtio-serial port called `name`, found through sysfs (the guest
    /// has no udev): `/sys/class/virtio-ports/vportNpM/name` holds the name.
    public static func findPort(named name: String = portName) -> String? {
        for port in TextFile.directoryEntries("/sys/class/virtio-ports") ?? [] where port.hasPrefix("vport") {
            let text = TextFile.read("/sys/class/virtio-ports/\(port)/name") ?? ""
            if text.trimmingCharacters(in: .newlines) == name { return "/dev/\(port)" }
        }
        return nil
    }

    /// Whether a virtio-vsock device is bound (the module alone creates /dev/vsock, which says
    /// nothing about a host on the other side).
    public static func vsockDevicePresent() -> Bool {
        (TextFile.directoryEntries("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport") ?? []).contains { $0.hasPrefix("virtio") }
    }

    /// Opens the port non-blocking.
    public static func open(_ path: String) throws(Errno) -> FileDescriptor {
        try FileDescriptor.open(path, O_RDWR | O_NONBLOCK)
    }

    /// Whether the host side is connected: a virtio port reports POLLHUP while it is not.
    public static func hostConnected(_ fd: CInt) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 0) >= 0 else { return false }
        return p.revents & Int16(POLLHUP) == 0
    }
}

extension String {
    func trimmingCharacters(in set: CharacterSetLite) -> String {
        var s = Substring(self)
        while let l = s.last, set.contains(l) { s.removeLast() }
        while let f = s.first, set.contains(f) { s.removeFirst() }
        return String(s)
    }
}

/// The tiny subset of character sets the agent needs without Foundation.
public struct CharacterSetLite: Sendable {
    let characters: Set<Character>
    func contains(_ c: Character) -> Bool { characters.contains(c) }
    public static let newlines = CharacterSetLite(characters: ["\n", "\r"])
    public static let whitespacesAndNewlines = CharacterSetLite(characters: [" ", "\t", "\n", "\r"])
}
