#!/usr/bin/env bash
# Example Berth script backend (protocol 1) in bash. Needs: bash, jq (Debian: apt-get install jq),
# coreutils (sha256sum, mktemp, mv, sync).
#
# THIS IS AN EXAMPLE TO COPY AND ADAPT. It "makes" machines by writing JSON files into a state
# directory ($BERTH_EXAMPLE_STATE) so that it runs anywhere, including Berth's test suite. A real
# backend replaces the lines marked `ADAPT:` with calls to its own tooling (virt-install/virsh,
# the OpenStack CLI, a cloud API ...), keeping the protocol handling around them.
#
#   [provisioner.script]
#   command = "berth-backend.sh"          # relative to the config file's directory
#   env = { BERTH_EXAMPLE_STATE = "/var/lib/berth-example" }
#
# Rules this example keeps (every backend must): idempotent by contract_id; exit 0 exactly when
# "success" is true; one JSON object on stdout, logs on stderr, progress as
# `berth-stage: <stage> <phase>`; "code": "not_found" for missing machines; state written
# atomically and durably (temp file, sync, mv, sync of the directory), so a kill or a crash at
# any moment leaves no half-made machine.
set -euo pipefail

reply() { printf '%s\n' "$1"; exit 0; }
fail() { # message [code] [retry_possible]
    jq -cn --arg e "$1" --arg c "${2:-internal}" --argjson r "${3:-false}" \
        '{success: false, error: $e, code: $c, retry_possible: $r}'
    exit 1
}
log() { printf '%s\n' "$*" >&2; }
stage() { printf 'berth-stage: %s %s\n' "$1" "$2" >&2; }

command -v jq >/dev/null || { printf '{"success":false,"error":"jq is not installed","code":"unavailable"}\n'; exit 1; }

STATE="${BERTH_EXAMPLE_STATE:-}"
[ -n "$STATE" ] || fail "BERTH_EXAMPLE_STATE is not set: set it in [provisioner.script] env" unavailable
mkdir -p "$STATE"

REQ="$(cat)"
jq -e 'type == "object"' >/dev/null 2>&1 <<<"$REQ" || fail "the request is not a JSON object" invalid_spec
field() { jq -r "$1 // empty" <<<"$REQ"; }

[ "$(field .protocol)" = "1" ] || fail "this backend speaks protocol 1, got $(field .protocol)" unsupported
ACTION="$(field .action)"
CONTRACT="$(field .contract_id)"
EXTERNAL="$(field .external_id)"

external_id_for() { printf 'vm-%s' "$(printf '%s' "$1" | sha256sum | cut -c1-12)"; }
# Deterministic private address from the contract id: 10.a.b.c with c in 2..254.
address_for() {
    local h
    h="$(printf 'addr:%s' "$1" | sha256sum)"
    printf '10.%d.%d.%d' "$((16#${h:0:2}))" "$((16#${h:2:2}))" "$((2 + 16#${h:4:2} % 253))"
}
path_for() { [[ "$1" =~ ^vm-[0-9a-f]{12}$ ]] && printf '%s/%s.json' "$STATE" "$1"; }
save() { # json
    local tmp dest
    dest="$(path_for "$(jq -r .external_id <<<"$1")")"
    tmp="$(mktemp "$STATE/.tmp-XXXXXX")"
    printf '%s\n' "$1" >"$tmp"
    sync "$tmp"      # the data is on disk before the rename makes it visible
    mv -f "$tmp" "$dest"
    sync "$STATE"    # and the rename itself survives a crash
}
# Sets MACHINE to the machine the request names (by contract_id, else external_id), or "".
# (Globals, not $(...): `fail` must exit the script, not a subshell.)
find_machine() {
    local p
    MACHINE=""
    if [ -n "$CONTRACT" ]; then
        p="$(path_for "$(external_id_for "$CONTRACT")")" || return 0
        if [ -f "$p" ]; then MACHINE="$(jq -c --arg c "$CONTRACT" 'select(.contract_id == $c)' "$p")"; fi
    elif [ -n "$EXTERNAL" ]; then
        p="$(path_for "$EXTERNAL")" || return 0
        if [ -f "$p" ]; then MACHINE="$(jq -c . "$p")"; fi
    else
        fail "the request names no machine: give contract_id or external_id" invalid_spec
    fi
}
found() {
    find_machine
    [ -n "$MACHINE" ] || fail "no machine for ${CONTRACT:-$EXTERNAL}" not_found
}

case "$ACTION" in
provision)
    [ -n "$CONTRACT" ] || fail "provision needs a contract_id" invalid_spec
    find_machine
    if [ -n "$MACHINE" ]; then
        log "contract $CONTRACT already has $(jq -r .external_id <<<"$MACHINE"): returning it"
        reply "$(jq -c '{success: true, instance: .}' <<<"$MACHINE")"
    fi
    [ "$(field .instance_config.kind)" = "container" ] && fail "this backend makes VMs only" invalid_spec
    id="$(external_id_for "$CONTRACT")"
    stage configure_vm started
    # ADAPT: create the machine here, e.g. virt-install --name "$id" --vcpus ... or
    # openstack server create --property berth_contract="$CONTRACT" ...
    machine="$(jq -c --arg id "$id" --arg ip "$(address_for "$CONTRACT")" '{
        external_id: $id, contract_id: .contract_id, name: .instance_config.name, state: "running",
        ip_address: $ip, ssh_port: 22, cpu_cores: .offering.cpu_cores,
        memory_mib: .offering.memory_mib, disk_gib: .offering.disk_gib}' <<<"$REQ")"
    stage configure_vm completed
    stage start_vm started
    save "$machine"
    stage start_vm completed
    log "provisioned $id for contract $CONTRACT"
    reply "$(jq -c '{success: true, instance: .}' <<<"$machine")"
    ;;
status)
    found
    reply "$(jq -c '{success: true, instance: .}' <<<"$MACHINE")"
    ;;
start | stop)
    want=running
    [ "$ACTION" = stop ] && want=stopped
    found
    # ADAPT: virsh start/destroy, openstack server start/stop ...
    m="$(jq -c --arg s "$want" '.state = $s' <<<"$MACHINE")"
    save "$m"
    reply "$(jq -c '{success: true, instance: .}' <<<"$m")"
    ;;
terminate)
    found
    id="$(jq -r .external_id <<<"$MACHINE")"
    # ADAPT: virsh destroy + undefine --remove-all-storage, openstack server delete ...
    rm -f "$(path_for "$id")"
    log "terminated $id"
    reply '{"success": true}'
    ;;
list)
    shopt -s nullglob
    files=("$STATE"/vm-*.json)
    if [ "${#files[@]}" -eq 0 ]; then
        reply '{"success": true, "instances": []}'
    fi
    reply "$(jq -cs '{success: true, instances: .}' "${files[@]}")"
    ;;
health)
    [ -w "$STATE" ] || fail "state directory $STATE is not writable" unavailable
    reply '{"success": true}'
    ;;
*)
    fail "unknown action ${ACTION:-<none>}" unsupported
    ;;
esac
