#!/usr/bin/env bash
# Builds Berth's Debian packages with dpkg-deb (no extra tools):
#   berth_<version>_<arch>.deb        `berth` (control plane, CLI, dashboard) + berth-server.service
#   berth-agent_<version>_<arch>.deb  the lean `berth-agent` + berth-agent.service
# Both create the `berth` system user and /etc/berth (root:berth 0750); the services are installed,
# not enabled. Usage:
#   scripts/package-deb.sh [--profile release|debug] [--no-build] [--out DIR]
# --no-build packages binaries already in target/<profile>/ (the tests use this).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
out=target/debian
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument: $1 (expected --profile, --no-build, --out)" >&2; exit 2 ;;
    esac
done
dir=$profile
[ "$profile" = dev ] && dir=debug
[ "$profile" = debug ] && profile=dev
# Release packages are compressed hard; the tests' debug ones (~300 MB of binary) quickly.
compress=(-Zxz)
[ "$dir" = debug ] && compress=(-Zgzip -z1)

if [ "$build" = 1 ]; then
    . scripts/lib.sh
    berth_need_rust
    berth_need_packages libvirt-dev pkg-config
    cargo build --locked --profile "$profile" -p berth --bin berth
    cargo build --locked --profile "$profile" -p berth-agent --bin berth-agent
fi
for b in berth berth-agent; do
    [ -x "target/$dir/$b" ] || { echo "target/$dir/$b is missing: build it or drop --no-build" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The system user both packages run as.
postinst='#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd berth >/dev/null; then
        adduser --system --group --home /var/lib/berth --no-create-home --quiet berth
    fi
    install -d -o root -g berth -m 0750 /etc/berth
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
'
postrm='#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
'

# package NAME BINARY UNIT DEPENDS DESCRIPTION [CONFFILE SRC DEST]...
package() {
    local name=$1 bin=$2 unit=$3 depends=$4 description=$5
    shift 5
    local root="$work/$name"
    install -D -m 0755 "target/$dir/$bin" "$root/usr/bin/$bin"
    install -D -m 0644 "packaging/systemd/$unit" "$root/usr/lib/systemd/system/$unit"
    install -D -m 0644 README.md "$root/usr/share/doc/$name/README.md"
    install -D -m 0644 docs/operations.md "$root/usr/share/doc/$name/operations.md"
    install -d -m 0755 "$root/DEBIAN"
    : > "$root/DEBIAN/conffiles"
    local own=""
    while [ $# -gt 0 ]; do
        case "$2" in
            /etc/*)
                # Configuration: kept on upgrade, readable by the service's group only.
                install -D -m 0640 "$1" "$root$2"
                echo "$2" >> "$root/DEBIAN/conffiles"
                own="$own $2" ;;
            *) install -D -m 0644 "$1" "$root$2" ;;
        esac
        shift 2
    done
    [ -s "$root/DEBIAN/conffiles" ] || rm "$root/DEBIAN/conffiles"
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: Berth developers <berth@localhost>
Section: admin
Priority: optional
Depends: $depends
Installed-Size: $(du -sk "$root" | cut -f1)
Description: $description
 Berth provisions virtual machines for hosting providers: a control plane that takes
 orders, agents beside the hypervisors (Proxmox VE, libvirt, scripts, Multipass,
 manual), and live progress until the machine runs.
CONTROL
    printf '%s' "$postinst" > "$root/DEBIAN/postinst"
    for f in $own; do
        printf 'if [ "$1" = configure ] && [ -e %s ]; then chgrp berth %s; fi\n' "$f" "$f" >> "$root/DEBIAN/postinst"
    done
    printf '%s' "$postrm" > "$root/DEBIAN/postrm"
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm"
    dpkg-deb "${compress[@]}" --root-owner-group --build "$root" "$out/${name}_${version}_${arch}.deb" >/dev/null
    echo "$out/${name}_${version}_${arch}.deb"
}

package berth berth berth-server.service "libc6, libvirt0, adduser" \
    "Berth: VM provisioning for hosting providers (control plane and CLI)" \
    packaging/server.toml /etc/berth/server.toml
package berth-agent berth-agent berth-agent.service "libc6, adduser" \
    "Berth agent: provisions machines on a site's hypervisors" \
    packaging/berth.toml.example /usr/share/doc/berth-agent/berth.toml.example
