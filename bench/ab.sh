#!/usr/bin/env bash
# A/B benchmark of two builds of sysmanage-node against nginx and HAProxy,
# alternating the builds run by run with the harness
# (bench/harness/compare.sh), so that both see the same drift of this
# noisy machine; then the pooled per-round ratios of each build (÷ nginx,
# ÷ HAProxy, paired within each round) and the test whether the two
# builds differ (bench/ab_summary.py).
#
#   bench/ab.sh OLD_BINARY NEW_BINARY            # PAIRS=3 ROUNDS=7 DUR=8 LOADS="50 500"
#   PAIRS=4 ROUNDS=5 bench/ab.sh old new         # more, shorter runs
#
# Both builds run bench/node.toml without busy polling (the default
# configuration). The fresh-process idle-memory test (`compare.sh idle`)
# follows for each build unless SKIP_IDLE=1. Results: $BENCH_WORK/results/
# (default /tmp/sysmanage-bench); the summary is printed and written to
# $BENCH_WORK/results/ab-<timestamp>.md.
set -euo pipefail

OLD=$(realpath "${1:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}")
NEW=$(realpath "${2:?usage: bench/ab.sh OLD_BINARY NEW_BINARY}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=$ROOT/bench/harness/compare.sh
for tool in nginx haproxy wrk python3 taskset curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx-light haproxy wrk)" >&2; exit 1; }
done
export ROUNDS=${ROUNDS:-7} DUR=${DUR:-8} LOADS=${LOADS:-"50 500"} TARGETS=${TARGETS:-"nginx haproxy custom"}
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/sysmanage-bench}
mkdir -p "$WORK/results"
CONF=$WORK/ab-node.toml
# The default configuration: bench/node.toml without the busy-polling option.
grep -v -e '^busy_poll = ' -e '^busy_poll_coalesce = ' "$ROOT/bench/node.toml" >"$CONF"
"$NEW" check-config "$CONF" >/dev/null

ulimit -n 20000 || true
declare -a OLD_DIRS=() NEW_DIRS=()
run() { # label binary [idle]
  local log; log=$(mktemp)
  CUSTOM_CMD="$2 run -c $CONF" bash "$HARNESS" ${3:-} >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  local out; out=$(sed -n 's/^results in //p' "$log" | tail -1)
  rm -f "$log"
  echo "$1 ${3:-matrix}: $out" >&2
  echo "$out"
}
for i in $(seq 1 "${PAIRS:-3}"); do
  # Alternate which build goes first in each pair.
  if ((i % 2)); then
    OLD_DIRS+=("$(run old "$OLD")"); NEW_DIRS+=("$(run new "$NEW")")
  else
    NEW_DIRS+=("$(run new "$NEW")"); OLD_DIRS+=("$(run old "$OLD")")
  fi
done
IDLE=()
if [[ ${SKIP_IDLE:-0} != 1 ]]; then
  IDLE=(--idle "$(run old "$OLD" idle)" "$(run new "$NEW" idle)")
fi
SUMMARY=$WORK/results/ab-$(date +%Y%m%d-%H%M%S).md
python3 "$ROOT/bench/ab_summary.py" --old "${OLD_DIRS[@]}" --new "${NEW_DIRS[@]}" "${IDLE[@]}" | tee "$SUMMARY"
echo "summary in $SUMMARY"
