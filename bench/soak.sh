#!/usr/bin/env bash
# The chaos soak (examples/soak): three nodes in one cluster on loopback,
# three sample backends, 500 agents and steady REST traffic, one fault every
# 20-60 s (backend and node kill -9, partition, gossip loss, reload,
# certificate rotation, drain), invariants checked all the time.
#
#   bench/soak.sh                          30 minutes (a hand run)
#   bench/soak.sh --duration 3m --fault-every 15..30     the CI profile
#   bench/soak.sh --seed 7 --agents 200 --out DIR ...    see examples/soak/main.rs
#
# Writes report.md, series.csv and faults.csv (and the plots, when Python's
# matplotlib is installed) to --out (default bench/results/soak-<time>).
# Exits 1 when an invariant broke.
set -euo pipefail
cd "$(dirname "$0")/.."

out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [ "${args[$i]}" = "--out" ] && [ $((i + 1)) -lt ${#args[@]} ]; then
        out=${args[$((i + 1))]}
    fi
done
if [ -z "$out" ]; then
    out=bench/results/soak-$(date -u +%Y%m%d-%H%M%S)
    args+=(--out "$out")
fi
mkdir -p "$out"

cargo build --release --quiet --bin sysmanage-node --example soak
status=0
target/release/examples/soak --bin target/release/sysmanage-node "${args[@]}" || status=$?
# The first Python that has matplotlib (Debian's python3-matplotlib is for
# /usr/bin/python3, which another python3 on PATH may hide).
plotter=""
for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null; then
        plotter=$py
        break
    fi
done
if [ -n "$plotter" ]; then
    "$plotter" bench/soak_plot.py "$out"
else
    echo "soak.sh: no plots (no python3 with matplotlib: apt-get install python3-matplotlib)"
fi
echo "soak.sh: report in $out/report.md (exit $status)"
exit $status
