#!/usr/bin/env bash
# Installs the Debian packages that scripts/package-deb.sh made on this machine, checks them and
# removes them again: the binaries run, `systemd-analyze verify` accepts the units, the `berth`
# user and /etc/berth exist with the right modes. Needs root; refuses to touch a machine where a
# `berth` package is installed already (it would be replaced, then removed).
#   scripts/check-packages.sh DIR   (DIR holds berth_*.deb and berth-agent_*.deb)
set -euo pipefail
dir=${1:?usage: scripts/check-packages.sh DIR}
if [ "$(id -u)" -ne 0 ]; then
    echo "==> skipped: installing packages needs root"
    exit 0
fi
for p in berth berth-agent; do
    if dpkg -s "$p" >/dev/null 2>&1; then
        echo "==> skipped: the $p package is already installed here; not replacing it"
        exit 0
    fi
done
fail() { echo "package check FAILED: $*" >&2; exit 1; }
cleanup() { dpkg --purge berth berth-agent >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$dir"/berth_*.deb "$dir"/berth-agent_*.deb >/dev/null
/usr/bin/berth --version >/dev/null || fail "berth does not run"
/usr/bin/berth-agent --version >/dev/null || fail "berth-agent does not run"
/usr/bin/berth server openapi >/dev/null || fail "berth server openapi"
getent passwd berth >/dev/null || fail "no berth user"
[ "$(stat -c '%U:%G %a' /etc/berth)" = "root:berth 750" ] || fail "/etc/berth is $(stat -c '%U:%G %a' /etc/berth)"
[ "$(stat -c '%U:%G %a' /etc/berth/server.toml)" = "root:berth 640" ] || fail "/etc/berth/server.toml is $(stat -c '%U:%G %a' /etc/berth/server.toml)"
out=$(systemd-analyze verify /usr/lib/systemd/system/berth-server.service /usr/lib/systemd/system/berth-agent.service 2>&1 || true)
if [ -n "$out" ]; then
    echo "$out" >&2
    fail "systemd-analyze verify complained"
fi
dpkg --purge berth berth-agent >/dev/null
[ ! -e /usr/bin/berth ] || fail "berth left behind after purge"
echo "==> packages install, run, their units verify, and they purge cleanly"
