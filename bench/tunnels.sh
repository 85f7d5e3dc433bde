#!/usr/bin/env bash
# WebSocket tunnels through sysmanage-node (token affinity) and nginx.
#   CARGO_TARGET_DIR=/work/target-bench5 cargo build --release --bin sysmanage-node \
#       --example ws_echo --example ws_load
#   bench/tunnels.sh rate [RATE] [SECS] [ROUNDS]   new affinity assignments: RATE new WebSocket
#                                                  connections/s, each a new hostname, for SECS;
#                                                  connect->101 latency (node, then nginx as reference)
#   bench/tunnels.sh idle [N] [ROUNDS]             N idle tunnels held open: proxy RSS before/after
#   bench/tunnels.sh curve [ROUNDS] [OUT]          idle tunnels at COUNTS (default 1000 3000 5000 7000 9000)
#                                                  through node (sticky, and node-plain without
#                                                  affinity), nginx and HAProxy, interleaved: RSS
#                                                  before/after per run to OUT (CSV); bench/tunnels_plot.py
#                                                  fits KiB per tunnel and draws memory against count
#   bench/tunnels.sh beat [N] [ROUNDS]             N tunnels with a heartbeat each every 3 s (SECS=30):
#                                                  proxy CPU per heartbeat exchange, node, nginx, HAProxy
#   bench/tunnels.sh storm [N] [M] [ROUNDS]        a reconnect storm over TLS: M (950) established tunnels
#                                                  beating every 500 ms, then N (9000) agents connecting
#                                                  at once (full handshakes); time until all are open,
#                                                  connect->101 percentiles, errors, the established
#                                                  tunnels' heartbeat round trips during it; node, nginx,
#                                                  HAProxy, each on one core with the same certificate
#                                                  (examples/tls, ECDSA P-256) and a listen backlog of 4096;
#                                                  STORM_AGENTS_NICE=K runs the storm's agents at nice +K
#                                                  (the beating thread and the backends keep nice 0)
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
    # Another run's backends still on the ports would answer wait_port and
    # then go away under this run: fail instead.
    sleep 0.2; kill -0 "$BPID" 2>/dev/null || { echo "backends failed to start:"; cat "$WORK/echo.log"; exit 1; }
}
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
# Logs of every round are kept in LOGDIR (default bench/results/logs).
LOGDIR=${LOGDIR:-$HERE/results/logs}; mkdir -p "$LOGDIR"
keep_logs() { cp "$WORK/echo.log" "$LOGDIR/$MODE-$1-r$2-echo.log" 2>/dev/null; [ "$1" = node ] && cp "$WORK/node.log" "$LOGDIR/$MODE-node-r$2-node.log"; true; }

start_node() {  # start_node [plain]: plain drops the pool's affinity (no session records)
    mkdir -p "$WORK/data"; rm -rf "$WORK/data"/*
    sed "s#DATA_DIR#$WORK/data#" "$HERE/ws_node.toml" > "$WORK/node.toml"
    if [ "${1:-}" = plain ]; then
        awk '/^\[pools.affinity\]/ {skip=1; next} /^$/ {skip=0} !skip' "$WORK/node.toml" > "$WORK/node.plain.toml"
        mv "$WORK/node.plain.toml" "$WORK/node.toml"
    fi
    if [ -n "${TLS:-}" ]; then
        sed -i "s#^bind = \"127.0.0.1:18480\"#&\ntls = { cert = \"$CERT\", key = \"$KEY\" }#" "$WORK/node.toml"
    fi
    taskset -c 0 "${NODE_BIN:-$NODE}" run -c "$WORK/node.toml" 2>"$WORK/node.log" &
    PPID_=$!; PIDS+=("$PPID_"); wait_port 18480; PORT=18480; MEASURE=$PPID_
}
start_nginx() {
    mkdir -p "$WORK/nginx/tmp"
    sed "s#PREFIX#$WORK/nginx#g" "$HERE/ws_nginx.conf" > "$WORK/nginx/nginx.conf"
    if [ -n "${TLS:-}" ]; then   # nginx's default backlog is 511: given the node's 4096
        sed -i "s#listen 127.0.0.1:18490;#listen 127.0.0.1:18490 ssl backlog=4096; ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate $CERT; ssl_certificate_key $KEY;#" "$WORK/nginx/nginx.conf"
    fi
    taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
    PPID_=$!; PIDS+=("$PPID_"); wait_port 18490; PORT=18490
    sleep 0.3; MEASURE=$(pgrep -P "$PPID_" | head -1)   # the worker
}
start_haproxy() {
    mkdir -p "$WORK/haproxy"
    sed "s#PREFIX#$WORK/haproxy#g" "$HERE/ws_haproxy.cfg" > "$WORK/haproxy/haproxy.cfg"
    if [ -n "${TLS:-}" ]; then
        cat "$CERT" "$KEY" > "$WORK/haproxy/server.pem"
        sed -i "s#bind 127.0.0.1:18495#& ssl crt $WORK/haproxy/server.pem backlog 4096#" "$WORK/haproxy/haproxy.cfg"
    fi
    taskset -c 0 haproxy -db -f "$WORK/haproxy/haproxy.cfg" 2>"$WORK/haproxy.log" &
    PPID_=$!; PIDS+=("$PPID_"); wait_port 18495; PORT=18495; MEASURE=$PPID_
}
# node-before: NODE_BEFORE, another build (the one before a change), sticky.
start_proxy() {
    case $1 in
        node) start_node ;;
        node-plain) start_node plain ;;
        node-before) NODE_BIN=$NODE_BEFORE start_node ;;
        nginx) start_nginx ;;
        haproxy) start_haproxy ;;
    esac
}
proxy_rss_total() {  # node, HAProxy: the process; nginx: master + worker
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
curve)
    ROUNDS=${2:-2}; OUT=${3:-$HERE/results/tunnels-curve.csv}; HOLD=${HOLD:-8}
    COUNTS=${COUNTS:-1000 3000 5000 7000 9000}
    echo "proxy,count,round,rss_before_kib,rss_after_kib,open" > "$OUT"
    for r in $(seq 1 "$ROUNDS"); do
        for n in $COUNTS; do
            for proxy in ${PROXIES:-node node-plain nginx haproxy}; do
                start_backends; start_proxy "$proxy"; sleep 1
                before=$(proxy_rss_total "$proxy")
                taskset -c 1 "$LOAD" hold "127.0.0.1:$PORT" "$n" "$HOLD" > "$WORK/hold.out" &
                LPID=$!; PIDS+=("$LPID")
                for _ in $(seq 1 600); do grep -q READY "$WORK/hold.out" && break; sleep 0.2; done
                sleep 3
                after=$(proxy_rss_total "$proxy")
                open=$(grep -o 'open=[0-9]*' "$WORK/hold.out" | cut -d= -f2)
                echo "$proxy,$n,$r,$before,$after,${open:-0}" | tee -a "$OUT"
                wait "$LPID"; stop "$PPID_"; stop "$BPID"; sleep 1
            done
        done
    done
    ;;
beat)
    # N tunnels, each with a heartbeat every BEAT_EVERY_MS (3000): the
    # proxy's CPU over the beating window, per heartbeat exchange.
    N=${2:-9000}; ROUNDS=${3:-3}; SECS=${SECS:-30}
    for r in $(seq 1 "$ROUNDS"); do
        for proxy in ${PROXIES:-node nginx haproxy}; do
            start_backends; start_proxy "$proxy"; sleep 1
            taskset -c 1 "$LOAD" beat "127.0.0.1:$PORT" "$N" "$SECS" > "$WORK/beat.out" &
            LPID=$!; PIDS+=("$LPID")
            for _ in $(seq 1 600); do grep -q READY "$WORK/beat.out" && break; sleep 0.2; done
            c0=$(cpu_ticks "$MEASURE"); t0=$(date +%s.%N)
            wait "$LPID"
            c1=$(cpu_ticks "$MEASURE"); t1=$(date +%s.%N)
            beats=$(grep -o 'BEATS n=[0-9]*' "$WORK/beat.out" | cut -d= -f2)
            echo "RESULT round=$r proxy=$proxy $(grep READY "$WORK/beat.out") $(grep BEATS "$WORK/beat.out") cpu_ticks=$((c1 - c0)) wall=$(echo "$t1 - $t0" | bc) us_per_beat=$(echo "scale=2; ($c1 - $c0) * 10000 / ${beats:-1}" | bc)"
            stop "$PPID_"; stop "$BPID"; sleep 1
        done
    done
    ;;
storm)
    # The proxy holds N + M tunnels, two descriptors each: 9,000 + 950
    # is what the hard limit of 20,000 descriptors here allows.
    N=${2:-9000}; M=${3:-950}; ROUNDS=${4:-3}
    TLS=1; CERT=$HERE/../examples/tls/server.crt; KEY=$HERE/../examples/tls/server.key
    for r in $(seq 1 "$ROUNDS"); do
        for proxy in ${PROXIES:-node nginx haproxy}; do
            start_backends; start_proxy "$proxy"; sleep 1
            c0=$(cpu_ticks "$MEASURE")
            taskset -c 1 "$LOAD" storm "tls://127.0.0.1:$PORT" "$N" "$M" > "$WORK/storm.out" 2>&1
            c1=$(cpu_ticks "$MEASURE")
            echo "RESULT round=$r proxy=$proxy cpu_ticks=$((c1 - c0)) rss_kib=$(proxy_rss_total "$proxy") $(tr '\n' ' ' < "$WORK/storm.out")"
            [ "$proxy" = node ] && { grep -ci "warn\|error" "$WORK/node.log" | sed 's/^/  node log warn|error lines: /'; }
            stop "$PPID_"; stop "$BPID"; keep_logs "$proxy" "$r"
            # Let the TIME_WAIT sockets of this round's 20,000 connections go.
            sleep "${PAUSE:-20}"
        done
    done
    ;;
*) echo "usage: $0 rate|idle|curve|beat|storm ..."; exit 2 ;;
esac
