#!/usr/bin/env bash
# Fuzz the HTTP/1.1 wire code (sysmanage_node::proxy::wire) with cargo-fuzz /
# libFuzzer: a fixed number of executions per target, one target after the
# other.
#
#   bench/fuzz_http1.sh                          # all four targets, 10M runs each
#   RUNS=100000 bench/fuzz_http1.sh              # a quick check
#   bench/fuzz_http1.sh http1_chunked            # some targets only
#   bench/fuzz_http1.sh http1_differential -- -seed=1   # extra libFuzzer args after --
#   MERGE=1 bench/fuzz_http1.sh                  # then minimise the corpus into the seeds
#
# Targets (fuzz/fuzz_targets/, each states its invariants in its header):
#   http1_request_head   wire::request::parse / check / encode_head
#   http1_response_head  wire::response::parse_head / encode_head
#   http1_chunked        wire::chunked::Decoder, whole against in pieces, round trip
#   http1_differential   wire::request::parse against hyper's HTTP/1 server
#
# Knobs (env): RUNS (default 10000000, libFuzzer -runs), FUZZ_SANITIZER
# (address, the default, or none; bench/fuzz_setup.sh), PREBUILT=1 (run the binaries already in
# fuzz/target without rebuilding: for long runs while the library is being
# edited), MERGE=1 (after fuzzing, minimise
# corpus + seeds into fuzz/seeds/<target> with -merge=1; see the note on
# size below). The toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the
# nightly-only flags cargo-fuzz passes (-Zsanitizer, sancov).
# Inputs: fuzz/seeds/<target> (committed seeds), fuzz/http1.dict.
# Outputs: fuzz/corpus/<target> (grows across runs, not committed); a crash
# or a broken invariant lands in fuzz/artifacts/<target>/, its path is
# printed, the other targets still run, and the script exits non-zero:
# minimise it (cargo fuzz tmin), keep it as fuzz/seeds/<target>/regress-*,
# and fix the wire code.
set -euo pipefail

ALL=(http1_request_head http1_response_head http1_chunked http1_differential)
TARGETS=()
EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --) shift; EXTRA=("$@"); break ;;
    http1_*) TARGETS+=("$1"); shift ;;
    *) echo "usage: $0 [target...] [-- libFuzzer args...]  (targets: ${ALL[*]})" >&2; exit 2 ;;
  esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")
RUNS=${RUNS:-10000000}
[[ $RUNS =~ ^[0-9]+$ && $RUNS -gt 0 ]] || { echo "RUNS must be a positive number" >&2; exit 2; }
# shellcheck source=fuzz_setup.sh
source "$(dirname "$0")/fuzz_setup.sh"
DICT=$FUZZ/http1.dict
echo "== building the fuzz targets (sanitizer: $SANITIZER): ${TARGETS[*]}"
BIN=$FUZZ/target/x86_64-unknown-linux-gnu/release
# One build for all of them (the library is compiled once).
if [[ ${PREBUILT:-0} == 1 ]]; then
  echo "== using the binaries in $BIN as they are (PREBUILT=1)"
elif [[ ${#TARGETS[@]} -eq ${#ALL[@]} ]]; then
  cargo fuzz build --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER"
else
  for t in "${TARGETS[@]}"; do
    cargo fuzz build --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" "$t"
  done
fi

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  CORPUS=$FUZZ/corpus/$t
  mkdir -p "$CORPUS" "$FUZZ/artifacts/$t"
  LOG=$(mktemp "${TMPDIR:-/tmp}/fuzz_$t.XXXXXX.log")
  echo "== $t: $RUNS runs (log: $LOG)"
  status=0
  # cargo fuzz run TARGET DIRS -- FLAGS, or the binary itself: FLAGS DIRS.
  run=(cargo fuzz run --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" "$t" "$CORPUS" "$FUZZ/seeds/$t" --)
  [[ ${PREBUILT:-0} == 1 ]] && run=("$BIN/$t" -artifact_prefix="$FUZZ/artifacts/$t/" "$CORPUS" "$FUZZ/seeds/$t")
  "${run[@]}" \
    -runs="$RUNS" -dict="$DICT" -print_final_stats=1 "${EXTRA[@]}" </dev/null >"$LOG" 2>&1 || status=$?
  # libFuzzer's last status line ("#10000000 DONE cov: 812 ft: 3050 corp: 420/40Kb
  # exec/s: 20577 rss: 60Mb") and its closing "Done N runs in S second(s)".
  execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$LOG" | tail -n 1 | awk '{print $2}')
  [[ -n $execs ]] || execs=$(grep -Eo '^#[0-9]+' "$LOG" | tail -n 1 | tr -d '#')
  cov=$(grep -E '^#[0-9]+.*cov: ' "$LOG" | tail -n 1 || true)
  done_line=$(grep -E '^Done [0-9]+ runs in ' "$LOG" | tail -n 1 || true)
  echo "   executions: ${execs:-unknown}"
  echo "   coverage:   ${cov:-none}"
  [[ -z $done_line ]] || echo "   $done_line"
  summary+=("$t: ${execs:-unknown} executions; ${cov:-no coverage line}; ${done_line:-not done}")
  if [[ $status -ne 0 ]]; then
    artifact=$(grep -Eo 'Test unit written to [^ ]+' "$LOG" | tail -n 1 | sed 's/Test unit written to //' || true)
    grep -E -m 3 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" -A 2 "$LOG" | sed 's/^/   /' || true
    echo "== $t FAILED (status $status): artifact ${artifact:-unknown}, log $LOG" >&2
    failed+=("$t: ${artifact:-see $LOG}")
    continue
  fi
  if [[ ${MERGE:-0} == 1 ]]; then
    # Keep the committed seeds small: the merge keeps only inputs that add
    # coverage, and inputs over 4 KiB are left out.
    echo "   merging $CORPUS into fuzz/seeds/$t"
    merge=(cargo fuzz run --fuzz-dir "$FUZZ" --sanitizer "$SANITIZER" "$t" "$FUZZ/seeds/$t" "$CORPUS" --)
    [[ ${PREBUILT:-0} == 1 ]] && merge=("$BIN/$t" "$FUZZ/seeds/$t" "$CORPUS")
    "${merge[@]}" -merge=1 -max_len=4096 </dev/null >>"$LOG" 2>&1
    echo "   fuzz/seeds/$t: $(find "$FUZZ/seeds/$t" -type f | wc -l) files, $(du -sk "$FUZZ/seeds/$t" | cut -f1) KiB"
  fi
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "== crashes or broken invariants:" >&2
  printf '   %s\n' "${failed[@]}" >&2
  exit 1
fi
