#!/usr/bin/env bash
# Runs Berth end to end on this machine: builds it, starts the Proxmox VE emulator on loopback (a
# stand-in for a real cluster; no KVM or real hypervisor needed), writes the agent's berth.toml
# that pins the emulator's TLS certificate, checks it with `berth doctor`, then runs `berth up
# --demo`: the control plane on SQLite, a local agent enrolled with it, an offering, and one
# order followed stage by stage until the VM runs. Both keep running for more commands; Ctrl-C
# stops them (the agent checkpoints running work). With a real host, point --config at a file
# naming libvirt or a real Proxmox cluster instead (README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
berth_need_rust

echo "==> building berth and the PVE emulator (release)"
cargo build --release --locked -p berth -p berth-pve-emulator
bin=target/release
run=.berth-run
mkdir -p "$run"
chmod 700 "$run"

echo "==> starting the Proxmox VE emulator (clone 2 s, start 1 s, guest agent 1 s)"
rm -f "$run/emulator.out"
"$bin/berth-pve-emulator" --guest-exec --listen 127.0.0.1:0 --clone-ms 2000 --start-ms 1000 --agent-ready-ms 1000 \
    >"$run/emulator.out" 2>"$run/emulator.log" &
emu=$!
trap 'kill $emu 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
    grep -q '^token_secret=' "$run/emulator.out" 2>/dev/null && break
    kill -0 $emu 2>/dev/null || { cat "$run/emulator.log"; exit 1; }
    sleep 0.1
done
grep -q '^token_secret=' "$run/emulator.out" 2>/dev/null || {
    echo "the emulator did not start:" >&2
    cat "$run/emulator.log" >&2
    exit 1
}
val() { sed -n "s/^$1=//p" "$run/emulator.out"; }
url=$(val url)
(umask 077 && val token_secret >"$run/token")

cat >"$run/berth.toml" <<TOML
[provisioner]
type = "proxmox"

[provisioner.proxmox]
api_url = "$url"
api_token_id = "$(val token_id)"
api_token_secret_file = "token"
node = "pve1"
template_vmid = 9000
storage = "local-lvm"
pool = "berth"
tls_fingerprint = "sha256:$(val fingerprint)"
ct_template = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
TOML
export BERTH_CONFIG="$PWD/$run/berth.toml"

echo "==> berth doctor (the backend side of the agent's file)"
"$bin/berth" doctor
rm -rf "$run/data"  # the emulated cluster starts empty each run: so does the control plane
echo "==> berth up --demo: control plane + local agent, one order to a running VM"
"$bin/berth" up --demo --data-dir "$run/data" --listen 127.0.0.1:8420 &
up=$!
trap 'kill $up 2>/dev/null || true; wait $up 2>/dev/null || true; kill $emu 2>/dev/null || true' EXIT INT TERM
wait $up
