#if canImport(Glibc)
import Glibc
#endif
import GuestAgent
import SystemKit
import Testing

@Suite struct AgentOptionsTests {
    @Test func defaults() {
        let o = AgentOptions(commandLine: "console=ttyS0 quiet panic=-1")
        #expect(o == AgentOptions())
        #expect(o.channel == "agent.channel.0" && o.channelTimeoutSeconds == 30 && o.logLevel == .info)
    }

    @Test func parsesAgentParameters() {
        let o = AgentOptions(commandLine: "console=ttyS0 agent.log=debug agent.channel=vsock agent.channel_timeout=3\n")
        #expect(o.logLevel == .debug && o.channel == "vsock" && o.channelTimeoutSeconds == 3 && o.rejected.isEmpty)
    }

    @Test func rejectsWhatItCannotUse() {
        let o = AgentOptions(commandLine: "agent.log=loud agent.channel_timeout=-1 agent.unknown=1 agentx=2")
        #expect(o.rejected == ["agent.log=loud", "agent.channel_timeout=-1", "agent.unknown=1"])
        #expect(o.logLevel == .info && o.channelTimeoutSeconds == 30)
    }
}

@Suite struct LoggerTests {
    @Test func quotesOnlyWhenNeeded() {
        #expect(Logger.quote("plain") == "plain")
        #expect(Logger.quote("two words") == "\"two words\"")
        #expect(Logger.quote("a=b") == "\"a=b\"")
        #expect(Logger.quote("") == "\"\"")
        #expect(Logger.quote("say \"hi\"\n") == "\"say \\\"hi\\\"\\n\"")
    }

    @Test func writesOneLogfmtLine() throws {
        let pipe = try FileDescriptor.pipe()
        let r = pipe.first, w = pipe.second
        let log = Logger(fd: w.rawValue, fields: [("source", "agent")])
        log.debug("hidden")
        log.info("host connected", ("connection", "1"))
        w.close()
        var buf = [UInt8](repeating: 0, count: 512)
        let n = read(r.rawValue, &buf, buf.count)
        let line = String(decoding: buf[0..<max(0, n)], as: UTF8.self)
        #expect(line.hasPrefix("time=") && line.hasSuffix(" level=info msg=\"host connected\" source=agent connection=1\n"), "\(line)")
        #expect(line.split(separator: "\n").count == 1)
    }
}
