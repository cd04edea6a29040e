#!/usr/bin/env bash
# A private virtlogd + libvirtd for Berth's real-VM tests and benchmarks, in their own mount and
# network namespaces: state directories are fresh tmpfs mounts, the socket is in $DIR/sock, and
# no bridge or network libvirt might create can touch the host's namespace (guests use QEMU user
# networking). Needs root and libvirt-daemon-system + qemu-system-x86 (scripts/lib.sh installs
# them: berth_need_libvirt).
#
#   scripts/test-libvirtd.sh start   # starts it unless it already answers; prints the URI
#   scripts/test-libvirtd.sh stop
#   scripts/test-libvirtd.sh uri
set -euo pipefail

DIR=${BERTH_TEST_LIBVIRTD_DIR:-/tmp/berth-test-libvirtd}
SOCK="$DIR/sock/libvirt-sock"
URI="qemu:///system?socket=$SOCK"

alive() {
    [ -S "$SOCK" ] && virsh -c "$URI" version >/dev/null 2>&1
}

inner() {
    set -e
    # /run/dbus hidden: no registration with the host's systemd-machined.
    for d in /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /etc/libvirt/qemu /run/dbus; do
        mkdir -p "$d"
        mount -t tmpfs -o mode=0755 tmpfs "$d"
    done
    # A private qemu.conf: the host's settings, but no security driver, so no AppArmor profiles
    # are written to the host or loaded into its kernel.
    { grep -v '^ *security_driver' /etc/libvirt/qemu.conf 2>/dev/null || true; echo 'security_driver = "none"'; } >"$DIR/qemu.conf"
    mount --bind "$DIR/qemu.conf" /etc/libvirt/qemu.conf
    ip link set lo up
    # Some build machines have a root-only /dev/kvm (0600): libvirt then sees KVM as usable when
    # it probes QEMU but not when it checks the probe, and re-probes on every define (minutes).
    # Inside this namespace only, /dev/kvm gets Debian's usual mode, 0660 root:kvm.
    if [ -c /dev/kvm ]; then
        mkdir -p "$DIR/nsdev"
        mount -t tmpfs -o mode=0755 tmpfs "$DIR/nsdev"
        mknod "$DIR/nsdev/kvm" c "$((0x$(stat -c %t /dev/kvm)))" "$((0x$(stat -c %T /dev/kvm)))"
        chgrp kvm "$DIR/nsdev/kvm" 2>/dev/null || true
        chmod 0660 "$DIR/nsdev/kvm"
        mount --bind "$DIR/nsdev/kvm" /dev/kvm
    fi
    virtlogd -d -p "$DIR/virtlogd.pid"
    exec libvirtd --config "$DIR/libvirtd.conf" --pid-file "$DIR/libvirtd.pid"
}

start() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "test-libvirtd: needs root (it mounts tmpfs in its own namespaces)" >&2
        exit 1
    fi
    for p in libvirtd virtlogd virsh unshare qemu-system-x86_64; do
        command -v "$p" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin"
        command -v "$p" >/dev/null 2>&1 || { echo "test-libvirtd: $p is not installed" >&2; exit 1; }
    done
    private_dir
    exec 9>"$DIR/.lock"
    flock 9
    if alive; then
        echo "$URI"
        return
    fi
    stop_daemons
    rm -f "$SOCK"
    cat >"$DIR/libvirtd.conf" <<CONF
unix_sock_dir = "$DIR/sock"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
CONF
    DIR="$DIR" setsid unshare --mount --net --propagation private --fork -- \
        bash -c "$(declare -f inner); inner" </dev/null >"$DIR/daemon.log" 2>&1 9>&- &
    for _ in $(seq 1 300); do
        if alive; then
            echo "$URI"
            return
        fi
        sleep 0.1
    done
    echo "test-libvirtd: libvirtd did not come up in 30 s; its log:" >&2
    cat "$DIR/daemon.log" >&2
    exit 1
}

# $DIR is written as root and configures a root daemon without authentication: it must be
# root's own directory, not something another user created (or a symlink) at that path.
private_dir() {
    mkdir -p -m 0700 "$DIR"
    if [ -L "$DIR" ] || [ "$(stat -c %u "$DIR")" != 0 ]; then
        echo "test-libvirtd: $DIR is not a directory owned by root; remove it" >&2
        exit 1
    fi
    chmod 0700 "$DIR"
    mkdir -p "$DIR/sock"
}

# Guests first (a failed test may leave busy TCG guests behind), then the daemons, waiting until
# they are gone so a new daemon's socket is never removed by an old one.
stop_daemons() {
    if alive; then
        for d in $(virsh -c "$URI" list --name 2>/dev/null); do
            virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
        done
    fi
    local pids=()
    for f in "$DIR/libvirtd.pid" "$DIR/virtlogd.pid"; do
        if [ -f "$f" ]; then
            pids+=("$(cat "$f")")
            kill "${pids[-1]}" 2>/dev/null || true
            rm -f "$f"
        fi
    done
    for _ in $(seq 1 100); do
        local left=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}

stop() {
    [ -d "$DIR" ] || return 0
    exec 9>"$DIR/.lock"
    flock 9
    stop_daemons
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    uri) echo "$URI" ;;
    *)
        echo "usage: $0 start|stop|uri" >&2
        exit 2
        ;;
esac
