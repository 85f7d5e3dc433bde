#!/usr/bin/env python3
"""Idle tunnels' memory from `bench/tunnels.sh curve`: per proxy, the median
RSS growth at each count over the rounds, a least-squares line through
(count, growth) whose slope is the cost of one idle tunnel (both sockets
included, kernel buffers excluded: RSS counts the process's memory only),
a Markdown table on stdout, and a PNG of memory against tunnel count.

    bench/tunnels_plot.py CURVE.csv OUT.png > summary.md
"""
import csv
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {
    "node": "sysmanage-node (sticky)",
    "node-plain": "sysmanage-node (no affinity)",
    "node-before": "sysmanage-node before this change (sticky)",
    "nginx": "nginx",
    "haproxy": "HAProxy",
}


def fit(points):
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    growth = defaultdict(lambda: defaultdict(list))
    incomplete = []
    for r in rows:
        n = int(r["count"])
        if int(r["open"]) != n:
            incomplete.append(f"{r['proxy']} {n} round {r['round']}: {r['open']} open")
        growth[r["proxy"]][n].append(int(r["rss_after_kib"]) - int(r["rss_before_kib"]))
    print("| proxy | " + " | ".join(f"{n} tunnels" for n in sorted(next(iter(growth.values())))) + " | KiB per tunnel (fit) | fixed (fit) |")
    print("|---|" + "---|" * (len(next(iter(growth.values()))) + 2))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for proxy in NAMES:
        if proxy not in growth:
            continue
        med = {n: statistics.median(v) for n, v in sorted(growth[proxy].items())}
        slope, icpt = fit(list(med.items()))
        cells = " | ".join(f"{v / 1024:.1f} MiB" for v in med.values())
        print(f"| {NAMES[proxy]} | {cells} | **{slope:.2f}** | {icpt / 1024:.1f} MiB |")
        xs = list(med)
        ax.plot(xs, [v / 1024 for v in med.values()], "o", label=f"{NAMES[proxy]}: {slope:.2f} KiB/tunnel")
        ax.plot(xs, [(icpt + slope * x) / 1024 for x in xs], "-", color=ax.lines[-1].get_color(), alpha=0.6)
    print()
    print("Medians of the rounds; RSS growth from the idle proxy to all tunnels open; the slope of the least-squares line is the cost of one more idle tunnel.")
    if incomplete:
        print("\nRuns where not every tunnel opened: " + "; ".join(incomplete))
    ax.set_xlabel("idle WebSocket tunnels")
    ax.set_ylabel("RSS growth (MiB)")
    ax.set_title("Memory of idle WebSocket tunnels (one worker each)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
