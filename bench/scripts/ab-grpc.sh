#!/usr/bin/env bash
# ab-grpc.sh A B [SECONDS] [RATE] — gRPC unary through two sidecar
# binaries (or wrappers adding flags), side by side: a pair of A and a pair
# of B run at the same time, each driven by its own fortio (health Check,
# 16 streams on one HTTP/2 connection, as meshbench's grpc-unary row) at
# RATE calls/s (default 0: as fast as it goes), so both see the same
# machine noise. The gRPC backend is meshbench's (grpc-go's health
# server). Prints each pair's calls/s and the cores per 1000 calls/s of
# its callee (api) and caller (web) sidecar, from /proc. Swap A and B for
# a second run; an A/A run shows the noise.
#
# PROFILE=DIR also saves a 10 s CPU profile of each of A's sidecars
# (admin /debug/pprof/profile) taken during the load, as DIR/api.pprof
# and DIR/web.pprof, and the allocations of those 10 s as DIR/api.allocs
# and DIR/web.allocs (SECONDS must then be at least 12).
#
# Needs `make build bench-tools`. Every port is chosen by the kernel.
set -euo pipefail
A=${1:?usage: ab-grpc.sh A B [SECONDS] [RATE]}; B=${2:?usage: ab-grpc.sh A B [SECONDS] [RATE]}
SECS=${3:-10}; RATE=${4:-0}
cd "$(dirname "$0")/../.."
BIN=$PWD/bin; TOOLS=$PWD/.tools
D=$(mktemp -d /tmp/ab-grpc.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
. bench/scripts/bench-mesh.sh
BENCH_HTTP_BACKEND=0 bench_mesh abgrpc api web api2 web2
go build -o "$D/meshbench" ./bench/meshbench
MESHBENCH_GRPC_BACKEND=127.0.0.1:0 "$D/meshbench" 2>"$D/backend.log" & pids+=($!)
waitlog "$D/backend.log" 'grpc backend listening on'
APP=$(grep -o 'listening on [0-9.:]*' "$D/backend.log" | cut -d' ' -f3)

addr() { grep -o "\"$2\":\"[^\"]*\"" "$D/$1.log" | head -1 | cut -d'"' -f4; } # service field
A1=$(bench_sidecar "$A" api "$APP"); W1=$(bench_sidecar "$A" web 127.0.0.1:1)
A2=$(bench_sidecar "$B" api2 "$APP"); W2=$(bench_sidecar "$B" web2 127.0.0.1:1)
pids+=("$A1" "$W1" "$A2" "$W2")
for s in api web api2 web2; do waitlog "$D/$s.log" '"sigil-proxy running"'; done
load() { # seconds host outbound-addr
  "$TOOLS/fortio" load -grpc -s 16 -c 1 -qps "$RATE" -t "$1" -a=false -loglevel Error -H "Host: $2" "$3" 2>&1 | grep -o '[0-9.]* qps$' || true
}
for p in api:web api2:web2; do # until discovery has brought the callee
  for _ in $(seq 200); do
    q=$("$TOOLS/fortio" load -grpc -n 1 -qps 0 -a=false -loglevel Error -H "Host: ${p%:*}" "$(addr "${p#*:}" outbound)" 2>&1 || true)
    grep -q 'Health SERVING :' <<<"$q" && break; sleep 0.1
  done
  grep -q 'Health SERVING :' <<<"$q" || { echo "pair ${p%:*} never routed: $q" >&2; exit 1; }
done
load 3s api "$(addr web outbound)" >/dev/null & l1=$!; load 3s api2 "$(addr web2 outbound)" >/dev/null; wait $l1
a1=$(bench_cpu "$A1"); w1=$(bench_cpu "$W1"); a2=$(bench_cpu "$A2"); w2=$(bench_cpu "$W2")
prof=()
if [ -n "${PROFILE:-}" ]; then
  mkdir -p "$PROFILE"
  for s in api web; do
    ( sleep 1; curl -s -o "$PROFILE/$s.pprof" "http://$(addr $s admin)/debug/pprof/profile?seconds=10" ) & prof+=($!)
    ( sleep 1; curl -s -o "$PROFILE/$s.allocs" "http://$(addr $s admin)/debug/pprof/allocs?seconds=10" ) & prof+=($!)
  done
fi
load "${SECS}s" api2 "$(addr web2 outbound)" >"$D/r2" & l2=$!
r1=$(load "${SECS}s" api "$(addr web outbound)"); wait $l2; r2=$(cat "$D/r2")
for p in "${prof[@]}"; do wait "$p"; done
per() { echo "scale=4; ($2-$1)/100/$SECS*1000/${3% qps}" | bc; }
echo "A $r1 $(per "$a1" "$(bench_cpu "$A1")" "$r1") $(per "$w1" "$(bench_cpu "$W1")" "$r1")   B $r2 $(per "$a2" "$(bench_cpu "$A2")" "$r2") $(per "$w2" "$(bench_cpu "$W2")" "$r2")   (calls/s; cores per 1000 calls/s: api web)"
