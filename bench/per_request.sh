#!/usr/bin/env bash
# Where the time of one proxied request goes, for the node (default
# configuration: bench/node.toml without busy polling), nginx and HAProxy,
# on the harness's topology (bench/harness/compare.sh start: proxy on core
# 0; wrk and the two nginx backends on core 1).
#
#   bench/per_request.sh BINARY [CONNS] [SECS] [ROUNDS]   # 50 6 3
#
# For each round and proxy, under a closed wrk load of CONNS connections:
#  1. `perf stat` on the proxy: CPU time and the syscalls it makes, per
#     request (the tracepoints cost the same per syscall for all three);
#  2. `nstat`: TCP segments per request on loopback (all processes: the
#     proxy is the only thing that changes between runs);
#  3. the two cores' busy time per request (/proc/stat), without perf;
#  4. `perf record` (last round only): the proxy's CPU split between the
#     kernel, its own code and libc. Build BINARY with
#     `cargo build --profile profiling` for symbols.
# Prints one Markdown table per measure (medians over rounds). Needs
# nginx, haproxy, wrk, perf (linux-perf), nstat (iproute2), python3.
set -euo pipefail
BIN=$(realpath "${1:?usage: bench/per_request.sh BINARY [CONNS] [SECS] [ROUNDS]}")
C=${2:-50} DUR=${3:-6} ROUNDS=${4:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_WORK=${BENCH_WORK:-/tmp/sysmanage-per-request}
OUT=$BENCH_WORK/out; rm -rf "$OUT"; mkdir -p "$OUT"
CONF=$BENCH_WORK/node.toml
grep -v -e '^busy_poll = ' -e '^busy_poll_coalesce = ' "$ROOT/bench/node.toml" >"$CONF"
"$BIN" check-config "$CONF" >/dev/null
ulimit -n 20000 || true
HARNESS=$ROOT/bench/harness/compare.sh
export TARGETS="nginx haproxy custom" CUSTOM_CMD="$BIN run -c $CONF"
trap 'bash "$HARNESS" stop >/dev/null 2>&1 || true' EXIT
bash "$HARNESS" start >/dev/null 2>&1
PIDS=$BENCH_WORK/run/pids
port_of() { case $1 in nginx) echo 8081 ;; haproxy) echo 8082 ;; node) echo 8085 ;; esac; }
pid_of() { # the process that serves: nginx's worker, not its master
  case $1 in
    nginx) ps -o pid= --ppid "$(cat "$PIDS/nginx")" | tr -d ' ' | head -1 ;;
    haproxy) cat "$PIDS/haproxy" ;;
    node) cat "$PIDS/custom" ;;
  esac
}
busy() { awk -v c="cpu$1" '$1==c{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
EV=task-clock,context-switches
for s in read recvfrom write writev sendto epoll_wait epoll_ctl; do EV+=,syscalls:sys_enter_$s; done
wrk1() { taskset -c 1 wrk -t1 -c"$C" -d"$2s" --latency "http://127.0.0.1:$(port_of "$1")/"; }
reqs() { awk '/requests in/{print $1}' "$1"; }
for r in $(seq 1 "$ROUNDS"); do
  for t in node nginx haproxy; do
    pid=$(pid_of $t)
    wrk1 $t 2 >/dev/null # warm-up: connections and upstream pools
    # 1. perf stat over the whole wrk run (DUR s).
    wrk1 $t "$DUR" >"$OUT/wrk-stat-$r-$t.txt" &
    w=$!
    perf stat -x, -e "$EV" -p "$pid" -- sleep "$DUR" 2>"$OUT/stat-$r-$t.txt" || true
    wait $w
    # 2 and 3. nstat and the cores, no perf attached.
    nstat -n
    b0=$(busy 0) b1=$(busy 1)
    wrk1 $t "$DUR" >"$OUT/wrk-$r-$t.txt"
    echo "$(busy 0) $b0 $(busy 1) $b1" >"$OUT/cores-$r-$t.txt"
    nstat >"$OUT/nstat-$r-$t.txt"
    # 4. perf record, last round.
    if [[ $r == "$ROUNDS" ]]; then
      wrk1 $t "$DUR" >/dev/null &
      w=$!
      sleep 1
      perf record -F 1999 -o "$OUT/perf-$t.data" -p "$pid" -- sleep $((DUR - 2)) >/dev/null 2>&1 || true
      wait $w
      perf report -i "$OUT/perf-$t.data" --no-children --sort dso --stdio 2>/dev/null | grep '%' >"$OUT/dso-$t.txt" || true
    fi
  done
done
python3 - "$OUT" "$ROUNDS" "$DUR" "$(getconf CLK_TCK)" "$C" <<'PY'
import re, statistics as st, sys
out, rounds, dur, hz, conns = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
names = ["node", "nginx", "haproxy"]
def reqs(path):
    m = re.search(r"(\d+) requests in", open(path).read()); return int(m.group(1))
def rps(path):
    m = re.search(r"Requests/sec:\s+([\d.]+)", open(path).read()); return float(m.group(1))
rows = {t: {} for t in names}
def add(t, k, v): rows[t].setdefault(k, []).append(v)
for r in range(1, rounds + 1):
    for t in names:
        n = reqs(f"{out}/wrk-stat-{r}-{t}.txt")
        for line in open(f"{out}/stat-{r}-{t}.txt"):
            f = line.strip().split(",")
            if len(f) < 3 or not re.match(r"^[\d.]+$", f[0]): continue
            v, name = float(f[0]), f[2].replace("syscalls:sys_enter_", "")
            if name == "task-clock": add(t, "proxy CPU µs/req (perf attached)", v * 1e3 / n)
            else: add(t, name + "/req", v / n)
        n = reqs(f"{out}/wrk-{r}-{t}.txt")
        add(t, "req/s (no perf)", rps(f"{out}/wrk-{r}-{t}.txt"))
        c0, b0, c1, b1 = map(int, open(f"{out}/cores-{r}-{t}.txt").read().split())
        add(t, "core 0 (proxy) µs/req", (c0 - b0) / hz * 1e6 / n)
        add(t, "core 1 (wrk + backends) µs/req", (c1 - b1) / hz * 1e6 / n)
        for line in open(f"{out}/nstat-{r}-{t}.txt"):
            f = line.split()
            if f and f[0] in ("TcpOutSegs", "TcpExtTCPPureAcks", "TcpExtDelayedACKs"):
                add(t, f[0].replace("TcpExt", "") + "/req", int(f[1]) / n)
keys = []
for t in names:
    for k in rows[t]:
        if k not in keys: keys.append(k)
print(f"### {conns} connections, medians of {rounds} rounds × {dur:.0f} s\n")
print("| per request | node | nginx | HAProxy |\n|---|---|---|---|")
for k in keys:
    vals = [st.median(rows[t].get(k, [0])) for t in names]
    fmt = (lambda v: f"{v:,.0f}") if k.startswith("req/s") else (lambda v: f"{v:.3f}" if v < 10 else f"{v:.1f}")
    print(f"| {k} | " + " | ".join(fmt(v) for v in vals) + " |")
print("\n| proxy CPU (perf record, last round) | node | nginx | HAProxy |\n|---|---|---|---|")
split = {}
for t in names:
    try:
        for line in open(f"{out}/dso-{t}.txt"):
            m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
            if not m: continue
            dso = m.group(2)
            k = "kernel" if "kernel" in dso else ("libc" if dso.startswith("libc") else ("own code" if dso in ("sysmanage-node", "nginx", "haproxy") else "other"))
            split.setdefault(k, {}).setdefault(t, 0.0)
            split[k][t] += float(m.group(1))
    except FileNotFoundError: pass
for k in ("kernel", "own code", "libc", "other"):
    if k in split: print(f"| {k} | " + " | ".join(f"{split[k].get(t, 0):.1f} %" for t in names) + " |")
PY
