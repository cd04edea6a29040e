#!/usr/bin/env bash
# Runs one test N times in a row (default 50) and stops at the first failure: the check for a test
# that once failed at random. Run it while the rest of the suite runs to have a loaded machine:
#   scripts/repeat-test.sh berth up_cli up_runs_an_order_to_a_running_vm_and_stops_cleanly 50
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
    echo "usage: $0 PACKAGE TEST-BINARY TEST-NAME [RUNS]" >&2
    exit 2
fi
package=$1 binary=$2 name=$3 runs=${4:-50}
export CARGO_INCREMENTAL=0
cargo nextest run -p "$package" --test "$binary" --no-run
for i in $(seq 1 "$runs"); do
    if ! out=$(cargo nextest run -p "$package" --test "$binary" -E "test(=$name)" --no-fail-fast 2>&1); then
        printf '%s\n' "$out" >&2
        echo "==> $binary::$name failed on run $i of $runs" >&2
        exit 1
    fi
    echo "run $i of $runs: passed"
done
echo "==> $binary::$name passed $runs runs in a row"
