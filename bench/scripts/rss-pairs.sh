#!/usr/bin/env bash
# rss-pairs.sh A B [RATE] [SECONDS] — resident memory of two sidecar
# binaries (or wrappers adding flags or environment), side by side: a pair
# of A and a pair of B in the same mesh as ab-pairs.sh starts (fortio
# backend, audit export to the agent), each idle 2 s after its first routed
# request, then under the same fixed-rate load (16 connections, 1 KiB
# responses). Prints, per sidecar (api: callee, web: caller), VmRSS and its
# anonymous and file-backed parts in MB, idle and in the load's last
# sample, VmRSS's mean and maximum over the load (sampled every 0.5 s while
# it runs), and the CPU per 1000 req/s over the load as ab-pairs.sh reads
# it. A sidecar gives memory back once it goes quiet (proxy/trim.go), so
# only samples taken under load say what the load keeps resident.
# RSS_OUT=DIR keeps, per sidecar, /proc/<pid>/smaps a second before the
# load ends, the heap profile (/debug/pprof/heap, and its MemStats as
# .memstats) taken after it, and the samples (samples: VmRSS, RssAnon and RssFile in kB
# of api, web, api2 and web2 per line).
#
# Needs `make build bench-tools`. Uses loopback ports 25000-28006 and 18080.
set -euo pipefail
A=${1:?usage: rss-pairs.sh A B [RATE] [SECONDS]}; B=${2:?usage: rss-pairs.sh A B [RATE] [SECONDS]}
RATE=${3:-1000}; SECS=${4:-10}
cd "$(dirname "$0")/../.."
BIN=$PWD/bin; TOOLS=$PWD/.tools
D=$(mktemp -d /tmp/rss-pairs.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
. bench/scripts/bench-mesh.sh
bench_mesh rss api web api2 web2

A1=$(bench_sidecar "$A" api 127.0.0.1:18080 2500); W1=$(bench_sidecar "$A" web 127.0.0.1:1 2600)
A2=$(bench_sidecar "$B" api2 127.0.0.1:18080 2700); W2=$(bench_sidecar "$B" web2 127.0.0.1:1 2800)
pids+=("$A1" "$W1" "$A2" "$W2")
bench_routed 26001 api; bench_routed 28001 api2
sleep 2 # idle, as meshbench measures it
mem() { awk '/^VmRSS:/{r=$2} /^RssAnon:/{a=$2} /^RssFile:/{f=$2} END{printf "%.1f (%.1f+%.1f)", r/1024, a/1024, f/1024}' "/proc/$1/status"; }
idle="A api $(mem "$A1") web $(mem "$W1")   B api $(mem "$A2") web $(mem "$W2")"
a1=$(bench_cpu "$A1"); w1=$(bench_cpu "$W1"); a2=$(bench_cpu "$A2"); w2=$(bench_cpu "$W2")
# One sample: VmRSS, RssAnon, RssFile (kB) of api, web, api2, web2.
snap() { for p in "$A1" "$W1" "$A2" "$W2"; do awk '/^VmRSS:/{r=$2} /^RssAnon:/{a=$2} /^RssFile:/{f=$2} END{printf "%d %d %d ", r, a, f}' "/proc/$p/status"; done; echo; }
sample() { while :; do snap >>"$D/samples"; sleep 0.5; done; }
sample & sp=$!
# grab: each sidecar's smaps under the load; afterwards (heap) its heap
# profile and MemStats, which are not taken under the load because serving
# them faults in the symbol tables (~3 MB of file-backed pages).
grab() {
  mkdir -p "$RSS_OUT"
  cp "/proc/$A1/smaps" "$RSS_OUT/api.smaps"; cp "/proc/$W1/smaps" "$RSS_OUT/web.smaps"
  cp "/proc/$A2/smaps" "$RSS_OUT/api2.smaps"; cp "/proc/$W2/smaps" "$RSS_OUT/web2.smaps"
}
heap() {
  for s in api:2500 web:2600 api2:2700 web2:2800; do
    curl -s -o "$RSS_OUT/${s%:*}.heap" "http://127.0.0.1:${s#*:}0/debug/pprof/heap" || true
    curl -s "http://127.0.0.1:${s#*:}0/debug/pprof/heap?debug=1" | sed -n '/^# runtime.MemStats/,$p' >"$RSS_OUT/${s%:*}.memstats" || true
  done
}
[ -z "${RSS_OUT:-}" ] || { sleep $((SECS - 1)); grab; } &
bench_rate_load "${SECS}s" api2 28001 >"$D/r2" & l2=$!
r1=$(bench_rate_load "${SECS}s" api 26001)
kill "$sp"; wait "$sp" 2>/dev/null || true # the samples end while the load runs
wait $l2; r2=$(cat "$D/r2")
over=$(awk '{for(i=1;i<=4;i++){v=$(3*i-2); s[i]+=v; if(v>m[i])m[i]=v}; n++} END{printf "A api %.1f/%.1f web %.1f/%.1f   B api %.1f/%.1f web %.1f/%.1f", s[1]/n/1024, m[1]/1024, s[2]/n/1024, m[2]/1024, s[3]/n/1024, m[3]/1024, s[4]/n/1024, m[4]/1024}' "$D/samples")
busy=$(tail -1 "$D/samples" | awk '{for(i=1;i<=4;i++)x[i]=sprintf("%.1f (%.1f+%.1f)", $(3*i-2)/1024, $(3*i-1)/1024, $(3*i)/1024); printf "A api %s web %s   B api %s web %s", x[1], x[2], x[3], x[4]}')
per() { echo "scale=4; ($2-$1)/100/$SECS*1000/$RATE" | bc; }
cA1=$(per "$a1" "$(bench_cpu "$A1")"); cW1=$(per "$w1" "$(bench_cpu "$W1")"); cA2=$(per "$a2" "$(bench_cpu "$A2")"); cW2=$(per "$w2" "$(bench_cpu "$W2")")
[ -z "${RSS_OUT:-}" ] || { cp "$D/samples" "$RSS_OUT/samples"; heap; }
echo "idle     $idle   (MB: VmRSS (anon+file))"
echo "at load  $busy   [A $r1, B $r2]"
echo "during   $over   (MB: VmRSS mean/max over the load, every 0.5 s)"
echo "cpu      A $cA1 $cW1   B $cA2 $cW2   (cores per 1000 req/s: api web)"
