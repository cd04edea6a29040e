#!/usr/bin/env bash
# Builds the tiny x86_64 guest disk that the libvirt backend's real-VM tests boot:
#   scripts/build-test-image.sh OUTDIR   ->   OUTDIR/berth-test.qcow2 (its path is printed last)
#
# Everything comes from Debian's packages: the kernel is Debian's current linux-image-*-amd64 (the
# one linux-image-amd64 depends on, fetched with `apt-get download`, never installed), userland is
# busybox-static, and the boot loader is syslinux. The disk is an unpartitioned FAT "superfloppy"
# carrying syslinux's boot sector, vmlinuz, initrd.gz and syslinux.cfg; SeaBIOS boots it like any
# hard disk (no -kernel needed). The guest lives entirely in its initramfs: scripts/test-image/init
# reads the NoCloud seed (CD-ROM `cidata`), prints `berth-guest: ...` lines on ttyS0, takes an
# address by DHCP, answers the QEMU guest agent protocol (scripts/test-image/berth-qga) and powers
# off on the ACPI power button. See those files for what the guest does.
#
# Cached: OUTDIR/.berth-test.stamp holds a key made of this script's and scripts/test-image/*'s
# sha256 and the kernel package's name and version; when it matches and the image exists, nothing
# is done. Concurrent runs on one OUTDIR are serialised with flock. Work files go to OUTDIR/.work
# and are removed at the end. Progress goes to stderr; stdout is just the image's path.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
self=$here/$(basename "${BASH_SOURCE[0]}")
files=$here/test-image
mkdir -p "$1"
out=$(cd "$1" && pwd)
image=$out/berth-test.qcow2
stamp=$out/.berth-test.stamp
work=$out/.work

exec 9>"$out/.lock"
flock 9
# Progress and tool output go to stderr; stdout carries only the image path, printed last.
exec 3>&1 1>&2

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The kernel ABI package that linux-image-amd64 depends on (e.g. linux-image-6.1.0-56-amd64) and
# its version, into $kpkg and $kver; the cache key follows from them.
resolve_kernel() {
    local dep
    # `|| true`: without package lists apt-cache fails, and set -e must not end the script here.
    dep=$({ apt-cache show --no-all-versions linux-image-amd64 2>/dev/null || true; } | sed -n 's/^Depends: //p' |
        tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*-amd64\)\( (= \([^)]*\))\)\{0,1\}.*/\1 \3/p' |
        head -n 1)
    kpkg=${dep% *}
    kver=${dep#* }
    if [ -n "$kpkg" ] && [ -z "$kver" ]; then
        kver=$({ apt-cache show --no-all-versions "$kpkg" 2>/dev/null || true; } | sed -n 's/^Version: //p' | head -n 1)
    fi
    key="$(cat "$self" "$files"/* | sha256sum | cut -d' ' -f1) $kpkg $kver"
}
resolve_kernel
if [ -z "$kver" ]; then # a fresh machine may not have package lists yet
    $sudo apt-get update -qq
    resolve_kernel
fi
[ -n "$kver" ] || { echo "cannot resolve the kernel package behind linux-image-amd64" >&2; exit 1; }

if [ -f "$image" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
    echo "$image" >&3
    exit 0
fi

# Build tools. lib.sh's helper runs plain `apt-get install`; APT_CONFIG turns recommends off for
# it (as root; sudo drops the variable, and none of these packages recommends anything anyway).
# qemu-utils is only checked: when it is installed, nothing here changes its version.
norec=$(mktemp)
echo 'APT::Install-Recommends "false";' >"$norec"
APT_CONFIG=$norec berth_need_packages busybox-static cpio dosfstools mtools syslinux syslinux-common \
    qemu-utils
rm -f "$norec"
resolve_kernel # that may have refreshed the package lists

echo "==> building $image from $kpkg $kver"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"

# 1. The kernel: download the .deb and unpack it here (about 400 MB, removed at the end).
download() { apt-get download -qq -o APT::Sandbox::User=root "$kpkg=$kver"; }
if ! download; then # stale package lists name a version the mirror no longer has
    $sudo apt-get update -qq
    resolve_kernel
    download
fi
dpkg-deb -x "$kpkg"_*.deb kernel
abi=${kpkg#linux-image-}
moddir=lib/modules/$abi
[ -f "kernel/boot/vmlinuz-$abi" ] || { echo "no vmlinuz-$abi in $kpkg" >&2; exit 1; }
# Debian's package ships no modules.dep (its postinst runs depmod); busybox's depmod makes one,
# listing each module's whole dependency closure.
busybox depmod -b "$work/kernel" "$abi"

# The drivers init loads, all modules in Debian's config (CONFIG_...=m). Everything else the guest
# needs (8250 serial console, ACPI, devtmpfs, initramfs gzip, IPv4/IPv6, AF_PACKET) is built in.
mods="virtio_pci virtio_blk virtio_net virtio_console ahci sr_mod isofs button evdev"

# 2. The initramfs tree: busybox with all its applets, the modules, the guest's scripts.
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,run,tmp,etc/acpi/PWRF,root,home,mnt,var/log}
ln -s bin "$root/sbin"
mkdir -p "$root/usr" && ln -s ../bin "$root/usr/bin" && ln -s ../bin "$root/usr/sbin"
cp /bin/busybox "$root/bin/busybox"
for a in $(busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
done
for m in $mods; do
    line=$(awk -v m="$m" '{ f = $1; sub(/:$/, "", f); b = f; sub(/.*\//, "", b); sub(/\.ko$/, "", b)
        gsub(/-/, "_", b); if (b == m) { print; exit } }' "kernel/$moddir/modules.dep")
    [ -n "$line" ] || { echo "module $m is not in $kpkg" >&2; exit 1; }
    for f in $(echo "$line" | tr -d ':'); do
        mkdir -p "$root/$moddir/$(dirname "$f")"
        cp "kernel/$moddir/$f" "$root/$moddir/$f"
    done
done
cp "kernel/$moddir/modules.builtin" "kernel/$moddir/modules.order" "$root/$moddir/"
busybox depmod -b "$root" "$abi"
install -m 755 "$files/init" "$root/init"
install -m 755 "$files/berth-qga" "$root/bin/berth-qga"
install -m 755 "$files/udhcpc.script" "$root/etc/udhcpc.script"
printf '#!/bin/sh\n# ACPI power button, reported by busybox acpid\necho "berth-guest: acpi power button" >/dev/console\nsync\npoweroff -f\n' \
    >"$root/etc/acpi/PWRF/00000080"
chmod 755 "$root/etc/acpi/PWRF/00000080"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
chmod 700 "$root/root"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >initrd.gz

# 3. The boot disk: FAT with syslinux, sized to fit with 2 MiB to spare, then qcow2.
cp "kernel/boot/vmlinuz-$abi" vmlinuz
cat >syslinux.cfg <<'CFG'
DEFAULT berth
PROMPT 0
TIMEOUT 0
LABEL berth
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet
CFG
kib=$(( ($(stat -c %s vmlinuz) + $(stat -c %s initrd.gz)) / 1024 + 2048 ))
mkfs.fat -C -n BERTH boot.img "$kib" >/dev/null
mcopy -i boot.img vmlinuz initrd.gz syslinux.cfg ::/
syslinux --install boot.img
qemu-img convert -f raw -O qcow2 boot.img image.qcow2
mv -f image.qcow2 "$image"
echo "$key" >"$stamp"
echo "==> $(du -h "$image" | cut -f1) image; kernel $abi ($kver), initrd $(du -h initrd.gz | cut -f1)"
echo "$image" >&3
