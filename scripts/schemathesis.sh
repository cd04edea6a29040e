#!/usr/bin/env bash
# Fuzzes a live control plane with schemathesis (from PyPI, in a virtualenv under target/)
# against docs/openapi.json: every check on, as an operator, a provider and a customer. The
# signed agent routes are left out (they have their own tests). Fails on any finding.
#
#   scripts/schemathesis.sh [BERTH_BINARY]   (default target/debug/berth)
#
# The run is reproducible: a fixed seed (BERTH_FUZZ_SEED, default 20261206), a fixed number of
# cases per operation (BERTH_FUZZ_EXAMPLES, default 100) and no example database carried over
# from earlier runs (a time budget would make schemathesis repeat until it is spent);
# BERTH_FUZZ_SECONDS (default 600) only stops a run that hangs. Try other seeds and more cases
# locally to explore further.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

berth_need_packages python3 python3-venv curl jq
BERTH=${1:-target/debug/berth}
SECONDS_EACH=${BERTH_FUZZ_SECONDS:-600}
SEED=${BERTH_FUZZ_SEED:-20261206}
EXAMPLES=${BERTH_FUZZ_EXAMPLES:-100}
VERSION=4.32.5
VENV=target/schemathesis-venv
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "==> schemathesis $VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"
fi

work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
# The fuzzer is one client sending thousands of requests: rates high enough not to hide
# routes behind 429s (the rate limits have their own tests).
cat > "$work/server.toml" <<TOML
listen = "127.0.0.1:$port"
[database]
sqlite = "$work/berth.db"
[api]
operator_token_file = "$work/operator-token"
[limits]
address_rate = 100000
address_burst = 100000
credential_rate = 100000
credential_burst = 100000
TOML
"$BERTH" server --config "$work/server.toml" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    curl -fsS "$url/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done
operator=$(cat "$work/operator-token")
account() {
    curl -fsS -X POST -H "Authorization: Bearer $operator" -H 'Content-Type: application/json' \
        -d "{\"name\": \"fuzz-$1\"}" "$url/api/v1/$1s" | jq -r .token
}
provider=$(account provider)
customer=$(account customer)

status=0
for who in operator provider customer; do
    token=${!who}
    echo "==> schemathesis as $who (seed $SEED, $EXAMPLES cases per operation)"
    if ! SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=scripts timeout "$SECONDS_EACH" "$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml --no-color run docs/openapi.json --url "$url" \
        --checks all \
        --exclude-path-regex '^/api/v1/agent/' \
        --header "Authorization: Bearer $token" \
        --seed "$SEED" \
        --max-examples "$EXAMPLES" \
        --generation-database none \
        --workers 2 \
        --suppress-health-check too_slow,filter_too_much; then
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "==> schemathesis found problems; the server's log: $work/server.log"
    tail -n 50 "$work/server.log"
fi
exit "$status"
