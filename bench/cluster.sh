#!/usr/bin/env bash
# Cluster gossip benchmarks (BENCHMARKS.md, "Cluster"; runs in bench/history.md): real sysmanage-node
# processes on 127.0.0.11 .. 127.0.0.20, each with its own data_dir in a temp dir,
# the client and tiny backends from examples/cluster_bench.rs.
#
#   CARGO_TARGET_DIR=/work/target-bench5 cargo build --release --bin sysmanage-node --example cluster_bench
#   CARGO_TARGET_DIR=/work/target-bench5 bash bench/cluster.sh            # all phases
#   PHASES="propagate catchup" SIZES="3 5" KEYS=50 bash bench/cluster.sh  # a subset
#
# Phases (PHASES, default "propagate catchup gossip fail"):
#   propagate  for each cluster size in SIZES (default "3 5 10"): a fresh cluster (n1 `run`,
#              the others `join n1`), then KEYS (default 100) new keys created one after
#              the other through n1's listener; every other node's admin API is polled every
#              POLL_MS (default 5) ms until all of them know the key. p50/p99 per size.
#   catchup    n1 + n2; FILL (default 100000) sessions created through n1 (50 in flight);
#              then n3 starts (`join n1`) with an empty data_dir, CATCHUP_ROUNDS times
#              (default 3): time from spawning the process until its table holds FILL
#              records and until checks.cluster.syncing is false. Also how many records n2
#              got by gossip alone.
#   gossip     fresh 3-node cluster: gossip bytes/s per node from /metrics over GOSSIP_SECS
#              (default 30) idle, then over GOSSIP_SECS while RATE (default 200) new
#              sessions per second are created through n1.
#   fail       3 nodes, pool of s1 (its own backend process) and s2; n1 checks every 1s
#              (fall 3), n2 and n3 every 10s (fall 3); kill -9 s1's backend and poll every
#              node's /api/v1/status until all show s1 down. FAIL_ROUNDS (default 3) rounds.
#
#              Then idle again for GOSSIP_SECS, AFTER_WAIT (default 60) s after the load.
# Knobs: GOSSIP_INTERVAL (default 500ms, the product default), WORKERS (default 1 per node),
# BIN, CLIENT, BUILT_FROM (a note printed with the binary, e.g. the commit it was built from). Output: console, and a copy in $OUT (default bench/results/cluster-<timestamp>.txt).
# Every process started here is stopped by its PID on exit.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
BIN=${BIN:-$T/sysmanage-node}
CLIENT=${CLIENT:-$T/examples/cluster_bench}
PHASES=${PHASES:-"propagate catchup gossip fail"}
SIZES=${SIZES:-"3 5 10"}
KEYS=${KEYS:-100}
POLL_MS=${POLL_MS:-5}
FILL=${FILL:-100000}
CATCHUP_ROUNDS=${CATCHUP_ROUNDS:-3}
GOSSIP_SECS=${GOSSIP_SECS:-30}
RATE=${RATE:-200}
FAIL_ROUNDS=${FAIL_ROUNDS:-3}
GOSSIP_INTERVAL=${GOSSIP_INTERVAL:-500ms}
WORKERS=${WORKERS:-1}
AFTER_WAIT=${AFTER_WAIT:-60}
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/cluster-$STAMP.txt}
mkdir -p "$(dirname "$OUT")"
exec > >(tee "$OUT") 2>&1

for f in "$BIN" "$CLIENT"; do
    [ -x "$f" ] || { echo "missing $f: build it first (see the header of $0)"; exit 1; }
done
WORK=$(mktemp -d /tmp/cluster-bench.XXXXXX)
declare -A NODE_PID=()
BACKEND_PIDS=()

stop_pid() { kill "$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done; kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; true; }
stop_nodes() { for i in "${!NODE_PID[@]}"; do stop_pid "${NODE_PID[$i]}"; done; NODE_PID=(); }
stop_backends() { for p in "${BACKEND_PIDS[@]}"; do stop_pid "$p"; done; BACKEND_PIDS=(); }
cleanup() {
    stop_nodes; stop_backends
    if [ "${KEEP:-0}" = 1 ]; then echo "logs and data kept in $WORK"; else rm -rf "$WORK"; echo "removed $WORK (KEEP=1 keeps the logs)"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SECRET=$WORK/cluster.key
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$SECRET"; echo >> "$SECRET"
chmod 600 "$SECRET"

ip() { echo "127.0.0.$((10 + $1))"; }
http() { echo "$(ip "$1"):$((18700 + $1))"; }
admin() { echo "$(ip "$1"):$((18800 + $1))"; }
gossip() { echo "$(ip "$1"):$((18900 + $1))"; }
admins_from() { local a="" i; for i in $(seq "$1" "$2"); do a="$a$(admin "$i"),"; done; echo "${a%,}"; }
get() { curl -s -m 2 "http://$1$2"; }

# conf N POOL_EXTRA: node N's config; POOL_EXTRA goes into [[pools]] (servers, checks, affinity).
conf() {
    local n=$1 pool=$2 dir=$WORK/n$1
    mkdir -p "$dir"
    cat > "$dir/node.toml" <<EOF
[node]
name = "n$n"
data_dir = "$dir/data"
workers = $WORKERS

[log]
level = "info"
access_log = false

[admin]
listen = "$(admin "$n")"

[cluster]
listen = "$(gossip "$n")"
secret_file = "$SECRET"
gossip_interval = "$GOSSIP_INTERVAL"

[[listeners]]
name = "http"
bind = "$(http "$n")"

[[pools]]
name = "agents"
$pool

[[routes]]
name = "default"
path_prefix = "/"
pool = "agents"
EOF
}

# start N [PEER]: `run`, or `join PEER` (which also remembers PEER in data_dir).
start() {
    local n=$1 peer=${2:-} dir=$WORK/n$1
    if [ -n "$peer" ]; then
        "$BIN" join "$peer" -c "$dir/node.toml" >/dev/null 2>>"$dir/node.log" &
    else
        "$BIN" run -c "$dir/node.toml" >/dev/null 2>>"$dir/node.log" &
    fi
    NODE_PID[$n]=$!
}
wait_admin() {
    local i; for i in $(seq 1 200); do get "$(admin "$1")" /health >/dev/null && return 0; sleep 0.05; done
    echo "n$1's admin API did not come up; log:"; tail -20 "$WORK/n$1/node.log"; return 1
}
# wait_live N COUNT: node N lists COUNT live members (30 s at most).
wait_live() {
    local i live
    for i in $(seq 1 300); do
        live=$(get "$(admin "$1")" /api/v1/members | python3 -c 'import json,sys; print(sum(m["state"]=="live" for m in json.load(sys.stdin)["members"]))' 2>/dev/null)
        [ "${live:-0}" = "$2" ] && return 0
        sleep 0.1
    done
    echo "n$1 sees ${live:-?} live members, expected $2"; return 1
}
sessions_total() { get "$(admin "$1")" /api/v1/sessions | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])' 2>/dev/null || echo "?"; }
loadavg() { echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg)"; }
node_cpu() { awk '{printf "%.1f", ($14+$15)/100}' "/proc/$1/stat" 2>/dev/null; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null; }
warnings() {  # WARN/ERROR lines in the node logs of this phase
    local n; for n in "$@"; do
        local c; c=$(grep -cE ' (WARN|ERROR) ' "$WORK/n$n/node.log" 2>/dev/null); c=${c:-0}
        [ "$c" -gt 0 ] && { echo "  n$n log: $c WARN/ERROR lines, first ones:"; grep -E ' (WARN|ERROR) ' "$WORK/n$n/node.log" | head -3 | cut -c1-300 | sed 's/^/    /'; }
    done; true
}
fresh() { stop_nodes; rm -rf "$WORK"/n*; }

start_backends() {  # s1..s3 on 127.0.0.1:18681..18683, one process
    "$CLIENT" backend s1=127.0.0.1:18681 s2=127.0.0.1:18682 s3=127.0.0.1:18683 >/dev/null 2>"$WORK/backends.log" &
    BACKEND_PIDS+=("$!"); sleep 0.3
}
STICKY='affinity = { key = "header:X-Agent", ttl = "1h", policy = "least_loaded" }
servers = [{ name = "s1", addr = "127.0.0.1:18681" }, { name = "s2", addr = "127.0.0.1:18682" }, { name = "s3", addr = "127.0.0.1:18683" }]'

# cluster N: fresh sticky cluster of N nodes (n1 run, the others join n1), all live.
cluster() {
    local n=$1 i
    fresh
    for i in $(seq 1 "$n"); do conf "$i" "$STICKY"; done
    start 1; wait_admin 1 || return 1
    for i in $(seq 2 "$n"); do start "$i" "$(gossip 1)"; done
    for i in $(seq 2 "$n"); do wait_admin "$i" || return 1; done
    for i in $(seq 1 "$n"); do wait_live "$i" "$n" || return 1; done
}

echo "== cluster bench $STAMP  ($(date -u +%FT%TZ))"
echo "binary: $BIN ($(date -u -r "$BIN" +%FT%TZ)); built from: ${BUILT_FROM:-unknown}; HEAD now $(git -C "$ROOT" rev-parse --short HEAD)"
echo "nproc $(nproc); $(loadavg); gossip_interval $GOSSIP_INTERVAL; workers per node $WORKERS"
start_backends

for phase in $PHASES; do
case $phase in
propagate)
    for n in $SIZES; do
        echo; echo "== propagate: $n nodes, $KEYS keys, poll every $POLL_MS ms  ($(date -u +%T), $(loadavg))"
        t0=$(date +%s.%N)
        cluster "$n" || { echo "cluster of $n did not form"; warnings $(seq 1 "$n"); continue; }
        echo "cluster of $n formed in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
        "$CLIENT" propagate "$(http 1)" "$(admins_from 2 "$n")" "$KEYS" "p$n-$STAMP" "$POLL_MS"
        echo "after: $(loadavg); n1 cpu $(node_cpu "${NODE_PID[1]}") s rss $(rss_mib "${NODE_PID[1]}") MiB"
        warnings $(seq 1 "$n")
    done
    ;;
catchup)
    echo; echo "== catchup: $FILL sessions, $CATCHUP_ROUNDS joins  ($(date -u +%T), $(loadavg))"
    fresh
    for i in 1 2 3; do conf "$i" "$STICKY"; done
    start 1; wait_admin 1; start 2 "$(gossip 1)"; wait_admin 2; wait_live 1 2
    "$CLIENT" fill "$(http 1)" "$FILL" 50 "fill-$STAMP"
    echo "n1 total $(sessions_total 1); n2 total (gossip only) $(sessions_total 2) at once"
    sleep 5
    echo "n2 total (gossip only) $(sessions_total 2) 5 s later"
    get "$(admin 1)" /metrics | grep -E '^sysmanage_cluster_(sessions|gossip_bytes)' | sed 's/^/  n1 /'
    get "$(admin 2)" /metrics | grep -E '^sysmanage_cluster_(sessions|gossip_bytes)' | sed 's/^/  n2 /'
    for r in $(seq 1 "$CATCHUP_ROUNDS"); do
        rm -rf "$WORK/n3/data"
        start_ms=$(date +%s%3N)
        start 3 "$(gossip 1)"
        echo "-- round $r ($(loadavg))"
        "$CLIENT" catchup "$(admin 3)" "$FILL" "$start_ms" 60
        echo "n3 rss $(rss_mib "${NODE_PID[3]}") MiB; n1 rss $(rss_mib "${NODE_PID[1]}") MiB"
        grep -E 'caught up|catch-up' "$WORK/n3/node.log" | tail -2 | cut -c1-300 | sed 's/^/  n3 log: /'
        stop_pid "${NODE_PID[3]}"; unset 'NODE_PID[3]'
        wait_live 1 2 >/dev/null
    done
    warnings 1 2 3
    ;;
gossip)
    echo; echo "== gossip bytes: 3 nodes, ${GOSSIP_SECS}s idle, then ${GOSSIP_SECS}s at $RATE new sessions/s  ($(date -u +%T), $(loadavg))"
    cluster 3 || { echo "cluster of 3 did not form"; continue; }
    sleep 5
    echo "-- idle"
    "$CLIENT" gossip "$GOSSIP_SECS" "$(admins_from 1 3)"
    echo "-- $RATE new sessions/s through n1"
    "$CLIENT" rate "$(http 1)" "$RATE" $((GOSSIP_SECS + 4)) "g-$STAMP" &
    RPID=$!
    sleep 2
    "$CLIENT" gossip "$GOSSIP_SECS" "$(admins_from 1 3)"
    wait "$RPID"
    for i in 1 2 3; do echo "n$i sessions total $(sessions_total "$i"); cpu $(node_cpu "${NODE_PID[$i]}") s; rss $(rss_mib "${NODE_PID[$i]}") MiB"; done
    echo "-- idle again, from $AFTER_WAIT s after the load for $GOSSIP_SECS s (session keys in gossip have a 60 s TTL)"
    sleep "$AFTER_WAIT"
    "$CLIENT" gossip "$GOSSIP_SECS" "$(admins_from 1 3)"
    for i in 1 2 3; do echo "n$i sessions total $(sessions_total "$i") (after the idle period)"; done
    warnings 1 2 3
    ;;
fail)
    for r in $(seq 1 "$FAIL_ROUNDS"); do
        echo; echo "== fail round $r: 3 nodes; s1 checked every 1s (n1) / 10s (n2, n3), fall 3  ($(date -u +%T), $(loadavg))"
        fresh
        "$CLIENT" backend s1=127.0.0.1:18691 >/dev/null 2>>"$WORK/backend-s1.log" &
        S1=$!; sleep 0.3
        SERVERS='servers = [{ name = "s1", addr = "127.0.0.1:18691" }, { name = "s2", addr = "127.0.0.1:18682" }]'
        conf 1 "$SERVERS
checks = [{ path = \"/health\", interval = \"1s\", timeout = \"500ms\", fall = 3, rise = 2 }]"
        for i in 2 3; do conf "$i" "$SERVERS
checks = [{ path = \"/health\", interval = \"10s\", timeout = \"500ms\", fall = 3, rise = 2 }]"; done
        start 1; wait_admin 1; start 2 "$(gossip 1)"; start 3 "$(gossip 1)"; wait_admin 2; wait_admin 3
        for i in 1 2 3; do wait_live "$i" 3; done
        # All three report s1 up (nodes_up 3) before the kill, and 2-3 s pass so that
        # the nodes' own check schedules are at random phases.
        for _ in $(seq 1 100); do
            ok=0
            for i in 1 2 3; do
                get "$(admin "$i")" /api/v1/status | python3 -c 'import json,sys; v=json.load(sys.stdin); s=[s for p in v["pools"] for s in p["servers"] if s["name"]=="s1"][0]; sys.exit(0 if s["nodes_up"]==3 else 1)' 2>/dev/null && ok=$((ok + 1))
            done
            [ $ok = 3 ] && break; sleep 0.1
        done
        sleep "$((2 + RANDOM % 2)).$((RANDOM % 10))"
        "$CLIENT" fail "$S1" s1 40 "$(admins_from 1 3)"
        wait "$S1" 2>/dev/null
        grep -hE 'peer sees|server is DOWN' "$WORK"/n[123]/node.log | cut -c1-250 | sed 's/^/  log: /'
        warnings 1 2 3
    done
    ;;
*) echo "unknown phase $phase" ;;
esac
done
stop_nodes
echo; echo "== done $(date -u +%FT%TZ); $(loadavg)"
