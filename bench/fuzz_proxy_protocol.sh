#!/usr/bin/env bash
# Fuzz the PROXY protocol parser (sysmanage_node::proxy_protocol::parse) with
# cargo-fuzz / libFuzzer for a bounded time.
#
#   bench/fuzz_proxy_protocol.sh              # 60 s of fuzzing (after the build)
#   bench/fuzz_proxy_protocol.sh 600          # 10 minutes
#   FUZZ_JOBS=2 bench/fuzz_proxy_protocol.sh  # parallel workers (libFuzzer -fork)
#   bench/fuzz_proxy_protocol.sh 60 -seed=1   # extra arguments go to libFuzzer
#
# Knobs (env): FUZZ_JOBS (default 1), FUZZ_SANITIZER (address, the default,
# or none). The toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the
# nightly-only flags cargo-fuzz passes (-Zsanitizer, sancov).
# Inputs: fuzz/seeds/proxy_protocol (committed seeds), fuzz/proxy_protocol.dict.
# Outputs: fuzz/corpus/proxy_protocol (grows across runs, not committed);
# a crash lands in fuzz/artifacts/proxy_protocol/ and the script exits non-zero:
# fix the parser and add the input as a regression test in tests/proxy/proxy_protocol.rs.
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
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

FUZZ=$ROOT/fuzz
CORPUS=$FUZZ/corpus/proxy_protocol
mkdir -p "$CORPUS"
LOG=$(mktemp "${TMPDIR:-/tmp}/fuzz_proxy_protocol.XXXXXX.log")

cd "$ROOT"
echo "== building the fuzz target (sanitizer: $SANITIZER)"
cargo fuzz build --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" proxy_protocol

FORK=()
[[ $JOBS -gt 1 ]] && FORK=(-fork="$JOBS")
echo "== fuzzing for ${SECONDS_TO_RUN}s (log: $LOG)"
status=0
cargo fuzz run --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" proxy_protocol \
  "$CORPUS" "$FUZZ/seeds/proxy_protocol" -- \
  -max_total_time="$SECONDS_TO_RUN" -dict="$FUZZ/proxy_protocol.dict" -print_final_stats=1 \
  "${FORK[@]}" "$@" 2>&1 | tee "$LOG" || status=$?

# libFuzzer's last status line, e.g. "#1234567 DONE cov: 210 ft: 900 corp: 300/9Kb exec/s: 20577 rss: 60Mb".
execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$LOG" | awk '{s += $2} END {print s + 0}')
[[ $execs -gt 0 ]] || execs=$(grep -Eo '^#[0-9]+' "$LOG" | tail -n 1 | tr -d '#')
echo "== fuzzed ${SECONDS_TO_RUN}s: ${execs:-unknown} executions, corpus $(find "$CORPUS" -type f | wc -l) inputs"
if [[ $status -ne 0 ]]; then
  echo "== the fuzzer stopped with status $status: see $LOG and $FUZZ/artifacts/proxy_protocol/" >&2
fi
exit "$status"
