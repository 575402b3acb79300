import Protocols
import TTRPC
import Testing

@Suite struct FrameDecoderTests {
    let stateRequest = Frame.encode(streamID: 1, type: .request, data: Array(repeating: 0x61, count: 0x53))

    @Test func headerIsBigEndianAndTenBytes() {
        let f = Frame.encode(streamID: 0x01020304, type: .response, flags: 0x05, data: [0xaa, 0xbb])
        #expect(f == [0, 0, 0, 2, 1, 2, 3, 4, 2, 5, 0xaa, 0xbb])
    }

    @Test func decodesAFrameSplitAtEveryByte() {
        for cut in 0...stateRequest.count {
            var d = FrameDecoder()
            d.append(Array(stateRequest[..<cut]))
            if cut < stateRequest.count { #expect(d.next() == nil) }
            d.append(Array(stateRequest[cut...]))
            #expect(d.next() == .frame(FrameHeader(length: 0x53, streamID: 1, type: .request, flags: 0), Array(repeating: 0x61, count: 0x53)))
            #expect(d.next() == nil)
            #expect(d.bufferedBytes == 0)
        }
    }

    @Test func decodesManyFramesFromOneChunkIncludingEmptyOnes() {
        var bytes: [UInt8] = []
        for i in 0..<100 { bytes += Frame.encode(streamID: UInt32(2 * i + 1), type: .response, data: i % 2 == 0 ? [] : [UInt8(i)]) }
        var d = FrameDecoder()
        d.append(bytes)
        var ids: [UInt32] = []
        while case .frame(let h, let data)? = d.next() {
            ids.append(h.streamID)
            #expect(data.count == Int(h.length))
        }
        #expect(ids == (0..<100).map { UInt32(2 * $0 + 1) })
    }

    @Test func frameExactlyAtTheLimitIsAccepted() {
        var d = FrameDecoder()
        d.append(Frame.encode(streamID: 1, type: .request, data: [UInt8](repeating: 7, count: Frame.maxDataLength)))
        guard case .frame(let h, let data)? = d.next() else { Issue.record("no frame"); return }
        #expect(Int(h.length) == Frame.maxDataLength && data.count == Frame.maxDataLength)
    }

    @Test func oversizedFrameIsReportedThenSkippedWithoutBuffering() {
        var d = FrameDecoder()
        let big = Frame.maxDataLength + 1
        var header = Frame.encode(streamID: 3, type: .request, data: [])
        header[0] = UInt8(big >> 24); header[1] = UInt8((big >> 16) & 0xff); header[2] = UInt8((big >> 8) & 0xff); header[3] = UInt8(big & 0xff)
        d.append(header)
        #expect(d.next() == .oversized(FrameHeader(length: UInt32(big), streamID: 3, type: .request, flags: 0)))
        // Feed the body in 1 MiB chunks: nothing is buffered while discarding.
        var left = big
        while left > 0 {
            let n = min(left, 1 << 20)
            d.append([UInt8](repeating: 0xee, count: n))
            #expect(d.next() == nil)
            #expect(d.bufferedBytes == 0)
            left -= n
        }
        #expect(d.pendingDiscard == 0)
        d.append(Frame.encode(streamID: 5, type: .request, data: [1, 2]))
        #expect(d.next() == .frame(FrameHeader(length: 2, streamID: 5, type: .request, flags: 0), [1, 2]))
    }

    @Test func maximalLengthCostsNoMemory() {
        var d = FrameDecoder()
        d.append([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0] + [UInt8](repeating: 0, count: 1000))
        #expect(d.next() == .oversized(FrameHeader(length: 0xffff_ffff, streamID: 1, type: .request, flags: 0)))
        #expect(d.bufferedBytes == 0)
        #expect(d.pendingDiscard == 0xffff_ffff - 1000)
    }

    @Test func partialHeaderWaits() {
        var d = FrameDecoder()
        d.append([0, 0, 0])
        #expect(d.next() == nil)
        #expect(d.bufferedBytes == 3)
    }

    /// The one-copy success frame is byte-identical to packing Response{payload} through
    /// protobuf-c, at every varint length boundary, and refuses what would exceed 4 MiB.
    @Test func successResponseFastPathMatchesProtobufC() {
        for size in [0, 1, 127, 128, 16383, 16384, 2_097_151, 2_097_152, Frame.maxDataLength - 5] {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let slow = Frame.encode(streamID: 7, type: .response, data: TTRPCWire.Response(payload: payload).serializedBytes())
            #expect(Frame.encodeSuccessResponse(streamID: 7, payload: payload) == slow, "size \(size)")
        }
        #expect(Frame.encodeSuccessResponse(streamID: 1, payload: [UInt8](repeating: 0, count: Frame.maxDataLength - 4)) == nil)
    }
}
