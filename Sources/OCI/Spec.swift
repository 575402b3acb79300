import JSON

/// The OCI runtime spec (`config.json`, runtime-spec 1.0/1.1) as Swift values: what the shim
/// reads from the bundle and what the agent applies in the guest.
///
/// Decoding is lenient the way runc is: unknown keys are ignored, every optional member of the
/// spec is optional here. Plain values, `Sendable`. JSON is handled by the module's own codec
/// (no Foundation: the guest agent links this).
public struct Spec: Codable, Sendable, Hashable {
    public var ociVersion: String
    public var process: Process?
    public var root: Root?
    public var hostname: String?
    public var domainname: String?
    public var mounts: [Mount]?
    public var annotations: [String: String]?
    public var linux: Linux?

    public init(ociVersion: String = "1.0.2", process: Process? = nil, root: Root? = nil, hostname: String? = nil,
                mounts: [Mount]? = nil, annotations: [String: String]? = nil, linux: Linux? = nil) {
        self.ociVersion = ociVersion
        self.process = process
        self.root = root
        self.hostname = hostname
        self.mounts = mounts
        self.annotations = annotations
        self.linux = linux
    }

    /// Decodes `config.json` bytes. Errors name the JSON path that failed.
    public static func decode(_ json: [UInt8]) throws(SpecError) -> Spec {
        try decodeJSON(Spec.self, json)
    }

    /// The JSON encoding (keys sorted, so equal specs give equal bytes).
    public func encoded() -> [UInt8] { encodeJSON(self) }
}

/// `process`.
public struct Process: Codable, Sendable, Hashable {
    public var terminal: Bool?
    public var consoleSize: Box?
    public var user: User
    public var args: [String]?
    public var env: [String]?
    public var cwd: String
    public var capabilities: Capabilities?
    public var rlimits: [Rlimit]?
    public var noNewPrivileges: Bool?
    public var apparmorProfile: String?
    public var oomScoreAdj: Int?
    public var selinuxLabel: String?

    public init(user: User = User(), args: [String], env: [String]? = nil, cwd: String = "/", terminal: Bool? = nil) {
        self.user = user
        self.args = args
        self.env = env
        self.cwd = cwd
        self.terminal = terminal
    }

    /// Decodes a `specs.Process` (what containerd sends for an exec).
    public static func decode(_ json: [UInt8]) throws(SpecError) -> Process {
        try decodeJSON(Process.self, json)
    }

    public struct Box: Codable, Sendable, Hashable {
        public var height: UInt32
        public var width: UInt32

        public init(height: UInt32, width: UInt32) {
            self.height = height
            self.width = width
        }
    }

    public struct User: Codable, Sendable, Hashable {
        public var uid: UInt32
        public var gid: UInt32
        public var umask: UInt32?
        public var additionalGids: [UInt32]?
        public var username: String?

        public init(uid: UInt32 = 0, gid: UInt32 = 0, additionalGids: [UInt32]? = nil) {
            self.uid = uid
            self.gid = gid
            self.additionalGids = additionalGids
        }
    }

    public struct Capabilities: Codable, Sendable, Hashable {
        public var bounding: [String]?
        public var effective: [String]?
        public var inheritable: [String]?
        public var permitted: [String]?
        public var ambient: [String]?

        public init(bounding: [String]? = nil, effective: [String]? = nil, inheritable: [String]? = nil,
                    permitted: [String]? = nil, ambient: [String]? = nil) {
            self.bounding = bounding
            self.effective = effective
            self.inheritable = inheritable
            self.permitted = permitted
            self.ambient = ambient
        }
    }

    public struct Rlimit: Codable, Sendable, Hashable {
        public var type: String
        public var hard: UInt64
        public var soft: UInt64

        public init(type: String, hard: UInt64, soft: UInt64) {
            self.type = type
            self.hard = hard
            self.soft = soft
        }
    }
}

/// `root`.
public struct Root: Codable, Sendable, Hashable {
    public var path: String
    public var readonly: Bool?

    public init(path: String, readonly: Bool? = nil) {
        self.path = path
        self.readonly = readonly
    }
}

/// One entry of `mounts`.
public struct Mount: Codable, Sendable, Hashable {
    public var destination: String
    public var type: String?
    public var source: String?
    public var options: [String]?

    public init(destination: String, type: String? = nil, source: String? = nil, options: [String]? = nil) {
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options
    }
}

/// Decoding failed: the reason, with the JSON path of the offending value.
public struct SpecError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

func decodeJSON<T: Decodable>(_: T.Type, _ json: [UInt8]) throws(SpecError) -> T {
    do {
        return try JSONValueDecoder.decode(T.self, from: json)
    } catch let DecodingError.typeMismatch(_, context) {
        throw SpecError(message: "invalid OCI spec: \(path(context)): \(context.debugDescription)")
    } catch let DecodingError.keyNotFound(key, context) {
        throw SpecError(message: "invalid OCI spec: \(path(context, key)) is required")
    } catch let DecodingError.valueNotFound(_, context) {
        throw SpecError(message: "invalid OCI spec: \(path(context)) must not be null")
    } catch let DecodingError.dataCorrupted(context) {
        throw SpecError(message: "invalid OCI spec: \(path(context)): \(context.debugDescription)")
    } catch {
        throw SpecError(message: "invalid OCI spec: \(error)")
    }
}

func encodeJSON<T: Encodable>(_ value: T) -> [UInt8] {
    JSONValueEncoder.encode(value)
}

private func path(_ context: DecodingError.Context, _ key: (any CodingKey)? = nil) -> String {
    let keys = context.codingPath + (key.map { [$0] } ?? [])
    let parts = keys.map { k in k.intValue.map { "[\($0)]" } ?? ".\(k.stringValue)" }
    return parts.isEmpty ? "(top level)" : String(parts.joined().drop(while: { $0 == "." }))
}

extension Process {
    /// The JSON encoding (what an exec request carries).
    public func encoded() -> [UInt8] { encodeJSON(self) }
}

extension Resources {
    /// The JSON encoding (what an update request carries).
    public func encoded() -> [UInt8] { encodeJSON(self) }
}
