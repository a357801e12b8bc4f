#!/usr/bin/env bash
# ab-pairs.sh A B [RATE] [SECONDS] — CPU per request of two sidecar
# binaries (or wrappers adding flags), measured side by side: a pair of A
# and a pair of B run at the same time, each under the same fixed-rate
# load, so both see the same machine noise. Prints cores per 1000 req/s
# of each pair's callee (api) and caller (web) sidecar, from /proc.
# Swap A and B for a second run: the second pair started tends to read a
# few percent higher (an A/A run shows how much).
#
# Needs `make build bench-tools`. Uses loopback ports 25000-28006 and 18080.
set -euo pipefail
A=${1:?usage: ab-pairs.sh A B [RATE] [SECONDS]}; B=${2:?usage: ab-pairs.sh A B [RATE] [SECONDS]}
RATE=${3:-1000}; SECS=${4:-10}
cd "$(dirname "$0")/../.."
BIN=$PWD/bin; TOOLS=$PWD/.tools
D=$(mktemp -d /tmp/ab-pairs.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
. bench/scripts/bench-mesh.sh
bench_mesh ab api web api2 web2

A1=$(bench_sidecar "$A" api 127.0.0.1:18080 2500); W1=$(bench_sidecar "$A" web 127.0.0.1:1 2600)
A2=$(bench_sidecar "$B" api2 127.0.0.1:18080 2700); W2=$(bench_sidecar "$B" web2 127.0.0.1:1 2800)
pids+=("$A1" "$W1" "$A2" "$W2")
bench_routed 26001 api; bench_routed 28001 api2
bench_rate_load 3s api 26001 >/dev/null & bench_rate_load 3s api2 28001 >/dev/null; wait $!
a1=$(bench_cpu "$A1"); w1=$(bench_cpu "$W1"); a2=$(bench_cpu "$A2"); w2=$(bench_cpu "$W2")
bench_rate_load "${SECS}s" api2 28001 >"$D/r2" & l2=$!
r1=$(bench_rate_load "${SECS}s" api 26001); wait $l2; r2=$(cat "$D/r2")
per() { echo "scale=4; ($2-$1)/100/$SECS*1000/$RATE" | bc; }
echo "A $(per "$a1" "$(bench_cpu "$A1")") $(per "$w1" "$(bench_cpu "$W1")") [$r1]   B $(per "$a2" "$(bench_cpu "$A2")") $(per "$w2" "$(bench_cpu "$W2")") [$r2]   (cores per 1000 req/s: api web)"
