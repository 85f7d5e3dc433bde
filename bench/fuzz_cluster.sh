#!/usr/bin/env bash
# Fuzz the gossip datagram decoder (sysmanage_node::cluster::transport::Opener:
# authentication, frame parsing, replay window, reassembly) with cargo-fuzz /
# libFuzzer for a bounded time.
#
#   bench/fuzz_cluster.sh              # 60 s of fuzzing (after the build)
#   bench/fuzz_cluster.sh 600          # 10 minutes
#   FUZZ_JOBS=2 bench/fuzz_cluster.sh  # parallel workers (libFuzzer -fork)
#   bench/fuzz_cluster.sh 60 -seed=1   # extra arguments go to libFuzzer
#
# Knobs (env): FUZZ_JOBS (default 1), FUZZ_SANITIZER (address, the default,
# or none). The toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the
# nightly-only flags cargo-fuzz passes (-Zsanitizer, sancov).
# Inputs: fuzz/seeds/cluster_datagram (committed seeds).
# Outputs: fuzz/corpus/cluster_datagram (grows across runs, not committed);
# a crash lands in fuzz/artifacts/cluster_datagram/ and the script exits
# non-zero: fix the decoder and add the input to tests/cluster/datagram_fuzz.rs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_TO_RUN=${1:-60}
shift || true
[[ $SECONDS_TO_RUN =~ ^[0-9]+$ && $SECONDS_TO_RUN -gt 0 ]] || {
  echo "usage: $0 [seconds] [libFuzzer args...]" >&2
  exit 2
}
JOBS=${FUZZ_JOBS:-1}
SANITIZER=${FUZZ_SANITIZER:-address}
TARGET=cluster_datagram
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

FUZZ=$ROOT/fuzz
CORPUS=$FUZZ/corpus/$TARGET
mkdir -p "$CORPUS"
LOG=$(mktemp "${TMPDIR:-/tmp}/fuzz_$TARGET.XXXXXX.log")

cd "$ROOT"
echo "== building the fuzz target (sanitizer: $SANITIZER)"
cargo fuzz build --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" "$TARGET"

FORK=()
[[ $JOBS -gt 1 ]] && FORK=(-fork="$JOBS")
echo "== fuzzing for ${SECONDS_TO_RUN}s (log: $LOG)"
status=0
cargo fuzz run --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" "$TARGET" \
  "$CORPUS" "$FUZZ/seeds/$TARGET" -- \
  -max_total_time="$SECONDS_TO_RUN" -print_final_stats=1 \
  "${FORK[@]}" "$@" 2>&1 | tee "$LOG" || status=$?

execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$LOG" | awk '{s += $2} END {print s + 0}')
[[ $execs -gt 0 ]] || execs=$(grep -Eo '^#[0-9]+' "$LOG" | tail -n 1 | tr -d '#')
echo "== fuzzed ${SECONDS_TO_RUN}s: ${execs:-unknown} executions, corpus $(find "$CORPUS" -type f | wc -l) inputs"
if [[ $status -ne 0 ]]; then
  echo "== the fuzzer stopped with status $status: see $LOG and $FUZZ/artifacts/$TARGET/" >&2
fi
exit "$status"
