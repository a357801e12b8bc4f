#!/usr/bin/env bash
# ab-saturation.sh A B [SECONDS] [ROUNDS] [CONNS] [RATE] — throughput of two
# sidecar binaries (or wrappers adding flags) in one mesh: a pair of A and
# a pair of B, loaded in turn (A, B, A, B...) by fortio, closed loop
# (RATE 0, the default) at CONNS connections (64), 1 KiB responses. Per
# round it prints fortio's p50, p99 and rate, and the CPU (cores) the
# round took in each process: the pair's callee (api) and caller (web),
# the server, the agent, the app (fortio's server) and the whole machine,
# from /proc. Where ab-pairs.sh loads both pairs at once at a fixed rate
# for CPU per request, this shows what saturates, and what a change
# costs processes outside the pair (the server's audit stream...).
# Set BIN to a directory with another build's sigil-server and
# sigil-agent. Uses loopback ports 33500-33806 and 18080.
set -euo pipefail
A=$1; B=$2; SECS=${3:-8}; ROUNDS=${4:-3}; C=${5:-64}; QPS=${6:-0}
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/bin}; TOOLS=$PWD/.tools
D=$(mktemp -d /tmp/ab-saturation.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
. bench/scripts/bench-mesh.sh
bench_mesh ab api web api2 web2
A1=$(bench_sidecar "$A" api 127.0.0.1:18080 3350); W1=$(bench_sidecar "$A" web 127.0.0.1:1 3360)
A2=$(bench_sidecar "$B" api2 127.0.0.1:18080 3370); W2=$(bench_sidecar "$B" web2 127.0.0.1:1 3380)
pids+=("$A1" "$W1" "$A2" "$W2")
bench_routed 33601 api; bench_routed 33801 api2
load() { "$TOOLS/fortio" load -qps "$QPS" -c "$C" -t "$1" -a=false -loglevel Error -H "Host: $2" "http://127.0.0.1:$3/echo?size=1024" 2>&1; }
sum() { sed -n '/Aggregated Function Time/,$p' | grep -oE '[0-9.]+ qps|# target (50|99)% [0-9.]+' | tr '\n' ' ' ; }
load 3s api 33601 >/dev/null; load 3s api2 33801 >/dev/null

for r in $(seq "$ROUNDS"); do
  for side in A B; do
    if [ $side = A ]; then p=$A1; w=$W1; h=api; port=33601; else p=$A2; w=$W2; h=api2; port=33801; fi
    c0=$(bench_cpu $p); w0=$(bench_cpu $w); s0=$(bench_cpu ${pids[0]}); g0=$(bench_cpu ${pids[1]}); f0=$(bench_cpu ${pids[2]}); t0=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
    out=$(load "${SECS}s" $h $port | sum)
    echo "$side $out api $(echo "scale=3; ($(bench_cpu $p)-$c0)/100/$SECS" | bc) web $(echo "scale=3; ($(bench_cpu $w)-$w0)/100/$SECS" | bc) server $(echo "scale=3; ($(bench_cpu ${pids[0]})-$s0)/100/$SECS" | bc) agent $(echo "scale=3; ($(bench_cpu ${pids[1]})-$g0)/100/$SECS" | bc) app $(echo "scale=3; ($(bench_cpu ${pids[2]})-$f0)/100/$SECS" | bc) machine $(echo "scale=3; ($(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)-$t0)/100/$SECS" | bc)"
  done
done
if [ -n "${DIRECT:-}" ]; then echo "direct $("$TOOLS/fortio" load -qps 0 -c "$C" -t "${SECS}s" -a=false -loglevel Error "http://127.0.0.1:18080/echo?size=1024" 2>&1 | sum)"; fi
