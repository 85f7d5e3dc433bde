#!/usr/bin/env bash
# Cost of per-request metrics: two sysmanage-node instances, identical except for
# [metrics] enabled: "on" = bench/node.toml (metrics on by default, port $PORT_ON=8085,
# admin API on 127.0.0.1:9185), "off" = the same on port $PORT_OFF=8086 (admin 9186) with
# `[metrics] enabled = false` appended. Both keep the admin API on, as bench/node.toml does.
#
#   CARGO_TARGET_DIR=/work/target-bench bash bench/metrics_overhead.sh
#   ROUNDS=8 DUR=10 CONNS=50 bash bench/metrics_overhead.sh
#
# Topology as in bench/harness/compare.sh: both nodes pinned to CPU $PROXY_CPU (only the
# one under load is busy; the idle one costs ~0), wrk (1 thread) and the two nginx backends
# (bench/harness/conf/backend-nginx.conf.tmpl, 127.0.0.1:9001 and :9002, 1 worker each)
# on CPU $LOAD_CPU. Each round runs both variants back to back; the order alternates
# (on,off / off,on). Before every run: a quiet gate (foreign CPU < QUIET_PCT % of a core,
# at most QUIET_WAIT s). Each run records req/s, node CPU µs/req (utime+stime of the node)
# and foreign CPU during the run (busy CPU not used by our processes or wrk).
# The summary gives the median req/s and µs/req of each variant and the median of the
# per-round paired ratios on/off, excluding rounds where either run had foreign CPU >
# NOISE_MAX % (the exclusions are listed).
# Knobs (env): ROUNDS=8 DUR=10 CONNS=50 WARMUP=3 PROXY_CPU=0 LOAD_CPU=1 QUIET_PCT=10
#   B1=9001 B2=9002 (backend ports) PORT_ON=8085 PORT_OFF=8086
#   QUIET_WAIT=90 NOISE_MAX=25 RETRY_NOISY=2 (a round whose pair had foreign CPU > NOISE_MAX is
#   run again, labelled r.1, r.2, up to RETRY_NOISY times) BIN=<path to sysmanage-node>
# steal_pct: CPU time the hypervisor reports as stolen during the run (all CPUs, % of one core).
# Output: $BENCH_WORK/metrics-<timestamp>/{results.csv,summary.md,wrk-*.txt,node-*.toml}
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$ROOT/bench/harness   # a copy of ../shared/bench: bench/harness/ORIGIN.md
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/sysmanage-node}
ROUNDS=${ROUNDS:-8}
DUR=${DUR:-10}
CONNS=${CONNS:-50}
WARMUP=${WARMUP:-3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-90}
NOISE_MAX=${NOISE_MAX:-25}
RETRY_NOISY=${RETRY_NOISY:-2}
# Backend ports: the harness's 9001/9002 by default; set B1/B2 to others when another
# benchmark is using those (the node configs are rewritten to match).
B1=${B1:-9001} B2=${B2:-9002}
CLK_TCK=$(getconf CLK_TCK)
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/sysmanage-bench}
OUT=$WORK/metrics-$(date +%Y%m%d-%H%M%S)
RUN=$OUT/run
mkdir -p "$RUN/tmp"
[[ -x $BIN ]] || { echo "binary not found: $BIN" >&2; exit 1; }
ulimit -n 20000 || true

PORT_ON=${PORT_ON:-8085} PORT_OFF=${PORT_OFF:-8086}
declare -A PID PORT=([on]=$PORT_ON [off]=$PORT_OFF)
BPIDS=()
cleanup() {
  for p in "${PID[@]}" "${BPIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 did not come up" >&2; exit 1; }
for port in $B1 $B2 $PORT_ON $PORT_OFF 9185 9186; do
  if ss -ltn "sport = :$port" | grep -q LISTEN; then echo "port $port is already in use (another benchmark running?)" >&2; exit 1; fi
done

# Backends: the shared harness's template.
for p in $B1 $B2; do
  sed -e "s#@RUN@#$RUN#g" -e "s#@PORT@#$p#g" "$SHARED/conf/backend-nginx.conf.tmpl" >"$RUN/backend-$p.conf"
  taskset -c "$LOAD_CPU" nginx -e "$RUN/backend-$p.err" -c "$RUN/backend-$p.conf" >"$RUN/backend-$p.out" 2>&1 &
  BPIDS+=($!)
done
wait_port $B1; wait_port $B2

# Node configs: "on" is bench/node.toml (+ admin port); "off" differs in port, admin port and [metrics].
# bench/node.toml leaves the admin API on its default 127.0.0.1:9100; each node gets its own
# admin port instead (9185, 9186) so that two can run (and the harness's node may run too).
sed -e "s#127.0.0.1:9001#127.0.0.1:$B1#" -e "s#127.0.0.1:9002#127.0.0.1:$B2#" \
    -e "s#^bind = \"127.0.0.1:8085\"#bind = \"127.0.0.1:$PORT_ON\"#" "$ROOT/bench/node.toml" >"$OUT/node-on.toml"
sed "s#^bind = \"127.0.0.1:$PORT_ON\"#bind = \"127.0.0.1:$PORT_OFF\"#" "$OUT/node-on.toml" >"$OUT/node-off.toml"
printf '\n[admin]\nlisten = "127.0.0.1:9185"\n' >>"$OUT/node-on.toml"
printf '\n[admin]\nlisten = "127.0.0.1:9186"\n\n[metrics]\nenabled = false\n' >>"$OUT/node-off.toml"
grep -q "127.0.0.1:$PORT_OFF" "$OUT/node-off.toml" || { echo "could not set port $PORT_OFF in node-off.toml" >&2; exit 1; }
diff "$OUT/node-on.toml" "$OUT/node-off.toml" >"$OUT/node-diff.txt" || true
for v in on off; do
  "$BIN" check-config "$OUT/node-$v.toml" >/dev/null
  taskset -c "$PROXY_CPU" "$BIN" run -c "$OUT/node-$v.toml" >"$RUN/node-$v.out" 2>&1 &
  PID[$v]=$!
done
wait_port $PORT_ON; wait_port $PORT_OFF

ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
tree_ticks() { local s=0 p; for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do s=$((s + $(ticks "$p"))); done; echo $s; }
ours() { local s=0 p; for p in "${BPIDS[@]}"; do s=$((s + $(tree_ticks "$p"))); done; for p in "${PID[@]}"; do s=$((s + $(ticks "$p"))); done; echo $s; }
all_busy() { awk '$1=="cpu"{print $2+$3+$4}' /proc/stat; }
foreign_pct() { local a0 o0 a1 o1; a0=$(all_busy); o0=$(ours); sleep "$1"; a1=$(all_busy); o1=$(ours)
  awk -v a=$((a1 - a0)) -v o=$((o1 - o0)) -v hz="$CLK_TCK" -v d="$1" 'BEGIN{v=(a-o)/hz/d*100; if(v<0)v=0; printf "%.0f", v}'; }
wait_quiet() { local t0=$SECONDS f; while :; do f=$(foreign_pct 1); if ((f < QUIET_PCT)) || ((SECONDS - t0 >= QUIET_WAIT)); then break; fi; sleep 2; done; echo $((SECONDS - t0)); }

{
  echo "date: $(date -Is)  host: $(uname -r)  nproc: $(nproc)  proxy_cpu=$PROXY_CPU load_cpu=$LOAD_CPU"
  echo "binary: $BIN ($(stat -c %y "$BIN"))  git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet -- src 2>/dev/null || echo ' + uncommitted src changes')"
  echo "ROUNDS=$ROUNDS DUR=$DUR CONNS=$CONNS"; { wrk -v 2>&1 || true; } | head -1; cat /proc/loadavg
} | tee "$OUT/env.txt"

for v in on off; do taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:${PORT[$v]}/" >/dev/null 2>&1 || true; done

echo "round,variant,order,rps,node_cpu_pct,node_us_per_req,errors,foreign_pct,quiet_wait_s,steal_pct" >"$OUT/results.csv"
steal() { awk '$1=="cpu"{print $9}' /proc/stat; }
run_one() { # round variant order
  local r=$1 v=$2 o=$3 out="$OUT/wrk-r$1-$2.txt" waited a0 a1 o0 o1 t0 t1
  waited=$(wait_quiet)
  a0=$(all_busy); o0=$(ours); t0=$(ticks "${PID[$v]}"); local st0 st1; st0=$(steal)
  /usr/bin/time -f "%U %S" -o "$out.time" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:${PORT[$v]}/" >"$out" 2>&1 || true
  a1=$(all_busy); o1=$(ours); t1=$(ticks "${PID[$v]}"); st1=$(steal)
  local rps errs wrkt row
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
  errs=$(awk '/Non-2xx/{s+=$NF} /Socket errors/{gsub(/,/,""); s+=$4+$6+$8+$10} END{print s+0}' "$out")
  wrkt=$(awk -v hz="$CLK_TCK" 'END{printf "%.0f", ($1+$2)*hz}' "$out.time")
  row=$(awk -v r="$rps" -v t=$((t1 - t0)) -v a=$((a1 - a0)) -v ob=$((o1 - o0)) -v w="$wrkt" -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN{
    f=(a-ob-w)/hz/d*100; if(f<0)f=0; printf "%.1f,%.2f", t/hz/d*100, (r>0)?t/hz*1e6/(r*d):0; printf ",F%.0f", f}')
  local stp; stp=$(awk -v s=$((st1 - st0)) -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN{printf "%.1f", s/hz/d*100}')
  echo "$r,$v,$o,$rps,${row%,F*},$errs,${row##*,F},$waited,$stp" >>"$OUT/results.csv"
  printf 'round %-4s %-3s rps=%-9s node_cpu=%-5s%% us/req=%-6s err=%s foreign=%s%% steal=%s%% waited=%ss\n' "$r" "$v" "$rps" \
    "$(echo "$row" | cut -d, -f1)" "$(echo "$row" | cut -d, -f2)" "$errs" "${row##*,F}" "$stp" "$waited"
}
for r in $(seq 1 "$ROUNDS"); do
  a=0
  while :; do
    label=$r; ((a > 0)) && label=$r.$a
    if ((r % 2)); then run_one "$label" on 1; run_one "$label" off 2; else run_one "$label" off 1; run_one "$label" on 2; fi
    # A pair with foreign CPU over NOISE_MAX in either run is kept (and excluded by the summary)
    # and run again, up to RETRY_NOISY more times.
    noisy=$(tail -2 "$OUT/results.csv" | awk -F, -v m="$NOISE_MAX" '$8 > m {n++} END{print n+0}')
    ((noisy == 0 || a >= RETRY_NOISY)) && break
    a=$((a + 1))
  done
done
for v in on off; do kill -0 "${PID[$v]}" 2>/dev/null || echo "WARNING: node ($v) is no longer running; see $RUN/node-$v.out"; done

NOISE_MAX=$NOISE_MAX python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import csv, os, statistics as st, sys
d = sys.argv[1]; nmax = float(os.environ["NOISE_MAX"])
rows = list(csv.DictReader(open(os.path.join(d, "results.csv"))))
by = {}
for r in rows: by.setdefault(r["round"], {})[r["variant"]] = r
noisy = sorted((k for k, v in by.items() if any(float(x["foreign_pct"]) > nmax for x in v.values())), key=float)
def report(title, keep):
    print(f"\n{title}: {len(keep)} rounds")
    if not keep: return
    def col(v, k): return [float(x[v][k]) for x in keep.values()]
    print("| variant | median req/s | req/s range | median node µs/req | median foreign CPU % | errors |")
    print("|---|---|---|---|---|---|")
    for v in ("on", "off"):
        rps = col(v, "rps"); us = col(v, "node_us_per_req"); fo = col(v, "foreign_pct")
        er = sum(int(x[v]["errors"]) for x in keep.values())
        print(f"| metrics {v} | {st.median(rps):,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | {st.median(us):.2f} | {st.median(fo):.0f} | {er} |")
    for k, name in (("rps", "req/s on ÷ off"), ("node_us_per_req", "µs/req on ÷ off")):
        rs = [float(x["on"][k]) / float(x["off"][k]) for x in sorted(keep.values(), key=lambda x: float(x["on"]["round"]))]
        print(f"- {name}: median of paired ratios {st.median(rs):.3f} [{min(rs):.3f}–{max(rs):.3f}]; per round: " + " ".join(f"{x:.3f}" for x in rs))
full = {k: v for k, v in by.items() if len(v) == 2}
print(f"rounds: {len(by)}, noisy (foreign CPU > {nmax:.0f} % of a core in either run): {len(noisy)} {noisy}")
report(f"Rounds without noise (foreign CPU <= {nmax:.0f} %)", {k: v for k, v in full.items() if k not in noisy})
report("All rounds", full)
EOF
echo "results in $OUT"
