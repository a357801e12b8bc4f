#!/usr/bin/env bash
# make demo: a working identity plane on the embedded default.
# Starts sigil-server (CA + SQLite registry) and one sigil-agent, registers
# this shell's uid as a workload, and fetches its SVIDs over the SPIFFE
# Workload API with go-spiffe (inside `sigil-agent api fetch`).
# Everything lives in a temporary directory and stops when the demo ends;
# set SIGIL_DEMO_KEEP=1 to keep it running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
DIR=$(mktemp -d /tmp/sigil-demo.XXXXXX)
chmod 755 "$DIR"
TD=example.org
pids=()
cleanup() {
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
"$BIN/sigil-server" run --data-dir "$DIR/server" --trust-domain $TD --bind 127.0.0.1:0 2>"$DIR/server.log" &
pids+=($!)
wait_log "$DIR/server.log" '"sigil-server running"'
ADDR=$(grep -o '"agent_api":"[^"]*"' "$DIR/server.log" | head -1 | cut -d'"' -f4)
echo "agent API on $ADDR, admin socket $DIR/server/admin.sock"
"$BIN/sigil-server" bundle show --data-dir "$DIR/server" > "$DIR/bundle.pem"
echo "trust bundle written to $DIR/bundle.pem"

step "2. a join token for node1, and an entry: uid $(id -u) on node1 is spiffe://$TD/ns/demo/sa/web"
TOKEN=$("$BIN/sigil-server" token generate --data-dir "$DIR/server" --node node1)
"$BIN/sigil-server" entry create --data-dir "$DIR/server" \
	--parent-id spiffe://$TD/sigil/agent/join_token/node1 \
	--spiffe-id spiffe://$TD/ns/demo/sa/web --selector "unix:uid:$(id -u)"

step "3. sigil-agent attests node1 with the token and opens the Workload API"
"$BIN/sigil-agent" run --server "$ADDR" --trust-bundle "$DIR/bundle.pem" --join-token "$TOKEN" \
	--data-dir "$DIR/agent" --socket "$DIR/agent.sock" 2>"$DIR/agent.log" &
pids+=($!)
wait_log "$DIR/agent.log" '"sigil-agent running"'
grep -o '"agent_id":"[^"]*"' "$DIR/agent.log" | head -1

step "4. the workload fetches its X.509-SVID (SPIFFE ID, expiry, chain)"
"$BIN/sigil-agent" api fetch x509 --socket "$DIR/agent.sock"

step "5. and a JWT-SVID for audience 'api', checked against the JWT bundle"
"$BIN/sigil-agent" api fetch jwt --audience api --socket "$DIR/agent.sock" | head -2

step "6. the audit trail (every token, attestation, issuance and CA event)"
cut -c1-160 "$DIR/server/audit.log" | tail -5

if [ "${SIGIL_DEMO_KEEP:-}" = 1 ]; then
	step "running; Workload API at $DIR/agent.sock — Ctrl-C to stop"
	wait
fi
