#if canImport(Glibc)
import Glibc
#endif
import CLinux
@testable import GuestAgent
import Protocols
import SystemKit
import TTRPC
import Testing

/// Container output spliced from its pipe into the ttRPC connection, end to end on the host:
/// exact bytes in order across many reads, EOF only once the writer is gone and the pipe is
/// drained, and a removed stream answering at once.
@Suite struct PipeOutputTests {
    /// Writes `data` into `fd` without blocking a thread, then closes it.
    static func feed(_ fd: CInt, _ data: [UInt8]) async throws {
        defer { close(fd) }
        var offset = 0
        while offset < data.count {
            let n = try data.withUnsafeBytes { buf throws(Errno) in
                try writeNonBlocking(fd, from: UnsafeRawBufferPointer(rebasing: buf[offset...]))
            }
            if n == 0 { try await Reactor.shared.wait(for: .writable, on: fd) }
            offset += n
        }
    }

    @Test func splicedOutputArrivesByteExactAndEndsAfterTheWriter() async throws {
        ignoreSIGPIPE()
        let pipe = try FileDescriptor.pipe()
        let writeEnd = pipe.second.take()
        _ = cl_set_pipe_size(writeEnd, 1 << 20)
        _ = cl_set_nonblocking(writeEnd, 1)
        let output = try PipeOutput(taking: pipe.first)
        let server = TTRPCServer()
        server.registerBody(AgentAPI.AgentService.readStdout) { req, _ in await output.responseBody(max: Int(req.len)) }
        let sockets = try UnixSocket.pair()
        try server.serve(connection: sockets.first)
        let client = try TTRPCClient(taking: sockets.second)
        defer { client.close() }

        let data = (0..<(10 << 20) + 12345).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 13) }
        let writer = Task { try await Self.feed(writeEnd, data) }
        var got: [UInt8] = []
        var reads = 0
        while true {
            // Odd lengths: chunk boundaries never line up with the writer's.
            let chunk = try await client.call(AgentAPI.AgentService.readStdout,
                                              AgentAPI.ReadStreamRequest(len: UInt32(777_777 + reads % 3))).data
            if chunk.isEmpty { break }
            #expect(chunk.count <= 777_779)
            got += chunk
            reads += 1
        }
        try await writer.value
        #expect(got.count == data.count)
        #expect(got == data, "spliced bytes differ")
        await output.waitForEOF()  // returns: the writer is gone
        // After EOF every read answers empty at once, and after closing too.
        #expect(try await client.call(AgentAPI.AgentService.readStdout, AgentAPI.ReadStreamRequest(len: 10)).data.isEmpty)
        output.closeFD()
        #expect(try await client.call(AgentAPI.AgentService.readStdout, AgentAPI.ReadStreamRequest(len: 10)).data.isEmpty)
    }

    /// Two readers on one stream at once: splices are serialised (the second waits for the
    /// first to finish), none is lost, and both see the end.
    @Test(.timeLimit(.minutes(1))) func concurrentReadersShareTheStreamWithoutLosingBytes() async throws {
        ignoreSIGPIPE()
        let pipe = try FileDescriptor.pipe()
        let writeEnd = pipe.second.take()
        _ = cl_set_nonblocking(writeEnd, 1)
        let output = try PipeOutput(taking: pipe.first)
        // Handlers on the pool: readers and splice completions then really run in parallel.
        var options = TTRPCServer.Options()
        options.handlerExecutor = .globalPool
        let server = TTRPCServer(options: options)
        server.registerBody(AgentAPI.AgentService.readStdout) { req, _ in await output.responseBody(max: Int(req.len)) }
        let sockets = try UnixSocket.pair()
        try server.serve(connection: sockets.first)
        let client = try TTRPCClient(taking: sockets.second)
        defer { client.close() }

        let data = [UInt8](repeating: 0x5a, count: 3 << 20)
        let writer = Task { try await Self.feed(writeEnd, data) }
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    var n = 0
                    while true {
                        let chunk = try await client.call(AgentAPI.AgentService.readStdout, AgentAPI.ReadStreamRequest(len: 65536)).data
                        if chunk.isEmpty { return n }
                        n += chunk.count
                    }
                }
            }
            var all: [Int] = []
            for try await n in group { all.append(n) }
            return all
        }
        try await writer.value
        #expect(counts.reduce(0, +) == data.count)
    }
}
