import SystemKit

/// The agent's settings, read from the kernel command line (`agent.*` parameters, as Kata's
/// agent does), so the host configures the guest without a config file.
///
/// - `agent.log=debug|info|warning|error`
/// - `agent.channel=NAME` the virtio-serial port name (default `agent.channel.0`), or `vsock`
/// - `agent.channel_timeout=SECONDS` how long to wait for the channel before powering off
public struct AgentOptions: Sendable, Equatable {
    public var logLevel = Logger.Level.info
    public var channel = AgentChannel.portName
    public var channelTimeoutSeconds = 30
    /// Parameters that looked like ours but could not be used, for a warning.
    public var rejected: [String] = []

    public init() {}

    public init(commandLine: String) {
        for word in commandLine.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let kv = word.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, kv[0].hasPrefix("agent.") else { continue }
            switch kv[0] {
            case "agent.log":
                switch kv[1] {
                case "debug": logLevel = .debug
                case "info": logLevel = .info
                case "warning", "warn": logLevel = .warning
                case "error": logLevel = .error
                default: rejected.append(String(word))
                }
            case "agent.channel":
                channel = kv[1]
            case "agent.channel_timeout":
                if let n = Int(kv[1]), n > 0 { channelTimeoutSeconds = n } else { rejected.append(String(word)) }
            default:
                rejected.append(String(word))
            }
        }
    }
}


