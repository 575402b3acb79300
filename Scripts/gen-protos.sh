#!/usr/bin/env bash
# Regenerates every file derived from Protos/: the protobuf-c C code (Sources/CProtocols) and the
# Swift value types (Sources/Protocols/Generated). With an argument, writes the tree under that
# directory instead of the repository (used by `make check-protos` to detect drift).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
wkt="google/protobuf/any.proto google/protobuf/empty.proto google/protobuf/timestamp.proto"
inc=/usr/include   # protoc's include dir (Debian libprotobuf-dev / protobuf-compiler)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root/Protos"
protos=$(find . -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)

mkdir -p "$tmp/c"
protoc -I . -I "$inc" --c_out="$tmp/c" $protos $wkt
protoc -I . -I "$inc" --include_imports --descriptor_set_out="$tmp/set.pb" $protos $wkt

cproto="$out/Sources/CProtocols"
rm -rf "$cproto/include" "$cproto/src" "$cproto/descriptors.c" "$out/Sources/Protocols/Generated"
mkdir -p "$cproto/include" "$cproto/src"
(cd "$tmp/c" && find . -name '*.pb-c.h' | while read -r f; do mkdir -p "$cproto/include/$(dirname "$f")"; cp "$f" "$cproto/include/$f"; done)
(cd "$tmp/c" && find . -name '*.pb-c.c' | while read -r f; do mkdir -p "$cproto/src/$(dirname "$f")"; cp "$f" "$cproto/src/$f"; done)
cat > "$cproto/include/module.modulemap" <<'MAP'
module CProtocols {
    header "descriptors.h"
    export *
}
MAP
/usr/bin/python3 "$root/Scripts/gen-swift-protos.py" "$tmp/set.pb" "$out/Sources/Protocols/Generated" "$cproto"
