#!/usr/bin/env bash
# Sticky-session store: time to load N (default 1,000,000) records at start.
# Writes a fresh store once (examples/sessions_load.rs, via the library), then runs
# `sessions_load load` ROUNDS times, each in a fresh process pinned to one core:
# Store::open (with redb's integrity check) + load_into(Table). Warm page cache.
#   CARGO_TARGET_DIR=/work/target-bench5 cargo build --release --example sessions_load
#   bench/sessions_load.sh [N] [ROUNDS]
# SESSIONS_CACHE=BYTES sets redb's page cache (default: the node's, sessions::CACHE_SIZE);
# SESSIONS_RANDOM=1 writes the keys in random order (the write step prints its time and RSS).
set -euo pipefail
T=${CARGO_TARGET_DIR:-/work/target-bench5}/release/examples/sessions_load
N=${1:-1000000}
ROUNDS=${2:-3}
CORE=${CORE:-0}
DIR=$(mktemp -d /tmp/sessions-load.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
echo "date: $(date -u +%FT%TZ)  N=$N rounds=$ROUNDS core=$CORE"
taskset -c "$CORE" "$T" write "$DIR" "$N"
ls -l "$DIR"
for r in $(seq 1 "$ROUNDS"); do
    echo "loadavg before round $r: $(cut -d' ' -f1-3 /proc/loadavg)"
    /usr/bin/time -f "round $r: wall=%e s user=%U s sys=%S s maxrss=%M KiB cpu=%P" \
        taskset -c "$CORE" "$T" load "$DIR"
done
