# bench-mesh.sh — sourced by ab-pairs.sh, ab-saturation.sh, ab-grpc.sh, rss-pairs.sh and
# ir-per-request.sh: the mesh their sidecars run in. bench_mesh NODE SERVICE... starts, in $D, a
# sigil-server, one workload entry (spiffe://example.org/ns/bench/sa/bench,
# this uid) allowed the SERVICEs, a sigil-agent on socket $D/a.sock, the
# policy $D/p.rego (namespace bench may GET and POST) and a fortio server
# on 127.0.0.1:18080; their pids go to the caller's pids array. Needs $D,
# $BIN and $TOOLS set. waitlog waits WAITLOG_TRIES × 0.1 s (default 300).
# bench_sidecar BINARY SERVICE APP [PORT-PREFIX] starts a sidecar of the
# mesh (inbound PREFIX6, outbound PREFIX1, admin PREFIX0; without a prefix
# the kernel picks every port and they are read from its log) and prints
# its pid. bench_routed PORT HOST waits until a GET /echo through the
# outbound PORT with Host HOST answers 200 (20 s). bench_cpu PID prints
# the process's CPU time so far in clock ticks (utime + stime).
# bench_rate_load SECONDS HOST PORT loads the outbound PORT at $RATE
# req/s on 16 connections (1 KiB answers) and prints fortio's "N qps".
bench_sidecar() {
  local in=127.0.0.1:0 out=127.0.0.1:0 admin=127.0.0.1:0
  [ -z "${4:-}" ] || { in=127.0.0.1:${4}6; out=127.0.0.1:${4}1; admin=127.0.0.1:${4}0; }
  "$1" run --socket "$D/a.sock" --service "$2" --app "$3" --policy "$D/p.rego" --inbound "$in" \
    --outbound "$out" --admin "$admin" --drain-grace 0s --audit-spool-dir "$D/$2.spool" >"$D/$2.log" 2>&1 &
  echo $!
}

bench_routed() {
  local c=
  for _ in $(seq 200); do
    c=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $2" "http://127.0.0.1:$1/echo" || true)
    [ "$c" = 200 ] && return 0; sleep 0.1
  done
  echo "pair $2 never routed (last status $c)" >&2; exit 1
}

bench_cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }

bench_rate_load() {
  "$TOOLS/fortio" load -qps "$RATE" -c 16 -t "$1" -a=false -loglevel Error -H "Host: $2" "http://127.0.0.1:$3/echo?size=1024" 2>&1 | grep -o '[0-9.]* qps$' || true
}

waitlog() { for _ in $(seq "${WAITLOG_TRIES:-300}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for $2 in $1" >&2; exit 1; }

bench_mesh() {
  local node=$1; shift
  local services=()
  for s in "$@"; do services+=(--service "$s"); done
  # The server keeps an audit stream (a file exporter), as a deployment
  # that exports does: without one, sidecars stop recording decisions and
  # the bench would not see their cost (docs/audit.md, Flags).
  "$BIN/sigil-server" run --data-dir "$D/server" --trust-domain example.org --bind 127.0.0.1:0 --dashboard 127.0.0.1:0 \
    --audit-export "file://$D/audit.jsonl" >"$D/server.log" 2>&1 & pids+=($!)
  waitlog "$D/server.log" '"sigil-server running"'
  local addr
  addr=$(grep -o '"agent_api":"[^"]*"' "$D/server.log" | cut -d'"' -f4)
  "$BIN/sigil-server" bundle show --data-dir "$D/server" >"$D/bundle.pem"
  "$BIN/sigil-server" entry create --data-dir "$D/server" --parent-id "spiffe://example.org/sigil/agent/join_token/$node" \
    --spiffe-id spiffe://example.org/ns/bench/sa/bench --selector "unix:uid:$(id -u)" "${services[@]}" >/dev/null
  "$BIN/sigil-server" token generate --node "$node" --data-dir "$D/server" --output "$D/agent.token" >/dev/null
  "$BIN/sigil-agent" run --server "$addr" --trust-bundle "$D/bundle.pem" --join-token-file "$D/agent.token" --data-dir "$D/agent" --socket "$D/a.sock" >"$D/agent.log" 2>&1 & pids+=($!)
  waitlog "$D/agent.log" '"sigil-agent running"'
  cat >"$D/p.rego" <<'R'
package sigil.authz

default allow := false

allow if {
	input.source.namespace == "bench"
	input.request.method in {"GET", "POST"}
}
R
  # BENCH_HTTP_BACKEND=0: no fortio server (a script with a backend of its own).
  [ "${BENCH_HTTP_BACKEND:-1}" = 0 ] ||
    { "$TOOLS/fortio" server -http-port 18080 -grpc-port disabled -redirect-port disabled -loglevel Error >"$D/fortio.log" 2>&1 & pids+=($!); }
}
