#!/usr/bin/env bash
# Fuzz one cargo-fuzz target with libFuzzer for a bounded time.
#
#   bench/fuzz_for.sh TARGET              # 60 s of fuzzing (after the build)
#   bench/fuzz_for.sh TARGET 600          # 10 minutes
#   FUZZ_JOBS=2 bench/fuzz_for.sh TARGET  # parallel workers (libFuzzer -fork)
#   bench/fuzz_for.sh TARGET 60 -seed=1   # extra arguments go to libFuzzer
#
# bench/fuzz_cluster.sh and bench/fuzz_proxy_protocol.sh call it for their
# targets. Knobs (env): FUZZ_JOBS (default 1), FUZZ_SANITIZER (see
# bench/fuzz_setup.sh). Inputs: fuzz/seeds/TARGET (committed seeds) and
# fuzz/TARGET.dict when it exists. Outputs: fuzz/corpus/TARGET (grows across
# runs, not committed); a crash lands in fuzz/artifacts/TARGET/ and the
# script exits non-zero.
set -euo pipefail

TARGET=${1:?usage: bench/fuzz_for.sh TARGET [seconds] [libFuzzer args...]}
shift
SECONDS_TO_RUN=${1:-60}
shift || true
[[ $SECONDS_TO_RUN =~ ^[0-9]+$ && $SECONDS_TO_RUN -gt 0 ]] || {
  echo "usage: bench/fuzz_for.sh TARGET [seconds] [libFuzzer args...]" >&2
  exit 2
}
JOBS=${FUZZ_JOBS:-1}
[[ -f $(dirname "$0")/../fuzz/fuzz_targets/$TARGET.rs ]] || {
  echo "no fuzz target $TARGET: see fuzz/fuzz_targets/" >&2
  exit 2
}
# shellcheck source=fuzz_setup.sh
source "$(dirname "$0")/fuzz_setup.sh"
CORPUS=$FUZZ/corpus/$TARGET
mkdir -p "$CORPUS"
LOG=$(mktemp "${TMPDIR:-/tmp}/fuzz_$TARGET.XXXXXX.log")
EXTRA=()
[[ $JOBS -gt 1 ]] && EXTRA+=(-fork="$JOBS")
[[ -f $FUZZ/$TARGET.dict ]] && EXTRA+=(-dict="$FUZZ/$TARGET.dict")

echo "== building the fuzz target (sanitizer: $SANITIZER)"
cargo fuzz build --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" "$TARGET"
echo "== fuzzing $TARGET for ${SECONDS_TO_RUN}s (log: $LOG)"
status=0
cargo fuzz run --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" "$TARGET" \
  "$CORPUS" "$FUZZ/seeds/$TARGET" -- \
  -max_total_time="$SECONDS_TO_RUN" -print_final_stats=1 \
  "${EXTRA[@]}" "$@" 2>&1 | tee "$LOG" || status=$?

# libFuzzer's last status line, e.g. "#1234567 DONE cov: 210 ft: 900 corp: 300/9Kb exec/s: 20577 rss: 60Mb".
execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$LOG" | awk '{s += $2} END {print s + 0}')
[[ $execs -gt 0 ]] || execs=$(grep -Eo '^#[0-9]+' "$LOG" | tail -n 1 | tr -d '#')
echo "== fuzzed ${SECONDS_TO_RUN}s: ${execs:-unknown} executions, corpus $(find "$CORPUS" -type f | wc -l) inputs"
if [[ $status -ne 0 ]]; then
  echo "== the fuzzer stopped with status $status: see $LOG and $FUZZ/artifacts/$TARGET/" >&2
fi
exit "$status"
