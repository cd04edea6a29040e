#!/usr/bin/env bash
# Fuzzes a live control plane with schemathesis (from PyPI, in a virtualenv under target/)
# against docs/openapi.json: every check on, as an operator, a provider and a customer. The
# signed agent routes are left out (they have their own tests). Fails on any finding.
#
#   scripts/schemathesis.sh [BERTH_BINARY]   (default target/debug/berth)
#
# Routes with ids get real ones half of the time (an offering, an instance, accounts, a saved
# key, a spare token, made before the run). The run is reproducible: a fixed seed (BERTH_FUZZ_SEED, default 20261206), a fixed number of
# cases per operation (BERTH_FUZZ_EXAMPLES, default 100) and no example database carried over
# from earlier runs (a time budget would make schemathesis repeat until it is spent);
# BERTH_FUZZ_SECONDS (default 600) only stops a run that hangs; BERTH_FUZZ_ARGS passes more
# arguments to schemathesis (e.g. `--report vcr`). Try other seeds and more cases
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
    cp "$work/server.log" target/schemathesis-server.log 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
# The fuzzer is one client sending thousands of requests: rates high enough not to hide
# routes behind 429s (the rate limits have their own tests). Long polls do not wait (a fixed
# `wait=0s`), or fuzzed waits of up to a minute each would fill the run.
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
# Event streams end soon, so a fuzzed stream costs seconds, not the default quarter hour.
stream_max_seconds = 3
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

# Things that exist, so the id routes are reached with real ids as well as made-up ones: half
# of the cases of a route with an id take one of these (schemathesis dictionaries).
call() { # TOKEN METHOD PATH [BODY]
    curl -fsS -X "$2" -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
        ${4:+-d "$4"} "$url/api/v1/$3"
}
ssh_key='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl fuzz@berth'
age_key='age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'
provider_id=$(call "$operator" GET providers | jq -r '.[0].id')
customer_id=$(call "$operator" GET customers | jq -r '.[0].id')
offering_id=$(call "$provider" POST offerings '{"name": "fuzz", "cores": 1, "memory_mib": 1024, "disk_gib": 10}' | jq -r .id)
instance_id=$(call "$customer" POST orders "{\"offering_id\": \"$offering_id\", \"name\": \"fuzz\",
    \"ssh_public_key\": \"$ssh_key\", \"requester_public_key\": \"$age_key\", \"provision\": false}" | jq -r .instance_id)
key_id=$(call "$customer" POST keys "{\"kind\": \"ssh\", \"name\": \"fuzz\", \"public_key\": \"$ssh_key\"}" | jq -r .id)
spare_token=$(call "$customer" POST tokens '{"name": "spare"}' | jq -r .view.id)
config="$work/schemathesis.toml"
cp scripts/schemathesis.toml "$config"
cat >> "$config" <<TOML

[dictionaries.instances]
values = ["$instance_id"]
[dictionaries.offerings]
values = ["$offering_id"]
[dictionaries.accounts]
values = ["$provider_id", "$customer_id"]
[dictionaries.customers]
values = ["$customer_id", "default"]
[dictionaries.keys]
values = ["$key_id"]
[dictionaries.tokens]
values = ["$spare_token"]

[[operations]]
include-path-regex = "^/api/v1/instances/[{]id[}]"
parameters = { "path.id" = { dictionary = "instances", probability = 0.5 } }
[[operations]]
include-path-regex = "^/api/v1/offerings/[{]id[}]"
parameters = { "path.id" = { dictionary = "offerings", probability = 0.5 } }
[[operations]]
include-path-regex = "^/api/v1/(accounts|providers)/[{]id[}]"
parameters = { "path.id" = { dictionary = "accounts", probability = 0.5 }, "path.customer" = { dictionary = "customers", probability = 0.5 }, "path.token" = { dictionary = "tokens", probability = 0.5 } }
[[operations]]
include-path-regex = "^/api/v1/keys/[{]id[}]"
parameters = { "path.id" = { dictionary = "keys", probability = 0.5 } }
[[operations]]
include-path-regex = "^/api/v1/operations/[{]id[}]\$"
parameters = { "query.wait" = "0s" }
[[operations]]
include-path-regex = "^/api/v1/tokens/[{]id[}]"
parameters = { "path.id" = { dictionary = "tokens", probability = 0.5 } }
TOML

# Each caller in two passes: everything but the routes that end a token, then those. The
# stateful phase finds the caller's own token id (GET /tokens) and may revoke or rotate it;
# in one pass that would turn every later case into a 401.
status=0
for who in operator provider customer; do
    token=${!who}
    for pass in main revoking; do
        case $pass in
            main) select=(--exclude-path-regex '^/api/v1/agent/|/(revoke|rotate)$') ;;
            revoking) select=(--exclude-path-regex '^/api/v1/agent/' --include-path-regex '/(revoke|rotate)$') ;;
        esac
        echo "==> schemathesis as $who, $pass routes (seed $SEED, $EXAMPLES cases per operation)"
        # shellcheck disable=SC2086 # BERTH_FUZZ_ARGS is a list of arguments
        if ! BERTH_FUZZ_TOKEN=$token SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=scripts timeout "$SECONDS_EACH" \
            "$VENV/bin/schemathesis" --config-file "$config" --no-color run docs/openapi.json --url "$url" \
            --checks all \
            "${select[@]}" \
            --seed "$SEED" \
            --max-examples "$EXAMPLES" \
            --generation-database none \
            --workers 2 \
            --suppress-health-check too_slow,filter_too_much ${BERTH_FUZZ_ARGS:-}; then
            status=1
        fi
    done
done
if [ "$status" -ne 0 ]; then
    echo "==> schemathesis found problems; the server's log is kept in target/schemathesis-server.log"
fi
exit "$status"
