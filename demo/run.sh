#!/usr/bin/env bash
# make demo: a working mesh on the embedded default. Starts sigil-server
# (CA + SQLite registry), two agents (node1, node2), two demo services (web
# and api) with sidecars, fetches a workload's SVIDs over the SPIFFE
# Workload API, and sends traffic from web to api: one call allowed by the
# policy, one denied; then a 90/10 canary of api v1/v2 with the split
# measured; then live traffic, a rollout of v2 in progress (sigil rollout)
# and the dashboard, until Ctrl-C.
# Everything lives in a temporary directory and stops when the demo ends;
# SIGIL_DEMO_KEEP=0 ends it after the last step instead of staying up.
# The dashboard listens on 127.0.0.1:8080 (SIGIL_DEMO_DASHBOARD=HOST:PORT
# to move it).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
# make demo builds everything; run by hand after make build, the demo app
# is still missing: build it rather than time out waiting for it.
for b in sigil sigil-server sigil-agent sigil-proxy; do
	[ -x "$BIN/$b" ] || { echo "$BIN/$b is missing: run make demo (or make build first)"; exit 1; }
done
[ -x "$BIN/sigil-demo-app" ] || go build -o "$BIN/" ./demo/sigil-demo-app
command -v curl >/dev/null || { echo "installing curl"; apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
DIR=$(mktemp -d /tmp/sigil-demo.XXXXXX)
chmod 755 "$DIR"
TD=example.org
DASH=${SIGIL_DEMO_DASHBOARD:-127.0.0.1:8080}
# Golden metrics every 2 s instead of 10 s, so the demo's figures move fast.
STATS=(--stats-interval 2s)
pids=()
cleanup() {
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "demo stopped; logs and data were in $DIR"
}
trap cleanup EXIT INT TERM

# wait_log FILE PATTERN: wait (up to 30 s) for a line in a log, the
# process's own readiness signal.
wait_log() {
	for _ in $(seq 300); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "timed out waiting for '$2' in $1:"; cat "$1"; exit 1
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. sigil-server: the CA makes its root and intermediate, the registry opens in SQLite"
"$BIN/sigil-server" run --data-dir "$DIR/server" --trust-domain $TD --bind 127.0.0.1:0 \
	--dashboard "$DASH" 2>"$DIR/server.log" &
pids+=($!)
wait_log "$DIR/server.log" '"sigil-server running"'
ADDR=$(grep -o '"agent_api":"[^"]*"' "$DIR/server.log" | head -1 | cut -d'"' -f4)
DASHURL=$(grep -o '"dashboard":"[^"]*"' "$DIR/server.log" | head -1 | cut -d'"' -f4)
echo "agent API on $ADDR, admin socket $DIR/server/admin.sock, dashboard $DASHURL"
"$BIN/sigil-server" bundle show --data-dir "$DIR/server" > "$DIR/bundle.pem"
echo "trust bundle written to $DIR/bundle.pem"

step "2. two nodes; on node1 uid $(id -u) is spiffe://$TD/ns/demo/sa/web, on node2 it is .../sa/api"
for n in 1 2; do
	sa=$([ $n = 1 ] && echo web || echo api)
	"$BIN/sigil-server" entry create --data-dir "$DIR/server" \
		--parent-id spiffe://$TD/sigil/agent/join_token/node$n \
		--spiffe-id spiffe://$TD/ns/demo/sa/$sa --selector "unix:uid:$(id -u)" | sed -n '1,3p'
done

step "3. an agent per node attests with a single-use join token and opens the Workload API"
for n in 1 2; do
	# The token goes in a 0600 file, never on the command line (ps shows argv to every user).
	"$BIN/sigil-server" token generate --data-dir "$DIR/server" --node node$n --output "$DIR/agent$n.token" >/dev/null
	"$BIN/sigil-agent" run --server "$ADDR" --trust-bundle "$DIR/bundle.pem" --join-token-file "$DIR/agent$n.token" \
		--data-dir "$DIR/agent$n" --socket "$DIR/agent$n.sock" "${STATS[@]}" 2>"$DIR/agent$n.log" &
	pids+=($!)
	wait_log "$DIR/agent$n.log" '"sigil-agent running"'
	grep -o '"agent_id":"[^"]*"' "$DIR/agent$n.log" | head -1
done

step "4. a workload on node1 fetches its X.509-SVID (SPIFFE ID, expiry, chain) and a JWT-SVID"
"$BIN/sigil-agent" api fetch x509 --socket "$DIR/agent1.sock"
"$BIN/sigil-agent" api fetch jwt --audience api --socket "$DIR/agent1.sock" | head -2

step "5. two services, web and api (v1 and v2), each with a sidecar; policy: web may GET from api"
for svc in web api-v1 api-v2; do
	"$BIN/sigil-demo-app" --listen 127.0.0.1:0 --name $svc 2>"$DIR/$svc-app.log" &
	pids+=($!)
	wait_log "$DIR/$svc-app.log" 'listening on'
done
addr_of() { grep -o "listening on [^ ]*" "$DIR/$1-app.log" | head -1 | cut -d' ' -f3; }
field() { grep -o "\"$2\":\"[^\"]*\"" "$DIR/$1.log" | head -1 | cut -d'"' -f4; }
for v in v1 v2; do
	# api's sidecars register themselves (service api, label version) through
	# their agent: no addresses are configured anywhere.
	"$BIN/sigil-proxy" run --socket "$DIR/agent2.sock" --service api --label version=$v --app "$(addr_of api-$v)" \
		--policy demo/policy --inbound 127.0.0.1:0 --outbound 127.0.0.1:0 --admin 127.0.0.1:0 "${STATS[@]}" 2>"$DIR/api-$v-proxy.log" &
	pids+=($!)
	wait_log "$DIR/api-$v-proxy.log" '"sigil-proxy running"'
done
"$BIN/sigil-proxy" run --socket "$DIR/agent1.sock" --service web --app "$(addr_of web)" --policy demo/policy \
	--inbound 127.0.0.1:0 --outbound 127.0.0.1:0 --admin 127.0.0.1:0 "${STATS[@]}" 2>"$DIR/web-proxy.log" &
pids+=($!)
wait_log "$DIR/web-proxy.log" '"sigil-proxy running"'
OUT=$(field web-proxy outbound)
export SIGIL_ADMIN_SOCKET="$DIR/server/admin.sock"
for _ in $(seq 100); do
	[ "$("$BIN/sigil" get endpoints -o json | grep -c '"service": "api"')" -ge 2 ] && break
	sleep 0.1
done
"$BIN/sigil" get endpoints
echo "web's sidecar: outbound $OUT (the app's HTTP proxy); api's sidecars: mTLS only"

step "6. web calls api through the mesh: GET is allowed, and api sees who called"
echo "\$ curl -x http://$OUT http://api/hello"
curl -sS -x "http://$OUT" http://api/hello | head -c 400; echo

step "7. POST is not in the policy: denied by api's sidecar before the app sees it"
echo "\$ curl -x http://$OUT -X POST http://api/hello"
curl -sS -x "http://$OUT" -X POST -w 'HTTP %{http_code}\n' http://api/hello

step "8. what api's sidecars counted (their /metrics)"
for v in v1 v2; do
	echo "api $v (http://$(field api-$v-proxy admin)/metrics):"
	# Istio's standard labels; a few of them shown.
	curl -sS "http://$(field api-$v-proxy admin)/metrics" | grep -E '^sigil_(requests_total|policy_decisions_total)' |
		sed -E 's/\{.*reporter="([^"]*)".*response_code="([^"]*)".*source_principal="([^"]*)".*\}/{reporter="\1",response_code="\2",source_principal="\3",...}/; s/^/  /'
done

step "9. a canary: sigil apply -f demo/canary.yaml (Istio DestinationRule + VirtualService, 90/10)"
"$BIN/sigil" apply -f demo/canary.yaml
for _ in $(seq 100); do
	"$BIN/sigil" get proxies | grep -q STALE || break
	sleep 0.1
done
"$BIN/sigil" get proxies
echo "sending 500 requests from web to api..."
v1=0; v2=0
for _ in $(seq 500); do
	case "$(curl -sS -x "http://$OUT" http://api/)" in
		*'"service":"api-v1"'*) v1=$((v1+1)) ;;
		*'"service":"api-v2"'*) v2=$((v2+1)) ;;
	esac
done
echo "measured split: v1 $((v1*100/500))% ($v1), v2 $((v2*100/500))% ($v2)   (configured 90/10)"
# 10% of 500 is 50 +/- 7: far outside 20..100 the canary did not apply.
if [ "$v2" -lt 20 ] || [ "$v2" -gt 100 ] || [ $((v1+v2)) -ne 500 ]; then
	echo "the measured split is not the configured 90/10: the canary did not take effect"; exit 1
fi

step "10. the audit trail (every token, attestation, issuance and CA event)"
cut -c1-150 "$DIR/server/audit.log" | tail -4

step "11. golden metrics without Prometheus: sigil stat (sidecars → agents → server)"
# Live traffic until the demo ends: web calls api 10 times a second, and
# one call in 20 is a POST the policy denies (the dashboard's denials).
(
	i=0
	while :; do
		i=$((i+1))
		if [ $((i % 20)) = 0 ]; then
			curl -s -o /dev/null -x "http://$OUT" -X POST http://api/hello || true
		else
			curl -s -o /dev/null -x "http://$OUT" http://api/ || true
		fi
		sleep 0.1
	done
) &
pids+=($!)
for _ in $(seq 100); do
	"$BIN/sigil" stat -n demo -o json 2>/dev/null | grep -q '"rps": [1-9]' && break
	sleep 0.2
done
"$BIN/sigil" stat -n demo --window 1m
"$BIN/sigil" stat subset -n demo --window 1m
"$BIN/sigil" edges -n demo --window 1m

step "12. a rollout in progress: sigil rollout api --to v2 (10, 25, 50, 100 %, judged by v2's success rate and p99)"
"$BIN/sigil" rollout api -n demo --from v1 --to v2 --steps 10,25,50,100 --interval 60s \
	--min-success-rate 95 --max-p99 500ms --report-delay 5s >"$DIR/rollout.log" 2>&1 &
pids+=($!)
echo "rollout log: $DIR/rollout.log"

if [ "${SIGIL_DEMO_KEEP:-1}" = 0 ]; then
	exit 0
fi
step "running: dashboard $DASHURL — Ctrl-C to stop"
echo "try: SIGIL_ADMIN_SOCKET=$SIGIL_ADMIN_SOCKET bin/sigil tap api -n demo --max 5"
echo "     SIGIL_ADMIN_SOCKET=$SIGIL_ADMIN_SOCKET bin/sigil top api -n demo"
echo "     curl -x http://$OUT http://api/"
wait
