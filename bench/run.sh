#!/usr/bin/env bash
# Benchmark sysmanage-node against nginx and HAProxy with the harness in
# bench/harness/ (compare.sh, a copy of the shared one: bench/harness/ORIGIN.md), then measure idle
# keep-alive memory on fresh processes (compare.sh idle).
#
#   bench/run.sh                                    # defaults of compare.sh (ROUNDS=5 DUR=10 ...)
#   ROUNDS=3 DUR=10 LOADS="50 500" bench/run.sh     # knobs are passed through to compare.sh
#   CARGO_TARGET_DIR=/work/target-bench bench/run.sh  # build elsewhere (default: target/)
#
# Knobs passed through (env): ROUNDS DUR LOADS TARGETS, and any other compare.sh knob
# (PIN, WARMUP, IDLE_CONNS, IDLE_HOLD, QUIET_PCT, QUIET_WAIT, NOISE_MAX, BENCH_WORK, ...).
# SKIP_IDLE=1 skips the separate `compare.sh idle` run.
# The node runs in the default configuration: bench/node.toml without its two busy-polling
#   lines. BUSY_POLL=1 keeps them (`node.busy_poll = "1ms"`, `busy_poll_coalesce = "10us"`).
# TCP_REFERENCE=1 adds a fifth target, "custom2": HAProxy in TCP mode (bench/haproxy-tcp.cfg,
#   port 8086), which forwards bytes without reading HTTP: what a proxy that does no HTTP work
#   at all reaches on this topology, a ceiling for the HTTP proxies.
# Results: $BENCH_WORK/results/<timestamp>/ and .../idle-<timestamp>/
#   (default BENCH_WORK=${TMPDIR:-/tmp}/sysmanage-bench).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
HARNESS=$ROOT/bench/harness/compare.sh
[[ -x $HARNESS || -f $HARNESS ]] || { echo "harness not found: $HARNESS" >&2; exit 1; }
for tool in nginx haproxy wrk python3 taskset curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y nginx-light haproxy wrk)" >&2; exit 1; }
done

# Build (honours CARGO_TARGET_DIR; a relative one is taken relative to the repo root).
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
echo "== building release binary in $TARGET_DIR"
CARGO_TARGET_DIR=$TARGET_DIR cargo build --release
BIN=$TARGET_DIR/release/sysmanage-node
CONF=$ROOT/bench/node.toml
if [[ ${BUSY_POLL:-0} != 1 ]]; then
  # The default configuration: bench/node.toml without the busy-polling option.
  DEFAULT_CONF=$(mktemp "${TMPDIR:-/tmp}/sysmanage-bench-node.XXXXXX.toml")
  trap 'rm -f "$DEFAULT_CONF"' EXIT
  grep -v -e '^busy_poll = ' -e '^busy_poll_coalesce = ' "$CONF" >"$DEFAULT_CONF"
  CONF=$DEFAULT_CONF
fi
"$BIN" check-config "$CONF"
if [[ ${TCP_REFERENCE:-0} == 1 ]]; then
  export CUSTOM2_CMD="haproxy -db -f $ROOT/bench/haproxy-tcp.cfg"
  [[ -n ${TARGETS:-} ]] || TARGETS="direct nginx haproxy custom custom2"
fi

# Pass the knobs through explicitly (only those that are set; compare.sh has defaults).
for k in ROUNDS DUR LOADS TARGETS; do
  if [[ -n ${!k:-} ]]; then export "${k?}"; fi
done
export CUSTOM_CMD="$BIN run -c $CONF"
echo "== CUSTOM_CMD=$CUSTOM_CMD"
[[ -n ${CUSTOM2_CMD:-} ]] && echo "== CUSTOM2_CMD=$CUSTOM2_CMD"
echo "== ROUNDS=${ROUNDS:-default} DUR=${DUR:-default} LOADS=${LOADS:-default} TARGETS=${TARGETS:-default}"

ulimit -n 20000 || true
LOG=$(mktemp "${TMPDIR:-/tmp}/sysmanage-bench-run.XXXXXX")
bash "$HARNESS" 2>&1 | tee "$LOG"
MAIN_OUT=$(sed -n 's/^results in //p' "$LOG" | tail -1)

IDLE_OUT=
if [[ ${SKIP_IDLE:-0} != 1 ]]; then
  echo "== idle test on fresh processes"
  bash "$HARNESS" idle 2>&1 | tee "$LOG"
  IDLE_OUT=$(sed -n 's/^results in //p' "$LOG" | tail -1)
fi
rm -f "$LOG"

echo
echo "== results"
echo "matrix + idle-after-load: ${MAIN_OUT:-?}/{summary.md,results.csv,idle.csv,env.txt,wrk-*.txt}"
[[ -n $IDLE_OUT ]] && echo "idle (fresh processes):   $IDLE_OUT/{summary.md,idle.csv}"
exit 0
