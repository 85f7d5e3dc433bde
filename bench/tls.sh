#!/usr/bin/env bash
# TLS termination: sysmanage-node vs nginx vs HAProxy, HTTPS in front, plain HTTP to the two
# nginx backends of the shared harness, same ECDSA P-256 certificate for all three.
#
#   CARGO_TARGET_DIR=/work/target-bench bash bench/tls.sh
#   ROUNDS=5 DUR=10 MODES="ka hs-full hs-resume" TARGETS="nginx haproxy node" bash bench/tls.sh
#
# Topology as in bench/harness/compare.sh: each proxy has 1 worker / 1 thread and is pinned
# to CPU $PROXY_CPU (all three stay up; the idle ones cost ~0); wrk (1 thread) and the
# backends (127.0.0.1:9001, :9002, 1 nginx worker each) are on CPU $LOAD_CPU.
#   nginx    https://127.0.0.1:8443/  listen ... ssl; ssl_protocols TLSv1.2 TLSv1.3; upstream keepalive 512
#   HAProxy  https://127.0.0.1:8444/  bind ... ssl crt <cert+key PEM> ssl-min-ver TLSv1.2; http-reuse always
#   node     https://127.0.0.1:8445/  bench/node.toml with the listener on 8445 and
#            tls = { cert, key }; admin API on 127.0.0.1:9199 (for /metrics)
# Session resumption is left at each server's default (all three issue session tickets).
#
# Modes (wrk -t1 -c$CONNS -d${DUR}s):
#   ka         keep-alive HTTPS requests/s (one handshake per connection, then reuse)
#   hs-full    -H "Connection: close": every request on a new connection, and wrk preloaded
#              with bench/wrk_tls_shim.c (WRK_NO_RESUME=1) so that each connection makes a
#              FULL handshake
#   hs-resume  -H "Connection: close" with wrk's own behaviour: wrk 4.1.0 keeps the session in
#              its SSL object (SSL_clear) and offers it again, so these are RESUMED handshakes
#              (TLS 1.3 PSK with (EC)DHE).
#   In both hs modes the shim counts, on the client side, the connections wrk closed and how
#   many had resumed a session (column resumed_pct; the "tls-shim:" line in wrk-*.txt).
#   HAProxy's own view (SslFrontendSessionReuse_pct, mid-run) is in haproxy-info-*.txt.
# Rounds interleave the targets (order rotated every round); each run starts after a quiet
# gate and records req/s, proxy CPU (utime+stime, process tree), CPU µs per request,
# errors and foreign CPU. Summary: medians and per-round paired ratios node ÷ nginx and
# node ÷ HAProxy (rounds where a run had foreign CPU > NOISE_MAX % are listed and excluded).
# After the runs: the node's sysmanage_tls_handshake_seconds from /metrics, and the protocol
# and cipher each proxy negotiates with `openssl s_client`.
# Knobs (env): ROUNDS=3 DUR=10 CONNS=50 MODES="ka hs-full hs-resume" TARGETS="nginx haproxy node"
#   HOST=localhost WARMUP=3 PROXY_CPU=0 LOAD_CPU=1 QUIET_PCT=10 QUIET_WAIT=90 NOISE_MAX=25
#   B1=9001 B2=9002 (backend ports) BIN=...
# Output: $BENCH_WORK/tls-<timestamp>/{results.csv,summary.md,metrics-after.txt,negotiated.txt,...}
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$ROOT/bench/harness   # a copy of ../shared/bench: bench/harness/ORIGIN.md
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET_DIR/release/sysmanage-node}
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10}
CONNS=${CONNS:-50}
MODES=${MODES:-"ka hs-full hs-resume"}
TARGETS=${TARGETS:-"nginx haproxy node"}
WARMUP=${WARMUP:-3}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-90}
NOISE_MAX=${NOISE_MAX:-25}
# Host name in the URLs wrk uses; it is also the SNI wrk sends. "localhost" (it must resolve
# to 127.0.0.1 only; the certificate names it). With HOST=127.0.0.1 wrk sends the IP address
# as SNI, which RFC 6066 forbids: rustls then logs a WARN line for every handshake.
HOST=${HOST:-localhost}
ADMIN=127.0.0.1:9199
# Backend ports: the harness's 9001/9002 by default; set B1/B2 to others when another
# benchmark is using those (the node configs are rewritten to match).
B1=${B1:-9001} B2=${B2:-9002}
CLK_TCK=$(getconf CLK_TCK)
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/sysmanage-bench}
OUT=$WORK/tls-$(date +%Y%m%d-%H%M%S)
RUN=$OUT/run
mkdir -p "$RUN/tmp"
[[ -x $BIN ]] || { echo "binary not found: $BIN" >&2; exit 1; }
ulimit -n 20000 || true
declare -A PORT=([nginx]=8443 [haproxy]=8444 [node]=8445) PID
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
for port in $B1 $B2 8443 8444 8445 9199; do
  if ss -ltn "sport = :$port" | grep -q LISTEN; then echo "port $port is already in use (another benchmark running?)" >&2; exit 1; fi
done

# --- certificate: one ECDSA P-256 self-signed certificate for all three ----------------------
CERT=$OUT/cert/server.crt KEY=$OUT/cert/server.key
if ! "$BIN" cert self-signed --host 127.0.0.1 --host localhost --out "$OUT/cert" >"$RUN/cert.out" 2>&1; then
  echo "sysmanage-node cert self-signed failed ($(head -1 "$RUN/cert.out")); using openssl" | tee -a "$RUN/cert.out"
  mkdir -p "$OUT/cert"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$KEY" -out "$CERT" 2>>"$RUN/cert.out"
fi
cat "$CERT" "$KEY" >"$OUT/cert/haproxy.pem"
openssl x509 -in "$CERT" -noout -subject -ext subjectAltName -text | grep -E "subject=|NIST CURVE|Signature Algorithm|IP Address" | sort -u >"$OUT/cert/info.txt"

# --- wrk shim: counts resumed handshakes, optionally turns resumption off ------------------------------------------------------------
gcc -O2 -shared -fPIC -o "$RUN/wrk_tls_shim.so" "$ROOT/bench/wrk_tls_shim.c" -lssl -ldl

# --- backends (shared template) -----------------------------------------------------------------
wait_http() { for _ in $(seq 1 100); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; exit 1; }
for p in $B1 $B2; do
  sed -e "s#@RUN@#$RUN#g" -e "s#@PORT@#$p#g" "$SHARED/conf/backend-nginx.conf.tmpl" >"$RUN/backend-$p.conf"
  taskset -c "$LOAD_CPU" nginx -e "$RUN/backend-$p.err" -c "$RUN/backend-$p.conf" >"$RUN/backend-$p.out" 2>&1 &
  BPIDS+=($!)
done
wait_http http://127.0.0.1:$B1/; wait_http http://127.0.0.1:$B2/

# --- proxies ---------------------------------------------------------------------------------------
cat >"$OUT/nginx-tls.conf" <<EOF
# nginx TLS proxy: 1 worker, round-robin over 2 backends, upstream keepalive (as nginx-proxy.conf.tmpl)
worker_processes 1;
daemon off;
master_process on;
pid $RUN/nginx-tls.pid;
error_log $RUN/nginx-tls.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 9000; multi_accept on; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $RUN/tmp/np-body;
    proxy_temp_path       $RUN/tmp/np-proxy;
    fastcgi_temp_path     $RUN/tmp/np-fcgi;
    uwsgi_temp_path       $RUN/tmp/np-uwsgi;
    scgi_temp_path        $RUN/tmp/np-scgi;
    upstream backends {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 512;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} ssl backlog=4096;
        ssl_certificate     $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
cat >"$OUT/haproxy-tls.cfg" <<EOF
# HAProxy TLS proxy: 1 thread, round-robin over 2 backends, server-side connection reuse
global
    nbthread 1
    maxconn 9000
    pidfile $RUN/haproxy-tls.pid
    stats socket $RUN/haproxy.sock mode 600 level admin

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    maxconn 9000

frontend fe
    bind 127.0.0.1:${PORT[haproxy]} ssl crt $OUT/cert/haproxy.pem ssl-min-ver TLSv1.2 backlog 4096
    default_backend be

backend be
    balance roundrobin
    server b1 127.0.0.1:$B1
    server b2 127.0.0.1:$B2
EOF
{
  sed -e "s#^bind = \"127.0.0.1:8085\"#bind = \"127.0.0.1:${PORT[node]}\"\ntls = { cert = \"$CERT\", key = \"$KEY\" }#" \
      -e "s#127.0.0.1:9001#127.0.0.1:$B1#" -e "s#127.0.0.1:9002#127.0.0.1:$B2#" "$ROOT/bench/node.toml"
  printf '\n[admin]\nenabled = true\nlisten = "%s"\n' "$ADMIN"
} >"$OUT/node-tls.toml"
grep -q "tls = " "$OUT/node-tls.toml" || { echo "could not put tls into node-tls.toml" >&2; exit 1; }
"$BIN" check-config "$OUT/node-tls.toml" >"$RUN/node-check.out"

for t in $TARGETS; do
  case $t in
    nginx) taskset -c "$PROXY_CPU" nginx -e "$RUN/nginx-tls.err" -c "$OUT/nginx-tls.conf" >"$RUN/nginx.out" 2>&1 & ;;
    haproxy) taskset -c "$PROXY_CPU" haproxy -db -f "$OUT/haproxy-tls.cfg" >"$RUN/haproxy.out" 2>&1 & ;;
    node) taskset -c "$PROXY_CPU" "$BIN" run -c "$OUT/node-tls.toml" >"$RUN/node.out" 2>&1 & ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
  PID[$t]=$!
done
for t in $TARGETS; do wait_http "https://127.0.0.1:${PORT[$t]}/"; done

# --- measurement helpers ---------------------------------------------------------------------------
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
tree_ticks() { local s=0 p; for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do s=$((s + $(ticks "$p"))); done; echo $s; }
ours() { local s=0 p; for p in "${BPIDS[@]}" "${PID[@]}"; do s=$((s + $(tree_ticks "$p"))); done; echo $s; }
all_busy() { awk '$1=="cpu"{print $2+$3+$4}' /proc/stat; }
foreign_pct() { local a0 o0 a1 o1; a0=$(all_busy); o0=$(ours); sleep "$1"; a1=$(all_busy); o1=$(ours)
  awk -v a=$((a1 - a0)) -v o=$((o1 - o0)) -v hz="$CLK_TCK" -v d="$1" 'BEGIN{v=(a-o)/hz/d*100; if(v<0)v=0; printf "%.0f", v}'; }
wait_quiet() { local t0=$SECONDS f; while :; do f=$(foreign_pct 1); if ((f < QUIET_PCT)) || ((SECONDS - t0 >= QUIET_WAIT)); then break; fi; sleep 2; done; echo $((SECONDS - t0)); }
hap_info() { python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show info\n")
print("".join(l for l in s.makefile() if l.startswith(("Ssl","CumSsl","ConnRate","CumConns"))), end="")' "$RUN/haproxy.sock"; }

{
  echo "date: $(date -Is)  host: $(uname -r)  nproc: $(nproc)  proxy_cpu=$PROXY_CPU load_cpu=$LOAD_CPU"
  echo "binary: $BIN ($(stat -c %y "$BIN"))  git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet -- src 2>/dev/null || echo ' + uncommitted src changes')"
  echo "ROUNDS=$ROUNDS DUR=$DUR CONNS=$CONNS MODES=$MODES TARGETS=$TARGETS HOST=$HOST"
  { nginx -v 2>&1; haproxy -v | head -1; { wrk -v 2>&1 || true; } | head -1; openssl version; } || true
  cat /proc/loadavg; cat "$OUT/cert/info.txt"
} | tee "$OUT/env.txt"

for t in $TARGETS; do taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "https://$HOST:${PORT[$t]}/" >/dev/null 2>&1 || true; done

echo "round,mode,target,rps,proxy_cpu_pct,proxy_us_per_req,wrk_cpu_pct,errors,foreign_pct,quiet_wait_s,resumed_pct" >"$OUT/results.csv"
run_one() { # round mode target
  local r=$1 m=$2 t=$3 out="$OUT/wrk-r$1-$2-$3.txt" waited a0 a1 o0 o1 k0 k1 pre=() hdr=() infop=
  case $m in
    ka) ;;
    hs-full) pre=(env WRK_NO_RESUME=1 LD_PRELOAD="$RUN/wrk_tls_shim.so"); hdr=(-H "Connection: close") ;;
    hs-resume) pre=(env WRK_NO_RESUME=0 LD_PRELOAD="$RUN/wrk_tls_shim.so"); hdr=(-H "Connection: close") ;;
  esac
  waited=$(wait_quiet)
  if [[ $t == haproxy && $m != ka ]]; then (sleep $((DUR / 2)); hap_info >"$OUT/haproxy-info-r$r-$m.txt" 2>&1) & infop=$!; fi
  a0=$(all_busy); o0=$(ours); k0=$(tree_ticks "${PID[$t]}")
  /usr/bin/time -f "%U %S" -o "$out.time" "${pre[@]}" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" "${hdr[@]}" "https://$HOST:${PORT[$t]}/" >"$out" 2>&1 || true
  a1=$(all_busy); o1=$(ours); k1=$(tree_ticks "${PID[$t]}")
  [[ -n $infop ]] && { wait "$infop" || true; }
  local rps errs wrkt cpu us f
  rps=$(awk '/^Requests\/sec:/{print $2}' "$out"); rps=${rps:-0}
  errs=$(awk '/Non-2xx/{s+=$NF} /Socket errors/{gsub(/,/,""); s+=$4+$6+$8+$10} END{print s+0}' "$out")
  wrkt=$(awk -v hz="$CLK_TCK" 'END{printf "%.0f", ($1+$2)*hz}' "$out.time")
  cpu=$(awk -v k=$((k1 - k0)) -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN{printf "%.1f", k/hz/d*100}')
  us=$(awk -v k=$((k1 - k0)) -v hz="$CLK_TCK" -v r="$rps" -v d="$DUR" 'BEGIN{if(r>0) printf "%.2f", k/hz*1e6/(r*d); else print "NA"}')
  f=$(awk -v a=$((a1 - a0)) -v o=$((o1 - o0)) -v w="$wrkt" -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN{v=(a-o-w)/hz/d*100; if(v<0)v=0; printf "%.0f", v}')
  local wcpu; wcpu=$(awk -v w="$wrkt" -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN{printf "%.0f", w/hz/d*100}')
  local res; res=$(awk -F'[ =]' '/^tls-shim:/{ if ($3>0) printf "%.1f", $5/$3*100 }' "$out"); res=${res:-NA}
  echo "$r,$m,$t,$rps,$cpu,$us,$wcpu,$errs,$f,$waited,$res" >>"$OUT/results.csv"
  printf 'round %s %-9s %-8s rps=%-9s proxyCPU=%-5s%% us/req=%-7s wrkCPU=%s%% resumed=%s%% err=%-6s foreign=%s%% waited=%ss\n' "$r" "$m" "$t" "$rps" "$cpu" "$us" "$wcpu" "$res" "$errs" "$f" "$waited"
  if [[ $t == node ]] && ! kill -0 "${PID[node]}" 2>/dev/null; then echo "NODE EXITED; see $RUN/node.out:"; tail -20 "$RUN/node.out"; exit 1; fi
}
read -r -a TL <<<"$TARGETS"
n=${#TL[@]}
for m in $MODES; do
  for r in $(seq 1 "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do run_one "$r" "$m" "${TL[$(((i + r) % n))]}"; done
  done
done

# --- after the runs: node metrics, negotiated parameters ----------------------------------------------
if [[ -n ${PID[node]:-} ]]; then
  curl -s "http://$ADMIN/metrics" >"$OUT/metrics-after.raw" || true
  grep -E "^(# (HELP|TYPE) )?sysmanage_tls_handshake" "$OUT/metrics-after.raw" >"$OUT/metrics-after.txt" || echo "(no sysmanage_tls_handshake* lines in /metrics)" >"$OUT/metrics-after.txt"
  # Handshakes the node should have counted: one per request in the Connection: close runs,
  # plus up to CONNS per keep-alive run and warm-up, plus a few probes (curl, s_client).
  # (no hs files when MODES has no hs mode: cat fails, which must not end the script)
  hs=$({ cat "$OUT"/wrk-r*-hs-*-node.txt 2>/dev/null || true; } | awk '/requests in/{s+=$1} END{print s+0}')
  echo "# requests in the node's Connection: close runs (one handshake each): $hs" >>"$OUT/metrics-after.txt"
fi
for t in $TARGETS; do
  echo "== $t: $(openssl s_client -connect "127.0.0.1:${PORT[$t]}" -servername localhost -brief </dev/null 2>&1 | grep -E "Protocol version|Ciphersuite|Server Temp Key|Peer signature type" | tr '\n' ' ')"
done | tee "$OUT/negotiated.txt"
[[ -n ${PID[haproxy]:-} ]] && hap_info >"$OUT/haproxy-info-end.txt" 2>&1 || true
grep -iE "panic|error" "$RUN/node.out" | head -20 >"$OUT/node-log-errors.txt" || true
echo "node log: $(wc -l <"$RUN/node.out") lines, $(grep -c WARN "$RUN/node.out" || true) WARN ($(grep -c "Illegal SNI" "$RUN/node.out" || true) 'Illegal SNI extension'), $(grep -ciE "panic|error" "$RUN/node.out" || true) error/panic" | tee "$OUT/node-log-summary.txt"

NOISE_MAX=$NOISE_MAX python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import csv, os, statistics as st, sys
d = sys.argv[1]; nmax = float(os.environ["NOISE_MAX"])
rows = list(csv.DictReader(open(os.path.join(d, "results.csv"))))
modes = list(dict.fromkeys(r["mode"] for r in rows)); targets = list(dict.fromkeys(r["target"] for r in rows))
noisy = {(r["mode"], r["round"]) for r in rows if float(r["foreign_pct"]) > nmax}
print(f"runs: {len(rows)}; rounds with a run over {nmax:.0f} % foreign CPU (excluded below): {sorted(noisy) or 'none'}")
def med(v): return st.median(v) if v else float("nan")
def res(x):
    v = [float(r["resumed_pct"]) for r in x if r["resumed_pct"] != "NA"]
    return f"{min(v):.1f}–{max(v):.1f}" if v else "–"
for m in modes:
    rs = [r for r in rows if r["mode"] == m and (m, r["round"]) not in noisy]
    print(f"\n### {m}\n")
    print("| target | median req/s | range | median proxy CPU % | median µs/req | median wrk CPU % | resumed % (client) | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for t in targets:
        x = [r for r in rs if r["target"] == t]
        if not x: continue
        v = [float(r["rps"]) for r in x]
        us = [float(r["proxy_us_per_req"]) for r in x if r["proxy_us_per_req"] != "NA"]
        print(f"| {t} | {med(v):,.0f} | {min(v):,.0f}–{max(v):,.0f} | {med([float(r['proxy_cpu_pct']) for r in x]):.0f} | {med(us):.1f} | {med([float(r['wrk_cpu_pct']) for r in x]):.0f} | {res(x)} | {sum(int(r['errors']) for r in x)} |")
    if "node" in targets:
        for base in [t for t in targets if t != "node"]:
            for k, name in (("rps", "req/s"), ("proxy_us_per_req", "µs/req")):
                a = {r["round"]: float(r[k]) for r in rs if r["target"] == "node" and r[k] != "NA"}
                b = {r["round"]: float(r[k]) for r in rs if r["target"] == base and r[k] != "NA"}
                q = [a[i] / b[i] for i in sorted(a, key=int) if i in b and b[i]]
                if q:
                    print(f"- {name} node ÷ {base}: median {med(q):.2f} [{min(q):.2f}–{max(q):.2f}]; per round " + " ".join(f"{y:.2f}" for y in q))
EOF
echo; echo "node /metrics after the runs:"; cat "$OUT/metrics-after.txt" 2>/dev/null || true
echo "results in $OUT"
