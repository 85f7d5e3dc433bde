#!/usr/bin/env bash
# WebSocket tunnels through sysmanage-node (token affinity) and nginx.
#   CARGO_TARGET_DIR=/work/target-bench5 cargo build --release --bin sysmanage-node \
#       --example ws_echo --example ws_load
#   bench/tunnels.sh rate [RATE] [SECS] [ROUNDS]   new affinity assignments: RATE new WebSocket
#                                                  connections/s, each a new hostname, for SECS;
#                                                  connect->101 latency (node, then nginx as reference)
#   bench/tunnels.sh idle [N] [ROUNDS]             N idle tunnels held open: proxy RSS before/after
# Proxy (node / nginx, 1 worker each) pinned to core 0; backends (3 listeners of one
# ws_echo process) and the client (ws_load) on core 1. Each round uses a fresh proxy
# process (and for the node a fresh, empty data_dir). Backends are restarted per round.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
T=${CARGO_TARGET_DIR:-/work/target-bench5}/release
NODE=$T/sysmanage-node
ECHO=$T/examples/ws_echo
LOAD=$T/examples/ws_load
MODE=${1:-rate}
WORK=$(mktemp -d /tmp/tunnels-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.5; rm -rf "$WORK"; }
trap cleanup EXIT

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up"; return 1; }
noise() { echo "  loadavg: $(cut -d' ' -f1-3 /proc/loadavg); top CPU users:"; top -bn1 -w 150 | sed -n '8,12p' | sed 's/^/    /'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

start_backends() {
    RUST_BACKTRACE=1 taskset -c 1 "$ECHO" 127.0.0.1:18481 127.0.0.1:18482 127.0.0.1:18483 2>"$WORK/echo.log" &
    BPID=$!; PIDS+=("$BPID"); wait_port 18483
}
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
# Logs of every round are kept in LOGDIR (default bench/results/logs).
LOGDIR=${LOGDIR:-$HERE/results/logs}; mkdir -p "$LOGDIR"
keep_logs() { cp "$WORK/echo.log" "$LOGDIR/$MODE-$1-r$2-echo.log" 2>/dev/null; [ "$1" = node ] && cp "$WORK/node.log" "$LOGDIR/$MODE-node-r$2-node.log"; true; }

start_node() {
    mkdir -p "$WORK/data"; rm -rf "$WORK/data"/*
    sed "s#DATA_DIR#$WORK/data#" "$HERE/ws_node.toml" > "$WORK/node.toml"
    taskset -c 0 "$NODE" run -c "$WORK/node.toml" 2>"$WORK/node.log" &
    PPID_=$!; PIDS+=("$PPID_"); wait_port 18480; PORT=18480; MEASURE=$PPID_
}
start_nginx() {
    mkdir -p "$WORK/nginx/tmp"
    sed "s#PREFIX#$WORK/nginx#g" "$HERE/ws_nginx.conf" > "$WORK/nginx/nginx.conf"
    taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
    PPID_=$!; PIDS+=("$PPID_"); wait_port 18490; PORT=18490
    sleep 0.3; MEASURE=$(pgrep -P "$PPID_" | head -1)   # the worker
}
proxy_rss_total() {  # node: the process; nginx: master + worker
    if [ "$1" = nginx ]; then echo $(( $(rss "$PPID_") + $(rss "$MEASURE") )); else rss "$PPID_"; fi
}

echo "date: $(date -u +%FT%TZ)  mode=$MODE  nginx $(nginx -v 2>&1 | cut -d/ -f2)  ulimit -n $(ulimit -n)"
case "$MODE" in
rate)
    RATE=${2:-1000}; SECS=${3:-30}; ROUNDS=${4:-3}
    for r in $(seq 1 "$ROUNDS"); do
        for proxy in ${PROXIES:-node nginx}; do
            start_backends
            if [ $proxy = node ]; then start_node; else start_nginx; fi
            echo "== round $r, $proxy, $RATE new tunnels/s for ${SECS}s"; noise
            c0=$(cpu_ticks "$MEASURE")
            taskset -c 1 "$LOAD" rate "127.0.0.1:$PORT" "$RATE" "$SECS"
            c1=$(cpu_ticks "$MEASURE")
            echo "  $proxy CPU during run: $(( (c1 - c0) * 100 / 100 )) ticks (1/100 s) = $(( (c1 - c0) * 100 / (SECS * 100) ))% of a core over ${SECS}s; RSS after: $(proxy_rss_total $proxy) KiB"
            [ $proxy = node ] && { grep -ci "warn\|error" "$WORK/node.log" | sed 's/^/  node log warn|error lines: /'; ls -l "$WORK/data" | tail -n +2 | sed 's/^/  /'; }
            stop "$PPID_"; stop "$BPID"; keep_logs $proxy $r; sleep 2
        done
    done
    ;;
idle)
    N=${2:-9000}; ROUNDS=${3:-3}; HOLD=${HOLD:-15}
    for r in $(seq 1 "$ROUNDS"); do
        for proxy in ${PROXIES:-node nginx}; do
            start_backends
            if [ $proxy = node ]; then start_node; else start_nginx; fi
            sleep 1
            before=$(proxy_rss_total $proxy); before_m=$(rss "$MEASURE")
            echo "== round $r, $proxy, $N idle tunnels"; noise
            taskset -c 1 "$LOAD" hold "127.0.0.1:$PORT" "$N" "$HOLD" > "$WORK/hold.out" &
            LPID=$!; PIDS+=("$LPID")
            for _ in $(seq 1 300); do grep -q READY "$WORK/hold.out" && break; sleep 0.2; done
            cat "$WORK/hold.out"
            sleep 5
            after=$(proxy_rss_total $proxy); after_m=$(rss "$MEASURE")
            echo "  $proxy RSS before=${before} KiB after=${after} KiB (worker/process only: ${before_m} -> ${after_m}) fds=$(fds "$MEASURE") backends_open=$(tail -1 "$WORK/echo.log")"
            awk -v b="$before" -v a="$after" -v n="$N" 'BEGIN { printf "  RESULT %s KiB/tunnel = %.2f\n", "'$proxy'", (a-b)/n }'
            wait "$LPID"; cat "$WORK/hold.out" | grep DONE
            stop "$PPID_"; stop "$BPID"; keep_logs $proxy $r; sleep 2
        done
    done
    ;;
*) echo "usage: $0 rate|idle ..."; exit 2 ;;
esac
