#!/usr/bin/env python3
"""Stats pages left open on a node: each polls the admin API as the page does.

Every page loads /stats and its two files once, then GET /api/v1/status every
--every seconds (2 by default, the page's default) over one keep-alive
connection. Runs until --duration passes or its parent process exits (so that
bench/with_stats_pages.sh can start it beside the node it execs).

    python3 bench/stats_pages.py --pages 10 --admin 127.0.0.1:9100 --duration 60
"""
import argparse
import http.client
import os
import sys
import threading
import time


def page(admin, every, stop, counts, i):
    host, port = admin.rsplit(":", 1)
    conn = None
    first = True
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=5)
            paths = ["/stats", "/stats/stats.js", "/stats/stats.css", "/api/v1/status"] if first else ["/api/v1/status"]
            for p in paths:
                conn.request("GET", p)
                r = conn.getresponse()
                r.read()
                counts[i] += 1
                if r.status != 200:
                    print(f"page {i}: {p} answered {r.status}", file=sys.stderr)
            first = False
        except OSError:
            conn = None  # the node is not up yet, or restarting
        stop.wait(every)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=10)
    ap.add_argument("--admin", default="127.0.0.1:9100")
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=24 * 3600)
    a = ap.parse_args()
    stop = threading.Event()
    counts = [0] * a.pages
    threads = [threading.Thread(target=page, args=(a.admin, a.every, stop, counts, i), daemon=True) for i in range(a.pages)]
    for t in threads:
        t.start()
    parent = os.getppid()
    deadline = time.monotonic() + a.duration
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.5)
    stop.set()
    print(f"stats pages: {a.pages} pages, {sum(counts)} requests", file=sys.stderr)


if __name__ == "__main__":
    main()
