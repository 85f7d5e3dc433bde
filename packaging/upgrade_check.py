#!/usr/bin/env python3
"""The package upgrade cycle with open connections, run by packaging/check.sh
as root after version N is installed and a node runs from it:

  - a backend on 127.0.0.1:BACKEND_PORT (the config's server) answers
    health checks and WebSocket upgrades (then echoes bytes);
  - an agent opens a WebSocket tunnel through the node on 127.0.0.1:NODE_PORT
    and a client keeps an HTTP/1.1 keep-alive connection open;
  - `dpkg -i --force-confold NEW_DEB` installs version N+1, whose postinst upgrades the
    running node in place (`sysmanage-node upgrade`);
  - checks: the package is N+1, the PID file names a new process, the
    tunnel still echoes (the old process keeps it), the keep-alive
    connection gets its answer (with Connection: close) and a new
    connection is answered.

Prints the old and new PIDs as `pids OLD NEW` on success; exits 1 naming
what failed.
"""
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PID_FILE = "/var/lib/sysmanage-node/running.pid"


def fail(msg):
    print(f"upgrade check FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def handle(conn):
    try:
        head = read_head(conn)
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get(b"upgrade", b"").lower() == b"websocket":
            accept = base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + GUID).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    except OSError:
        pass
    finally:
        conn.close()


def backend(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def token(hostname):
    now = int(time.time())
    payload = {"payload": {"connection_id": os.urandom(16).hex(), "hostname": hostname, "client_ip": "127.0.0.1",
                           "timestamp": now, "expires": now + 3600}, "signature": os.urandom(32).hex()}
    return base64.b64encode(json.dumps(payload).encode()).decode()


def open_tunnel():
    s = socket.create_connection(("127.0.0.1", NODE_PORT), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /api/agent/connect?token={token('pkg-agent')} HTTP/1.1\r\nHost: lb\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = read_head(s)
    if not head.startswith(b"HTTP/1.1 101"):
        fail(f"the tunnel was answered {head[:80]!r}")
    return s


def echo(s, what):
    s.sendall(what)
    got = b""
    while len(got) < len(what):
        chunk = s.recv(4096)
        if not chunk:
            fail(f"the tunnel closed (sent {what!r}, got {got!r})")
        got += chunk
    if got != what:
        fail(f"the tunnel echoed {got!r} for {what!r}")


def get(s, path="/health"):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n".encode())
    head = read_head(s)
    return head


NODE_PORT = 80


def main():
    global NODE_PORT
    if len(sys.argv) != 4:
        fail("usage: upgrade_check.py NEW_DEB NODE_PORT BACKEND_PORT")
    new_deb, NODE_PORT, backend_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    threading.Thread(target=backend, args=(backend_port,), daemon=True).start()
    old_pid = int(open(PID_FILE).read())
    deadline = time.time() + 30
    while True:
        try:
            tunnel = open_tunnel()
            break
        except (OSError, SystemExit):
            if time.time() > deadline:
                fail("no tunnel through the node within 30 s (is the backend seen as up?)")
            time.sleep(1)
    echo(tunnel, b"before the upgrade")
    keepalive = socket.create_connection(("127.0.0.1", NODE_PORT), timeout=10)
    if not get(keepalive).startswith(b"HTTP/1.1 200"):
        fail("no answer on the keep-alive connection")

    out = subprocess.run(["dpkg", "-i", "--force-confold", new_deb], capture_output=True, text=True)
    print(out.stdout + out.stderr, file=sys.stderr)
    if out.returncode != 0:
        fail(f"dpkg -i {new_deb} exited {out.returncode}")
    if "upgraded: process" not in out.stdout + out.stderr:
        fail("the postinst did not upgrade the node in place")
    new_pid = int(open(PID_FILE).read())
    if new_pid == old_pid:
        fail(f"the PID file still names {old_pid}")
    if not os.path.exists(f"/proc/{old_pid}"):
        fail(f"the old process {old_pid} is gone: it should keep its tunnel")

    echo(tunnel, b"after the upgrade")
    head = get(keepalive)
    if not head.startswith(b"HTTP/1.1 200"):
        fail(f"the keep-alive connection was answered {head[:80]!r}")
    fresh = socket.create_connection(("127.0.0.1", NODE_PORT), timeout=10)
    if not get(fresh).startswith(b"HTTP/1.1 200"):
        fail("a new connection after the upgrade was not answered")
    print(f"pids {old_pid} {new_pid}")


if __name__ == "__main__":
    main()
