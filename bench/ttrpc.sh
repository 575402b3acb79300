#!/usr/bin/env bash
# ttRPC unary echo benchmark: the same Go client (containerd's ttRPC v1.1.1) against the Swift
# server and the Go server, in one run, at 1 and 16 calls in flight. Prints `name: value` lines.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
PAYLOAD=${PAYLOAD:-64}
SWIFT_PEER=.build/release/ttrpc-peer
GO_PEER=.build/interop/ttrpc-go-peer
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

"$SWIFT_PEER" serve --socket "$dir/swift.sock" >/dev/null & pids+=($!)
"$GO_PEER" server -socket "$dir/go.sock" >/dev/null & pids+=($!)
for s in swift go; do for _ in $(seq 100); do [ -S "$dir/$s.sock" ] && break; sleep 0.05; done; done

field() { awk -v k="$1:" '$1 == k { print $2 }' <<<"$2"; }
for n in 1 16; do
  # Alternate the order so neither server always runs on a warmer machine.
  if [ "$n" = 1 ]; then order="swift go"; else order="go swift"; fi
  for s in $order; do
    out=$("$GO_PEER" bench -socket "$dir/$s.sock" -inflight "$n" -duration "$DURATION" -payload "$PAYLOAD")
    eval "rps_${s}_$n=$(field rps "$out") p50_${s}_$n=$(field p50-us "$out") p99_${s}_$n=$(field p99-us "$out")"
  done
  eval "rs=\$rps_swift_$n rg=\$rps_go_$n"
  echo "ttrpc-rps-swift-inflight$n: $rs"
  echo "ttrpc-rps-go-inflight$n: $rg"
  echo "ttrpc-rps-ratio-inflight$n: $(awk -v a="$rs" -v b="$rg" 'BEGIN { printf "%.2f", a / b }')"
  eval 'echo "ttrpc-p50-us-swift-inflight'$n': $p50_swift_'$n'"; echo "ttrpc-p99-us-swift-inflight'$n': $p99_swift_'$n'"'
  eval 'echo "ttrpc-p50-us-go-inflight'$n': $p50_go_'$n'"; echo "ttrpc-p99-us-go-inflight'$n': $p99_go_'$n'"'
done
# The headline figures the issue names: 16 in flight.
echo "ttrpc-rps-swift: $rps_swift_16"
echo "ttrpc-rps-go: $rps_go_16"
echo "ttrpc-rps-ratio: $(awk -v a="$rps_swift_16" -v b="$rps_go_16" 'BEGIN { printf "%.2f", a / b }')"
rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' /proc/"${pids[0]}"/status)
echo "ttrpc-server-rss-mib-swift: $rss"
echo "ttrpc-server-rss-mib-go: $(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' /proc/"${pids[1]}"/status)"
