# shellcheck shell=bash
# Shared setup for Berth's scripts: installs what a fresh Debian machine lacks, idempotently.
# Sourced, not run.

berth_need_packages() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
    fi
}

berth_need_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        elif apt-cache show rustup >/dev/null 2>&1; then
            berth_need_packages rustup
            rustup default stable
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "No Rust toolchain found. Install it with rustup (https://rustup.rs), then run this again." >&2
            exit 1
        fi
    fi
    # libvirt-dev: the libvirt backend links libvirt.so (default feature `libvirt`).
    berth_need_packages build-essential pkg-config openssh-client ca-certificates libvirt-dev
    # The workspace needs Rust 1.94 or newer (edition 2024); Debian's own cargo is older.
    local v
    v=$(cargo --version | sed -n 's/^cargo 1\.\([0-9]*\).*/\1/p')
    if [ -z "$v" ] || [ "$v" -lt 94 ]; then
        echo "Berth needs Rust 1.94 or newer; found: $(cargo --version)." >&2
        echo "Install the current stable toolchain with rustup (https://rustup.rs), then run this again." >&2
        exit 1
    fi
}

berth_need_nextest() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        echo "==> installing cargo-nextest"
        cargo install cargo-nextest --locked
    fi
}

# libvirtd and QEMU for the libvirt backend's real-VM tests (and `berth up`'s local default).
# qemu-utils must have qemu-system-x86's version: a newer qemu-utils (e.g. from backports)
# "Breaks" the older qemu-system-common, so both are pinned to the candidate version.
berth_need_libvirt() {
    if dpkg -s libvirt-daemon-system qemu-system-x86 qemu-utils >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "==> installing libvirt and QEMU"
    $sudo apt-get update -qq
    local ver
    ver=$(apt-cache policy qemu-system-x86 | sed -n 's/^ *Candidate: //p')
    # No service starts during the install (policy-rc.d): on a systemd host the packages would
    # start the host's libvirtd and its "default" NAT network (a bridge in the root network
    # namespace). Berth's tests run their own daemon in private namespaces instead.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod 755 "$policy"
        created=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends --allow-downgrades \
        libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 \
        "qemu-utils=$ver" "qemu-block-extra=$ver" || { [ -z "$created" ] || $sudo rm -f "$policy"; return 1; }
    [ -z "$created" ] || $sudo rm -f "$policy"
    # Nor at the next boot: the packaged "default" network must not autostart on this host.
    $sudo rm -f /etc/libvirt/qemu/networks/autostart/default.xml
}

# A Python with grpcio for the remote-provider example (examples/remote-provider-python), in a
# virtual environment under target/ (PyPI's packages, pinned; Debian's grpcio is too old for
# grpcio-status). Exports BERTH_GRPC_PYTHON for the tests.
berth_need_grpc_python() {
    local venv="$PWD/target/grpc-venv" pins="grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-status==1.85.1"
    if ! "$venv/bin/python" -c 'import grpc, grpc_tools, grpc_status' >/dev/null 2>&1; then
        berth_need_packages python3-venv
        echo "==> installing grpcio in $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086
        "$venv/bin/pip" install -q $pins
    fi
    export BERTH_GRPC_PYTHON="$venv/bin/python"
}
