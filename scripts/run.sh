#!/usr/bin/env bash
# Runs Berth end to end on this machine: builds it, starts the Proxmox VE emulator on loopback (a
# stand-in for a real cluster), writes a berth.toml that pins the emulator's TLS certificate,
# checks it with `berth doctor`, creates a VM with a fresh SSH key, lists it, and keeps the
# emulated cluster running so you can try more `berth vm` / `berth ct` commands. Ctrl-C stops it.
#
# The control plane (`berth up`) replaces this once it exists; see README.md.
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
"$bin/berth-pve-emulator" --listen 127.0.0.1:0 --clone-ms 2000 --start-ms 1000 --agent-ready-ms 1000 \
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

[ -f "$run/id_ed25519" ] || "$bin/berth" keygen --out "$run/id_ed25519" --comment "berth-demo"

echo "==> berth doctor"
"$bin/berth" doctor
echo "==> berth vm create"
"$bin/berth" vm create --name demo1 --cores 2 --memory-mib 2048 --disk-gib 20 \
    --ssh-key-file "$run/id_ed25519.pub" --instance-id demo1
echo "==> berth vm list"
"$bin/berth" vm list

cat <<MSG

The emulated Proxmox cluster is running at $url. Try, in another shell:
  export BERTH_CONFIG=$BERTH_CONFIG
  $bin/berth vm describe demo1
  $bin/berth vm reboot demo1
  $bin/berth ct create --name ct1 --ssh-key-file $run/id_ed25519.pub
  $bin/berth vm delete demo1
Ctrl-C stops the emulator.
MSG
wait $emu
