#!/usr/bin/env bash
# sysmanage-node with ten stats pages open: for `run`, starts
# bench/stats_pages.py (ten pages polling the admin API every 2 s, as the
# page does, pinned to the load core) and then execs the node, so that the
# harness measures the node's own PID. Any other command goes to the node
# as it is. For bench/ab.sh, as the "new" build:
#
#   STATS_NODE_BIN=target/release/sysmanage-node \
#     bench/ab.sh target/release/sysmanage-node bench/with_stats_pages.sh
#
# The pages stop when the node exits (they watch their parent).
set -euo pipefail
NODE=$(realpath "${STATS_NODE_BIN:?set STATS_NODE_BIN to the sysmanage-node binary}")
if [[ ${1:-} == run ]]; then
  taskset -c "${LOAD_CPU:-1}" python3 "$(dirname "$0")/stats_pages.py" --pages "${STATS_PAGES:-10}" \
    --admin "${STATS_ADMIN:-127.0.0.1:9100}" &
fi
exec "$NODE" "$@"
