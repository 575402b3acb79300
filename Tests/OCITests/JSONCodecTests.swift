import JSON
import OCI
import Testing

@Suite struct JSONCodecTests {
    func parse(_ s: String) throws -> JSONValue { try JSONValue(parsing: Array(s.utf8)) }

    @Test func parsesTheGrammar() throws {
        #expect(try parse(#" {"a": [1, -2.5e3, true, false, null], "b": {}} "#)
                == .object(["a": .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null]), "b": .object([:])]))
        #expect(try parse(#""tab\tquote\"slash\/nl\n\u00e9\ud83d\ude00""#) == .string("tab\tquote\"slash/nl\né😀"))
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "tru", "\"\\x\"", "\"a", "[1] 2", "\"\u{01}\""])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONParseError.self) { _ = try JSONValue(parsing: Array(text.utf8)) }
    }

    @Test func rejectsDeepNesting() {
        let deep = String(repeating: "[", count: 1000) + String(repeating: "]", count: 1000)
        #expect(throws: JSONParseError.self) { _ = try JSONValue(parsing: Array(deep.utf8)) }
    }

    @Test func serialisesSortedAndEscaped() throws {
        let v: JSONValue = ["b": .string("x\"\n\u{01}"), "a": 1]
        #expect(v.description == #"{"a":1,"b":"x\"\n\u0001"}"#)
        #expect(try JSONValue(parsing: v.serialized()) == v)
        #expect(v["a"]?.int == 1 && v["b"]?.string == "x\"\n\u{01}" && v["c"] == nil)
    }

    @Test func integersAreCheckedForRange() {
        #expect(throws: DecodingError.self) {
            _ = try JSONValueDecoder.decode(Process.User.self, from: Array(#"{"uid":-1,"gid":0}"#.utf8))
        }
        #expect(throws: DecodingError.self) {
            _ = try JSONValueDecoder.decode(Process.User.self, from: Array(#"{"uid":4294967296,"gid":0}"#.utf8))
        }
        #expect((try? JSONValueDecoder.decode(Process.User.self, from: Array(#"{"uid":1e3,"gid":0}"#.utf8)))?.uid == 1000)
    }
}
