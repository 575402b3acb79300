#!/usr/bin/python3
"""Generates the Swift value types of the Protocols module from a protobuf FileDescriptorSet.

Input: the descriptor set protoc writes for Protos/ (plus the google well-known types it uses).
Output (into the directory given):
  Sources/Protocols/Generated/<file>.swift   one Swift struct per message, nested like the proto
  Sources/CProtocols/include/descriptors.h   C accessors returning each message's protobuf-c
  Sources/CProtocols/descriptors.c           descriptor (a stable address Swift can hold)

The Swift structs are plain values. Their conversions to and from protobuf-c's C structs are
driven by protobuf-c's own field descriptors (ProtoReader/ProtoWriter in the Protocols module): the
generated code only names each field's number and Swift type. Never edit the output by hand;
run `make protos`.
"""
import os
import sys

from google.protobuf import descriptor_pb2 as d

# Proto package -> Swift namespace (an enum holding the package's types).
NAMESPACES = {
    "ttrpc": "TTRPCWire",
    "google.protobuf": "GoogleProtobuf",
    "google.rpc": "GoogleRPC",
    "containerd.types": "ContainerdTypes",
    "containerd.v1.types": "ContainerdTaskTypes",
    "containerd.task.v2": "TaskV2",
    "containerd.events": "ContainerdEvents",
    "containerd.services.events.ttrpc.v1": "EventsTTRPCV1",
    "containerd.runc.v1": "RuncV1",
    "runtimeoptions.v1": "RuntimeOptionsV1",
    "io.containerd.cgroups.v1": "CgroupsV1",
    "io.containerd.cgroups.v2": "CgroupsV2",
    "grpc": "AgentAPI",
    "kata.echo.v1": "EchoV1",
}
# Message names that would shadow Swift's own.
RENAMES = {".google.protobuf.Any": "AnyMessage"}
# Singular Timestamp fields are values defaulting to Go's zero time and always emitted: that is
# what containerd's gogo (nullable=false) stdtime fields put on the wire (containerd-shim-v2.md §3.3).
TIMESTAMP = ".google.protobuf.Timestamp"

KEYWORDS = {
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import",
    "init", "inout", "internal", "let", "open", "operator", "private", "protocol", "public",
    "rethrows", "static", "struct", "subscript", "typealias", "var", "break", "case", "continue",
    "default", "defer", "do", "else", "fallthrough", "for", "guard", "if", "in", "repeat",
    "return", "switch", "where", "while", "as", "catch", "false", "is", "nil", "super", "self",
    "Self", "throw", "throws", "true", "try", "Type", "Protocol", "any", "some",
}

F = d.FieldDescriptorProto
SCALARS = {
    F.TYPE_INT32: ("Int32", "0"), F.TYPE_SINT32: ("Int32", "0"), F.TYPE_SFIXED32: ("Int32", "0"),
    F.TYPE_UINT32: ("UInt32", "0"), F.TYPE_FIXED32: ("UInt32", "0"),
    F.TYPE_INT64: ("Int64", "0"), F.TYPE_SINT64: ("Int64", "0"), F.TYPE_SFIXED64: ("Int64", "0"),
    F.TYPE_UINT64: ("UInt64", "0"), F.TYPE_FIXED64: ("UInt64", "0"),
    F.TYPE_BOOL: ("Bool", "false"), F.TYPE_DOUBLE: ("Double", "0"), F.TYPE_FLOAT: ("Float", "0"),
    F.TYPE_STRING: ("String", '""'), F.TYPE_BYTES: ("[UInt8]", "[]"),
}


def camel_to_lower(name):
    """protobuf-c's CamelToLower: the C spelling of a proto name."""
    out, was_upper = "", True
    for ch in name:
        up = ch.isupper()
        if up:
            if not was_upper:
                out += "_"
            out += ch.lower()
        else:
            out += ch
        was_upper = up
    return out


def c_descriptor_name(full):
    return "__".join(camel_to_lower(p) for p in full.lstrip(".").split(".")) + "__descriptor"


def swift_field_name(name):
    parts = name.split("_")
    out = parts[0]
    for p in parts[1:]:
        if p in ("id", "url", "json"):
            out += p.upper()
        else:
            out += p[:1].upper() + p[1:]
    return f"`{out}`" if out in KEYWORDS else out


def swift_enum_case(name, prefix):
    # SERVING -> serving, NOT_SERVING -> notServing
    parts = name.lower().split("_")
    out = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    return f"`{out}`" if out in KEYWORDS else out


class Gen:
    def __init__(self, fds):
        self.files = {f.name: f for f in fds.file}
        self.types = {}      # full name (".pkg.Msg") -> swift type name (qualified)
        self.messages = {}   # full name -> DescriptorProto
        self.enums = {}
        self.pkg_of = {}
        for f in fds.file:
            ns = NAMESPACES[f.package]
            for m in f.message_type:
                self._index(m, "." + f.package, ns, f.package)
            for e in f.enum_type:
                full = f".{f.package}.{e.name}"
                self.types[full] = f"{ns}.{e.name}"
                self.enums[full] = e

    def _index(self, m, parent_full, parent_swift, pkg):
        full = f"{parent_full}.{m.name}"
        swift = f"{parent_swift}.{RENAMES.get(full, m.name)}"
        self.types[full] = swift
        self.messages[full] = m
        self.pkg_of[full] = pkg
        for n in m.nested_type:
            self._index(n, full, swift, pkg)
        for e in m.enum_type:
            efull = f"{full}.{e.name}"
            self.types[efull] = f"{swift}.{e.name}"
            self.enums[efull] = e

    def is_map(self, f):
        if f.type != F.TYPE_MESSAGE or f.label != F.LABEL_REPEATED:
            return False
        return self.messages[f.type_name].options.map_entry

    # -- per field code ----------------------------------------------------------------------
    def field_decl(self, f):
        """(swift type, default, read expression, write statement) for field f."""
        n, name = f.number, swift_field_name(f.name)
        rep = f.label == F.LABEL_REPEATED
        if self.is_map(f):
            entry = self.messages[f.type_name]
            k, v = entry.field[0], entry.field[1]
            if k.type != F.TYPE_STRING or v.type != F.TYPE_STRING:
                sys.exit(f"map field {f.name}: only map<string, string> is supported")
            return ("[String: String]", "[:]", f"r.stringMap({n})", f"w.setStringMap({n}, {name})")
        if f.type in SCALARS:
            st, default = SCALARS[f.type]
            kind = {"String": "String", "[UInt8]": "Bytes", "Bool": "Bool", "Double": "Double",
                    "Float": "Float"}.get(st, "Integer")
            if rep:
                return (f"[{st}]", "[]", f"r.repeated{kind}({n})", f"w.setRepeated{kind}({n}, {name})")
            return (st, default, f"r.{kind[0].lower() + kind[1:]}({n})", f"w.set{kind}({n}, {name})")
        t = self.types[f.type_name]
        if f.type == F.TYPE_ENUM:
            if rep:
                return (f"[{t}]", "[]", f"r.repeatedInteger({n}).map {{ {t}(rawValue: $0) }}",
                        f"w.setRepeatedInteger({n}, {name}.map(\\.rawValue))")
            return (t, f"{t}(rawValue: 0)", f"{t}(rawValue: r.integer({n}))", f"w.setInteger({n}, {name}.rawValue)")
        if rep:
            return (f"[{t}]", "[]", f"r.repeatedMessage({n})", f"w.setRepeatedMessage({n}, {name})")
        if f.type_name == TIMESTAMP:
            return (t, f"{t}.goZero", f"r.message({n}) ?? {t}.goZero", f"w.setMessage({n}, {name})")
        return (f"{t}?", "nil", f"r.message({n})", f"w.setMessage({n}, {name})")

    # -- emitters ----------------------------------------------------------------------------
    def emit_enum(self, e, full, indent):
        i = "    " * indent
        swift_name = e.name
        out = [f"{i}/// `{full[1:]}`: a proto3 enum kept open (unknown values survive a round trip).",
               f"{i}public struct {swift_name}: RawRepresentable, Hashable, Sendable, CustomStringConvertible {{",
               f"{i}    public var rawValue: Int32",
               f"{i}    public init(rawValue: Int32) {{ self.rawValue = rawValue }}"]
        for v in e.value:
            out.append(f"{i}    public static let {swift_enum_case(v.name, e.name)} = {swift_name}(rawValue: {v.number})")
        out.append(f"{i}    public var description: String {{")
        out.append(f"{i}        switch rawValue {{")
        for v in e.value:
            out.append(f'{i}        case {v.number}: return "{v.name}"')
        out.append(f'{i}        default: return "\\(rawValue)"')
        out.append(f"{i}        }}")
        out.append(f"{i}    }}")
        out.append(f"{i}}}")
        return out

    def emit_message(self, m, full, indent):
        if m.options.map_entry:
            return []
        i = "    " * indent
        swift_name = RENAMES.get(full, m.name)
        fields = [(f, self.field_decl(f)) for f in m.field]
        out = [f"{i}/// `{full[1:]}`.",
               f"{i}public struct {swift_name}: ProtoMessage {{",
               f'{i}    public static let protoName = "{full[1:]}"',
               f"{i}    public static let protoDescriptor = ProtoDescriptor(kp_{c_descriptor_name(full)[:-len('__descriptor')]}())"]
        for f, (t, default, _, _) in fields:
            out.append(f"{i}    public var {swift_field_name(f.name)}: {t} = {default}")
        out.append("")
        out.append(f"{i}    public init() {{}}")
        if fields:
            out.append("")
            params = ", ".join(f"{swift_field_name(f.name).strip('`')}: {t} = {default}" for f, (t, default, _, _) in fields)
            out.append(f"{i}    public init({params}) {{")
            for f, _ in fields:
                nm = swift_field_name(f.name)
                out.append(f"{i}        self.{nm} = {nm}")
            out.append(f"{i}    }}")
        out.append("")
        r = "r" if fields else "_"
        out.append(f"{i}    public init(reading {r}: ProtoReader) {{")
        for f, (_, _, rd, _) in fields:
            out.append(f"{i}        self.{swift_field_name(f.name)} = {rd}")
        out.append(f"{i}    }}")
        out.append("")
        w = "w" if fields else "_"
        out.append(f"{i}    public func write(to {w}: ProtoWriter) {{")
        for f, (_, _, _, wr) in fields:
            out.append(f"{i}        {wr}")
        out.append(f"{i}    }}")
        for n in m.nested_type:
            sub = self.emit_message(n, f"{full}.{n.name}", indent + 1)
            if sub:
                out.append("")
                out.extend(sub)
        for e in m.enum_type:
            out.append("")
            out.extend(self.emit_enum(e, f"{full}.{e.name}", indent + 1))
        out.append(f"{i}}}")
        return out

    def emit_service(self, s, pkg, ns):
        name = s.name if s.name.endswith("Service") else s.name + "Service"
        out = [f"/// The ttRPC service `{pkg}.{s.name}`: its name and one typed descriptor per method.",
               f"extension {ns} {{",
               f"    public enum {name} {{",
               f'        public static let name = "{pkg}.{s.name}"']
        for mth in s.method:
            req, resp = self.types[mth.input_type], self.types[mth.output_type]
            lower = mth.name[:1].lower() + mth.name[1:]
            out.append(f"        /// `{mth.name}`: `{mth.input_type[1:]}` → `{mth.output_type[1:]}`.")
            out.append(f'        public static let {lower} = RPCMethod<{req}, {resp}>(service: name, method: "{mth.name}")')
        out.append("    }")
        out.append("}")
        return out

    def emit_file(self, f):
        ns = NAMESPACES[f.package]
        out = [f"// Generated by Scripts/gen-swift-protos.py from {f.name}. Do not edit.", "",
               "import CProtocols", ""]
        body = []
        for e in f.enum_type:
            body.extend(["", *self.emit_enum(e, f".{f.package}.{e.name}", 1)])
        for m in f.message_type:
            body.extend(["", *self.emit_message(m, f".{f.package}.{m.name}", 1)])
        if body:
            out.append(f"extension {ns} {{")
            out.extend(body[1:])
            out.append("}")
        for s in f.service:
            out.append("")
            out.extend(self.emit_service(s, f.package, ns))
        return "\n".join(out) + "\n"

    def emit_namespaces(self):
        out = ["// Generated by Scripts/gen-swift-protos.py. Do not edit.", ""]
        out.append("/// Every message type generated from Protos/ (tests and fuzzers iterate over it).")
        out.append("public let allProtoMessageTypes: [any ProtoMessage.Type] = [")
        for full in sorted(self.messages):
            if not self.messages[full].options.map_entry:
                out.append(f"    {self.types[full]}.self,")
        out.append("]")
        out.append("")
        for pkg, ns in sorted(NAMESPACES.items(), key=lambda kv: kv[1]):
            out.append(f"/// Types of the proto package `{pkg}`.")
            out.append(f"public enum {ns} {{}}")
        return "\n".join(out) + "\n"

    def emit_c(self):
        h = ["// Generated by Scripts/gen-swift-protos.py. Do not edit.",
             "// One accessor per message: the address of its protobuf-c descriptor.",
             "#ifndef KP_DESCRIPTORS_H", "#define KP_DESCRIPTORS_H", "",
             "#include <protobuf-c/protobuf-c.h>", ""]
        c = ["// Generated by Scripts/gen-swift-protos.py. Do not edit.", "",
             '#include "descriptors.h"']
        for fname in sorted(self.files):
            c.append(f'#include "{fname[:-len(".proto")]}.pb-c.h"')
        c.append("")
        for full in sorted(self.messages):
            if self.messages[full].options.map_entry:
                continue
            cname = c_descriptor_name(full)
            fn = "kp_" + cname[:-len("__descriptor")]
            h.append(f"const ProtobufCMessageDescriptor *{fn}(void);")
            c.append(f"const ProtobufCMessageDescriptor *{fn}(void) {{ return &{cname}; }}")
        h += ["", "#endif"]
        return "\n".join(h) + "\n", "\n".join(c) + "\n"


def main():
    desc_set, out_swift, out_c = sys.argv[1], sys.argv[2], sys.argv[3]
    fds = d.FileDescriptorSet()
    with open(desc_set, "rb") as fh:
        fds.ParseFromString(fh.read())
    g = Gen(fds)
    os.makedirs(out_swift, exist_ok=True)
    for f in fds.file:
        base = f.name[:-len(".proto")].replace("/", "_")
        with open(os.path.join(out_swift, f"{base}.pb.swift"), "w") as fh:
            fh.write(g.emit_file(f))
    with open(os.path.join(out_swift, "Namespaces.pb.swift"), "w") as fh:
        fh.write(g.emit_namespaces())
    h, c = g.emit_c()
    os.makedirs(os.path.join(out_c, "include"), exist_ok=True)
    with open(os.path.join(out_c, "include", "descriptors.h"), "w") as fh:
        fh.write(h)
    with open(os.path.join(out_c, "descriptors.c"), "w") as fh:
        fh.write(c)


if __name__ == "__main__":
    main()
