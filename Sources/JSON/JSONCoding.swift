/// Decodes Codable values from JSON text or a `JSONValue`. Errors are the standard
/// `DecodingError`s with coding paths, worded like Foundation's; unknown keys are ignored.
public struct JSONValueDecoder: Decoder {
    let value: JSONValue
    public let codingPath: [any CodingKey]
    public var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(value: JSONValue, codingPath: [any CodingKey]) {
        self.value = value
        self.codingPath = codingPath
    }

    public static func decode<T: Decodable>(_: T.Type, from bytes: [UInt8]) throws -> T {
        let json: JSONValue
        do {
            json = try JSONParser.parse(bytes)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "The given data was not valid JSON: \(error.message)"))
        }
        return try T(from: JSONValueDecoder(value: json, codingPath: []))
    }

    public func container<Key: CodingKey>(keyedBy _: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw Self.mismatch([String: Int].self, value, codingPath) }
        return KeyedDecodingContainer(Keyed<Key>(members: members, codingPath: codingPath))
    }

    public func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let items) = value else { throw Self.mismatch([Int].self, value, codingPath) }
        return Unkeyed(items: items, codingPath: codingPath)
    }

    public func singleValueContainer() throws -> any SingleValueDecodingContainer {
        Single(value: value, codingPath: codingPath)
    }

    struct Index: CodingKey {
        let intValue: Int?
        var stringValue: String { "Index \(intValue ?? 0)" }
        init(_ i: Int) { intValue = i }
        init?(stringValue: String) { nil }
        init?(intValue: Int) { self.intValue = intValue }
    }

    static func decodeValue<T: Decodable>(_: T.Type, _ value: JSONValue, _ path: [any CodingKey]) throws -> T {
        switch T.self {
        case is String.Type:
            guard case .string(let s) = value else { throw mismatch(T.self, value, path) }
            return s as! T
        case is Bool.Type:
            guard case .bool(let b) = value else { throw mismatch(T.self, value, path) }
            return b as! T
        case is Double.Type:
            guard case .number(let n) = value, let d = Double(n) else { throw mismatch(T.self, value, path) }
            return d as! T
        case is Float.Type:
            guard case .number(let n) = value, let d = Float(n) else { throw mismatch(T.self, value, path) }
            return d as! T
        case let int as any FixedWidthInteger.Type:
            guard case .number(let n) = value else { throw mismatch(T.self, value, path) }
            guard let v = integer(int, n) else {
                throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "Number \(n) is not representable in \(T.self)."))
            }
            return v as! T
        default:
            return try T(from: JSONValueDecoder(value: value, codingPath: path))
        }
    }

    private static func integer<I: FixedWidthInteger>(_: I.Type, _ text: String) -> I? {
        if let v = I(text) { return v }
        // 1e3 or 5.0 are integers too, when exact.
        guard let d = Double(text), d == d.rounded(), let v = I(exactly: d) else { return nil }
        return v
    }

    static func mismatch(_ type: Any.Type, _ value: JSONValue, _ path: [any CodingKey]) -> DecodingError {
        if case .null = value {
            return .valueNotFound(type, .init(codingPath: path, debugDescription: "Expected \(type) value but found null instead."))
        }
        return .typeMismatch(type, .init(codingPath: path, debugDescription: "Expected to decode \(type) but found \(value.kind) instead."))
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let members: [String: JSONValue]
        let codingPath: [any CodingKey]
        var allKeys: [Key] { members.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

        private func member(_ key: Key) throws -> JSONValue {
            guard let v = members[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "No value associated with key \(key.stringValue)."))
            }
            return v
        }

        func decodeNil(forKey key: Key) throws -> Bool {
            if case .null = try member(key) { return true }
            return false
        }

        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            try JSONValueDecoder.decodeValue(T.self, try member(key), codingPath + [key])
        }

        func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
            guard let v = members[key.stringValue] else { return nil }
            if case .null = v { return nil }
            return try JSONValueDecoder.decodeValue(T.self, v, codingPath + [key])
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try JSONValueDecoder(value: try member(key), codingPath: codingPath + [key]).container(keyedBy: type)
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try JSONValueDecoder(value: try member(key), codingPath: codingPath + [key]).unkeyedContainer()
        }

        func superDecoder() throws -> any Decoder { JSONValueDecoder(value: .object(members), codingPath: codingPath) }
        func superDecoder(forKey key: Key) throws -> any Decoder { JSONValueDecoder(value: try member(key), codingPath: codingPath + [key]) }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let items: [JSONValue]
        let codingPath: [any CodingKey]
        var currentIndex = 0
        var count: Int? { items.count }
        var isAtEnd: Bool { currentIndex >= items.count }

        init(items: [JSONValue], codingPath: [any CodingKey]) {
            self.items = items
            self.codingPath = codingPath
        }

        private mutating func next() throws -> (JSONValue, [any CodingKey]) {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(Any.self, .init(codingPath: codingPath + [Index(currentIndex)], debugDescription: "Unkeyed container is at end."))
            }
            defer { currentIndex += 1 }
            return (items[currentIndex], codingPath + [Index(currentIndex)])
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, case .null = items[currentIndex] else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            let (v, path) = try next()
            return try JSONValueDecoder.decodeValue(T.self, v, path)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            let (v, path) = try next()
            return try JSONValueDecoder(value: v, codingPath: path).container(keyedBy: type)
        }

        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            let (v, path) = try next()
            return try JSONValueDecoder(value: v, codingPath: path).unkeyedContainer()
        }

        mutating func superDecoder() throws -> any Decoder {
            let (v, path) = try next()
            return JSONValueDecoder(value: v, codingPath: path)
        }
    }

    struct Single: SingleValueDecodingContainer {
        let value: JSONValue
        let codingPath: [any CodingKey]
        func decodeNil() -> Bool { if case .null = value { return true }; return false }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONValueDecoder.decodeValue(T.self, value, codingPath) }
    }
}

/// Encodes Codable values into `JSONValue` or JSON text (nil optionals are left out, like
/// Foundation's encoder).
public final class JSONValueEncoder: Encoder {
    public var codingPath: [any CodingKey] = []
    public var userInfo: [CodingUserInfoKey: Any] { [:] }
    fileprivate var result: Box = Box(.null)

    final class Box {
        var value: JSONValue
        var members: [(String, Box)]?
        var items: [Box]?
        init(_ v: JSONValue) { value = v }

        var json: JSONValue {
            if let members { return .object(Dictionary(members.map { ($0.0, $0.1.json) }, uniquingKeysWith: { $1 })) }
            if let items { return .array(items.map(\.json)) }
            return value
        }
    }

    /// JSON text for `value` (keys sorted); plain Codable structs cannot fail to encode.
    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        (try? json(value))?.serialized() ?? []
    }

    public static func json<T: Encodable>(_ value: T) throws -> JSONValue {
        let box = Box(.null)
        try encode(value, into: box)
        return box.json
    }

    fileprivate static func encode<T: Encodable>(_ value: T, into box: Box) throws {
        switch value {
        case let s as String: box.value = .string(s)
        case let b as Bool: box.value = .bool(b)
        case let d as Double: box.value = .number(d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d))
        case let f as Float: box.value = .number(String(f))
        case let i as any FixedWidthInteger: box.value = .number(String(describing: i))
        default:
            let e = JSONValueEncoder()
            e.result = box
            try value.encode(to: e)
        }
    }

    public func container<Key: CodingKey>(keyedBy _: Key.Type) -> KeyedEncodingContainer<Key> {
        if result.members == nil { result.members = [] }
        return KeyedEncodingContainer(Keyed<Key>(box: result, codingPath: codingPath))
    }

    public func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if result.items == nil { result.items = [] }
        return Unkeyed(box: result, codingPath: codingPath)
    }

    public func singleValueContainer() -> any SingleValueEncodingContainer { Single(box: result, codingPath: codingPath) }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let box: Box
        let codingPath: [any CodingKey]

        private func slot(_ key: Key) -> Box {
            let b = Box(.null)
            box.members!.removeAll { $0.0 == key.stringValue }
            box.members!.append((key.stringValue, b))
            return b
        }

        mutating func encodeNil(forKey key: Key) throws { _ = slot(key) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { try JSONValueEncoder.encode(value, into: slot(key)) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy _: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let b = slot(key)
            b.members = []
            return KeyedEncodingContainer(JSONValueEncoder.Keyed<NestedKey>(box: b, codingPath: codingPath + [key]))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let b = slot(key)
            b.items = []
            return Unkeyed(box: b, codingPath: codingPath + [key])
        }

        mutating func superEncoder() -> any Encoder { let e = JSONValueEncoder(); e.result = box; return e }
        mutating func superEncoder(forKey key: Key) -> any Encoder { let e = JSONValueEncoder(); e.result = slot(key); return e }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let box: Box
        let codingPath: [any CodingKey]
        var count: Int { box.items?.count ?? 0 }

        private func slot() -> Box {
            let b = Box(.null)
            box.items!.append(b)
            return b
        }

        mutating func encodeNil() throws { _ = slot() }
        mutating func encode<T: Encodable>(_ value: T) throws { try JSONValueEncoder.encode(value, into: slot()) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy _: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let b = slot()
            b.members = []
            return KeyedEncodingContainer(JSONValueEncoder.Keyed<NestedKey>(box: b, codingPath: codingPath))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let b = slot()
            b.items = []
            return Unkeyed(box: b, codingPath: codingPath)
        }

        mutating func superEncoder() -> any Encoder { let e = JSONValueEncoder(); e.result = slot(); return e }
    }

    struct Single: SingleValueEncodingContainer {
        let box: Box
        let codingPath: [any CodingKey]
        mutating func encodeNil() throws { box.value = .null }
        mutating func encode<T: Encodable>(_ value: T) throws { try JSONValueEncoder.encode(value, into: box) }
    }
}
