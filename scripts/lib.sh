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
    berth_need_packages build-essential pkg-config openssh-client ca-certificates
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
