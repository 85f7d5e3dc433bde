#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's
# callgrind: a deterministic A/B measure for hot-path changes on a machine
# too noisy for small CPU-time differences (wall-clock results still come
# from bench/run.sh). Kernel work (the larger part, see bench/history.md) is
# not counted.
#
#   bench/harness/compare.sh start          # the two nginx backends on :9001 and :9002
#   bench/instructions.sh target/profiling/sysmanage-node [requests]
#   TLS=1 bench/instructions.sh target/profiling/sysmanage-node   # HTTPS keep-alive
#   bench/harness/compare.sh stop
#
# The node runs under callgrind on 127.0.0.1:8095 (admin :9195) with
# bench/node.toml otherwise; after a warm-up the counters are zeroed, then
# exactly N requests (default 20,000) are sent on 10 keep-alive connections
# by a small Python client, and the counters are dumped. Build with
# `cargo build --profile profiling` to get symbols for callgrind_annotate.
set -euo pipefail

BIN=${1:?usage: bench/instructions.sh BINARY [requests]}
N=${2:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in valgrind callgrind_control python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y valgrind curl python3)" >&2; exit 1; }
done
curl -s -o /dev/null http://127.0.0.1:9001/ || { echo "no backend on :9001 (run bench/harness/compare.sh start)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sysmanage-instr.XXXXXX")
# Busy polling off: under callgrind its turns would count as instructions of the requests.
sed -e 's/127.0.0.1:8085/127.0.0.1:8095/' -e 's/^busy_poll = .*/busy_poll = "0s"/' -e "/^busy_poll_coalesce = /d" "$ROOT/bench/node.toml" >"$WORK/node.toml"
SCHEME=http
if [[ ${TLS:-0} == 1 ]]; then
  # HTTPS keep-alive: a self-signed certificate written by the binary itself.
  "$BIN" cert self-signed --host localhost --out "$WORK/cert" >/dev/null
  sed -i "s#^bind = \"127.0.0.1:8095\"#bind = \"127.0.0.1:8095\"\ntls = { cert = \"$WORK/cert/server.crt\", key = \"$WORK/cert/server.key\" }#" "$WORK/node.toml"
  SCHEME=https
fi
printf '\n[admin]\nlisten = "127.0.0.1:9195"\n' >>"$WORK/node.toml"

valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" "$BIN" run -c "$WORK/node.toml" >"$WORK/valgrind.log" 2>&1 &
VPID=$!
trap 'kill "$VPID" 2>/dev/null || true; wait "$VPID" 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do curl -sk -o /dev/null "$SCHEME://127.0.0.1:8095/" && break; sleep 0.2; done

# 10 keep-alive connections (TLS: handshakes done before the counters are
# zeroed); 2,000 requests of warm-up (pooled server connections, allocator),
# counters zeroed, exactly N requests, every response read whole, counters dumped.
python3 - "$N" "$VPID" "$SCHEME" <<'PY'
import socket, ssl, subprocess, sys
n, vpid, scheme = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def connect():
    s = socket.create_connection(("127.0.0.1", 8095))
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s
conns = [connect() for _ in range(10)]
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
def run(k):
    done = 0
    while done < k:
        for c in conns:
            c.sendall(req)
        for c in conns:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(65536)
            head, _, body = buf.partition(b"\r\n\r\n")
            length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
            while len(body) < length:
                body += c.recv(65536)
        done += len(conns)
run(2000)
subprocess.run(["callgrind_control", "-z", vpid], check=True, capture_output=True)
run(n)
subprocess.run(["callgrind_control", "-d", vpid], check=True, capture_output=True)
PY
sleep 0.5
DUMP=$(ls "$WORK"/cg.*.1 | head -1)
TOTAL=$(awk '/^(summary|totals):/{print $2; exit}' "$DUMP")
echo "$(basename "$BIN"): $TOTAL instructions for $N requests = $((TOTAL / N)) per request"
echo "profile: $DUMP (callgrind_annotate $DUMP)"
