// libFuzzer target for the ttRPC frame parser and request decoding (`make fuzz-ttrpc`).
//
// The input is split into chunks whose sizes come from the input itself, fed to a
// FrameDecoder as a socket would deliver them; every frame is decoded as a ttrpc.Request, its
// payload as a message type chosen by the frame's flags byte, and every decoded value must
// survive an encode/decode round trip unchanged. Crashes, sanitizer reports and failed
// round trips are findings.
import FuzzSupport
import Protocols
import TTRPC

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var decoder = FrameDecoder(maxDataLength: 1 << 16)
    var offset = 0
    var chunkSelector = 0
    while offset < bytes.count {
        let want = 1 + Int(bytes[chunkSelector % bytes.count]) % 97
        chunkSelector += 1
        let end = min(bytes.count, offset + want)
        decoder.append(Array(bytes[offset..<end]))
        offset = end
        while let output = decoder.next() {
            guard case .frame(let header, let body) = output else { continue }
            check(TTRPCWire.Request.self, body)
            if let request = try? TTRPCWire.Request(serializedBytes: body) {
                let type = allProtoMessageTypes[Int(header.flags) % allProtoMessageTypes.count]
                check(type, request.payload)
            }
            check(TTRPCWire.Response.self, body)
        }
    }
    precondition(decoder.bufferedBytes <= (1 << 16) + Frame.headerLength + 97, "decoder buffered too much")
    return 0
}

func check<M: ProtoMessage>(_: M.Type, _ bytes: [UInt8]) {
    guard let value = try? M(serializedBytes: bytes) else { return }
    let again = try? M(serializedBytes: value.serializedBytes())
    precondition(again == value, "\(M.protoName) does not survive a round trip")
}

// SwiftPM links executables with `main` aliased to `<module>_main`; libFuzzer's own main would
// collide with it, so the fuzzer runs from libclang_rt.fuzzer_no_main's driver.
@_cdecl("ttrpc_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var vector = argv
    return withUnsafeMutablePointer(to: &vector) { v in
        v.withMemoryRebound(to: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?.self, capacity: 1) { _ in
            LLVMFuzzerRunDriver(&count, UnsafeMutablePointer(mutating: v).withMemoryRebound(
                to: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?.self, capacity: 1) { $0 }) { data, size in
                fuzz(data!, size)
            }
        }
    }
}
