// ttrpc-peer: the Swift side of the ttRPC demo, interoperability tests and benchmark.
//
//   ttrpc-peer serve --socket PATH [--require-same-user]   serve kata.echo.v1.Echo until killed
//   ttrpc-peer call --socket PATH [--payload TEXT] [--timeout-ms N]
//                                                         one Echo call; prints the payload
#if canImport(Glibc)
import Glibc
#endif
import EchoService
import Protocols
import SystemKit
import TTRPC

func say(_ text: String) { TextFile.writeLine(text) }

func fail(_ text: String) -> Never {
    TextFile.writeLine("ttrpc-peer: " + text, to: 2)
    exit(2)
}

struct Arguments {
    var command = ""
    var values: [String: String] = [:]
    var flags: Set<String> = []

    init(_ argv: [String]) {
        var rest = argv.dropFirst()
        command = rest.popFirst() ?? ""
        while let a = rest.popFirst() {
            guard a.hasPrefix("--") else { fail("unexpected argument \(a)") }
            let key = String(a.dropFirst(2))
            if let v = rest.first, !v.hasPrefix("--") {
                values[key] = v
                rest.removeFirst()
            } else {
                flags.insert(key)
            }
        }
    }

    func require(_ key: String) -> String {
        guard let v = values[key] else { fail("\(command): --\(key) is required") }
        return v
    }
}

@main
struct TTRPCPeer {
    static func main() async {
        ignoreSIGPIPE()
        let args = Arguments(CommandLine.arguments)
        switch args.command {
        case "serve":
            await serve(args)
        case "call":
            await call(args)
        default:
            fail("usage: ttrpc-peer serve|call --socket PATH")
        }
    }

    static func serve(_ args: Arguments) async {
        let path = args.require("socket")
        var options = TTRPCServer.Options()
        options.requireSameUser = args.flags.contains("require-same-user")
        let server = TTRPCServer(options: options)
        EchoService.register(on: server)
        do {
            try server.serve(listener: UnixSocket.listen(path: path, replacingStale: true))
        } catch {
            fail("serve \(path): \(error)")
        }
        say("serving \(path)")
        while true {
            try? await Task.sleep(for: .seconds(3600))
        }
    }

    static func call(_ args: Arguments) async {
        let path = args.require("socket")
        do {
            let client = try await TTRPCClient.connect(path: path)
            let timeout = args.values["timeout-ms"].flatMap(Int.init).map { Duration.milliseconds($0) }
            let response = try await client.call(EchoV1.EchoService.echo,
                                                 EchoV1.EchoRequest(payload: Array((args.values["payload"] ?? "hello").utf8)),
                                                 timeout: timeout)
            say(String(decoding: response.payload, as: UTF8.self))
            client.close()
        } catch {
            fail("call \(path): \(error)")
        }
    }
}
