#!/usr/bin/env bash
# A stuck server slows nothing else: the p99 of a healthy pool through one
# node, alone and while HANG (200) requests hang on another pool whose
# server accepts connections and never answers (read_timeout 30 s), in
# alternating rounds.
#
#   bash bench/stuck_server.sh                  ROUNDS=5 DUR=15 CONNS=50 HANG=200
#
# The healthy pool's server is the soak's sample backend (examples/soak,
# `soak backend`), the stuck one a Python socket that reads and says
# nothing. wrk drives the healthy pool (CONNS connections, one thread);
# curl keeps HANG requests open on the stuck one during the "stuck" rounds
# (passive health is off for it, so every one of them reaches the server
# and waits). Prints one line per round and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DUR=${DUR:-15}
CONNS=${CONNS:-50}
HANG=${HANG:-200}
command -v wrk >/dev/null || { echo "stuck_server.sh: wrk is not installed (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin sysmanage-node --example soak
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ok_port=$(free_port); stuck_port=$(free_port); http_port=$(free_port); admin_port=$(free_port)
target/release/examples/soak backend ok "127.0.0.1:$ok_port" 2>"$work/backend.log" & pids+=($!)
python3 - "$stuck_port" <<'PY' & pids+=($!)
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
held = []
while True:
    c, _ = s.accept(); held.append(c)   # read nothing, answer nothing
PY
cat >"$work/node.toml" <<TOML
[node]
name = "stuck-bench"
data_dir = "$work/data"
[log]
access_log = false
[admin]
listen = "127.0.0.1:$admin_port"
[[listeners]]
name = "http"
bind = "127.0.0.1:$http_port"
[limits]
max_connections = 10000
[[pools]]
name = "ok"
servers = [{ addr = "127.0.0.1:$ok_port" }]
[[pools]]
name = "stuck"
read_timeout = "30s"
max_fails = 0
retries = 0
servers = [{ addr = "127.0.0.1:$stuck_port" }]
[[routes]]
name = "stuck"
path_prefix = "/stuck"
pool = "stuck"
[[routes]]
name = "ok"
path_prefix = "/"
pool = "ok"
TOML
target/release/sysmanage-node run -c "$work/node.toml" 2>"$work/node.log" & pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$http_port/" >/dev/null && break; sleep 0.1; done
p99() { awk '/ 99%/ { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 }; print v }'; }
rps() { awk '/Requests\/sec/ { print $2 }'; }
echo "round phase p99_ms req_per_s"
for r in $(seq "$ROUNDS"); do
    for phase in alone stuck; do
        hang=()
        if [ "$phase" = stuck ]; then
            for _ in $(seq "$HANG"); do
                curl -s -o /dev/null --max-time $((DUR + 10)) "http://127.0.0.1:$http_port/stuck/x" & hang+=($!)
            done
            sleep 1
        fi
        out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$http_port/api/hosts")
        echo "$r $phase $(echo "$out" | p99) $(echo "$out" | rps)"
        for p in "${hang[@]}"; do kill "$p" 2>/dev/null || true; done
        wait "${hang[@]}" 2>/dev/null || true
    done
done | tee "$work/rounds.txt"
awk -v hang="$HANG" 'NR>1 { p[$2]=p[$2]" "$3; q[$2]=q[$2]" "$4 }
     function med(s,   a,n,i,j,t) { n=split(s,a," "); for(i=1;i<=n;i++)for(j=i+1;j<=n;j++)if(a[j]+0<a[i]+0){t=a[i];a[i]=a[j];a[j]=t}; return a[int((n+1)/2)] }
     END { printf "median p99: alone %s ms, with %s hanging on the stuck pool %s ms (ratio %.2f); req/s %s vs %s\n",
           med(p["alone"]), hang, med(p["stuck"]), med(p["stuck"])/med(p["alone"]), med(q["alone"]), med(q["stuck"]) }' \
    "$work/rounds.txt"
