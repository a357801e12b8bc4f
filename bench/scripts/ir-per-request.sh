#!/usr/bin/env bash
# ir-per-request.sh [-n REQUESTS] [-b BODY] [-k] A [B ...] — instructions per request of
# sidecar binaries (or wrappers adding flags), counted by valgrind's
# callgrind: a deterministic twin of ab-pairs.sh for differences smaller
# than this machine's noise (A/A runs of ab-pairs differ by 5-25 % on a
# shared VM; instruction counts of the same binary differ by well under
# 1 %). For each binary in turn, a pair (api callee, web caller) runs under
# callgrind; after a warm-up the counters are zeroed, REQUESTS requests
# (default 2000, one at a time, GET with a 1 KiB response; with -b, POST
# with a body of BODY bytes) go through the
# pair, and the counters are dumped. Prints instructions per request of
# each sidecar (user space only) and its read and write system calls per
# request (from /proc/PID/io). Instructions are not time (a cache miss costs more than an
# add), so read it beside ab-pairs; what it shows well is where a change
# adds work: callgrind_annotate the dumps left with -k.
#
# Needs `make build bench-tools` and valgrind (apt-get install valgrind).
# Go's asynchronous preemption is off in the sidecars (its signals crash
# callgrind 3.19), and valgrind hands its one CPU between threads with
# futexes (--fair-sched=yes) so its lock is not counted as reads and
# writes; the binaries are otherwise as shipped.
# Uses loopback ports 25000-25006, 26000-26006 and 18080.
set -euo pipefail
N=2000; KEEP=""; BODY=0; bins=()
while [ $# -gt 0 ]; do
  case "$1" in
  -n) N=$2; shift 2 ;;
  -k) KEEP=1; shift ;;
  -b) BODY=$2; shift 2 ;;
  *) bins+=("$1"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || { echo "usage: ir-per-request.sh [-n REQUESTS] [-b BODY] [-k] A [B ...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "ir-per-request.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cd "$(dirname "$0")/../.."
BIN=$PWD/bin; TOOLS=$PWD/.tools
D=$(mktemp -d /tmp/ir-per-request.XXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "$KEEP" ] && echo "dumps kept in $D" >&2 || rm -rf "$D"; }
trap cleanup EXIT
WAITLOG_TRIES=600 # sidecars under valgrind start slowly
. bench/scripts/bench-mesh.sh
bench_mesh ir api web

# start binary service port-prefix app: the sidecar under callgrind.
start() {
  GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --fair-sched=yes --trace-children=yes --callgrind-out-file="$D/$5.$2.%p.out" \
    "$1" run --socket "$D/a.sock" --service "$2" --app "$4" --policy "$D/p.rego" --inbound "127.0.0.1:${3}6" \
    --outbound "127.0.0.1:${3}1" --admin "127.0.0.1:${3}0" --drain-grace 0s >"$D/$5.$2.log" 2>&1 &
  echo $!
}
load() { "$TOOLS/fortio" load -payload-size "$BODY" -qps 0 -c 1 -n "$1" -a=false -loglevel Error -H "Host: api" "http://127.0.0.1:26001/echo?size=1024" >/dev/null 2>&1; }
total() { # the summary of the newest dump of pid $1
  f=$(ls -t "$D"/*."$1"*.out* | head -1)
  awk '/^(summary|totals):/ {print $2; exit}' "$f"
}
sys() { awk '/^sysc[rw]:/ {n += $2} END {print n}' "/proc/$1/io"; } # reads + writes so far
per() { echo "scale=2; ($2 - $1) / $N" | bc; }
i=0
for b in "${bins[@]}"; do
  i=$((i + 1))
  A=$(start "$b" api 2500 127.0.0.1:18080 "$i"); W=$(start "$b" web 2600 127.0.0.1:1 "$i")
  pids+=("$A" "$W")
  c=""
  for _ in $(seq 600); do
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: api" "http://127.0.0.1:26001/echo" || true)
    [ "$c" = 200 ] && break; sleep 0.2
  done
  [ "$c" = 200 ] || { echo "$b: the pair never routed (last status $c)" >&2; exit 1; }
  load 300
  for p in "$A" "$W"; do callgrind_control -z "$p" >/dev/null 2>&1; done
  sa=$(sys "$A"); sw=$(sys "$W")
  load "$N"
  ea=$(sys "$A"); ew=$(sys "$W")
  for p in "$A" "$W"; do callgrind_control -d "$p" >/dev/null 2>&1; done
  echo "$b api $(( $(total "$A") / N )) web $(( $(total "$W") / N ))   (instructions per request)   system calls per request: api $(per "$sa" "$ea") web $(per "$sw" "$ew")"
  kill "$A" "$W"; wait "$A" "$W" 2>/dev/null || true
done
