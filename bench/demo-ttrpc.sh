#!/usr/bin/env bash
# The ttRPC stack end to end against containerd's own Go ttRPC (the main job until the shim
# exists): Go client -> Swift server, then Swift client -> Go server.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; return 1; }

echo "== Swift ttRPC server, containerd's Go ttRPC client"
.build/debug/ttrpc-peer serve --socket "$dir/swift.sock" >/dev/null & pids+=($!)
wait_sock "$dir/swift.sock"
.build/interop/ttrpc-go-peer scenarios -socket "$dir/swift.sock"

echo "== containerd's Go ttRPC server, Swift ttRPC client"
.build/interop/ttrpc-go-peer server -socket "$dir/go.sock" >/dev/null & pids+=($!)
wait_sock "$dir/go.sock"
echo -n "echo reply: "
.build/debug/ttrpc-peer call --socket "$dir/go.sock" --payload "hello from Swift" --timeout-ms 2000
