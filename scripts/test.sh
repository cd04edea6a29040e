#!/usr/bin/env bash
# Sets up everything Berth's test suite needs on a fresh Debian machine, then runs it all:
# formatting, clippy (warnings are errors) and every test with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

berth_need_rust
berth_need_nextest
# The script backend's example backends: bash + jq, and Python 3.
berth_need_packages jq python3
# The libvirt backend's real-VM tests: libvirtd + QEMU (the tests start their own daemons in
# private namespaces, and build the tiny guest image with scripts/build-test-image.sh).
berth_need_libvirt
# The store suite's PostgreSQL half: the tests run initdb + pg_ctl themselves as `postgres`.
berth_need_packages postgresql
# The dashboard's browser tests: headless Chromium driven over WebDriver (both packages always
# move together: chromedriver refuses another major version), and a font for the screenshots.
berth_need_packages chromium chromium-driver fonts-dejavu-core
export BERTH_REQUIRE_BROWSER=1
# The remote-provider protocol's Python example: grpcio from PyPI (a virtual environment).
berth_need_grpc_python
export BERTH_REQUIRE_GRPC_PYTHON=1
# One build from scratch: incremental artifacts would only cost time and disk (tens of GB).
export CARGO_INCREMENTAL=0
if [ "$(id -u)" -eq 0 ]; then
    export BERTH_REQUIRE_LIBVIRT=1 BERTH_REQUIRE_POSTGRES=1
else
    echo "==> not root: the real-VM libvirt tests and the PostgreSQL store tests will skip (they need root)"
fi
# The tests start a private libvirtd (scripts/test-libvirtd.sh); stop it when the run ends.
trap 'scripts/test-libvirtd.sh stop' EXIT

if [ -f ../shared/pve/apidata.json ]; then
    echo "==> PVE schema found: requests to the emulator are validated against ../shared/pve/apidata.json"
else
    echo "==> ../shared/pve/apidata.json is absent: schema-dependent tests will skip (and say so)"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast
echo "==> schemathesis: the API as docs/openapi.json says, fuzzed live as operator, provider and customer"
cargo build --locked -p berth --bin berth
bash scripts/schemathesis.sh target/debug/berth
echo "==> Debian packages (built from the debug binaries, installed, checked, purged)"
cargo build --locked -p berth-agent --bin berth-agent
bash scripts/package-deb.sh --profile debug --no-build --out target/debian
bash scripts/check-packages.sh target/debian
