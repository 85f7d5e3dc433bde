#!/usr/bin/env python3
"""Medians of `bench/tunnels.sh storm` rounds, per proxy, as a Markdown table.

    bench/storm_summary.py LOG [LOG...] > summary.md

Reads the RESULT lines (one per proxy and round): the time until every agent
of the storm had its 101, the connect->101 percentiles, errors, the proxy's
CPU per agent, and the heartbeat round trips of the established tunnels
before and during the storm.
"""
import re
import statistics
import sys

FIELDS = {
    "all_open_s": r"all_open_s=([\d.]+)",
    "c101_p50": r"connect_to_101_ms p50=([\d.]+)",
    "c101_p99": r"connect_to_101_ms p50=[\d.]+ p90=[\d.]+ p99=([\d.]+)",
    "c101_max": r"connect_to_101_ms .*? max=([\d.]+)",
    "failed": r"STORM n=\d+ (?:resumed=\d+ )?open=\d+ failed=(\d+)",
    "open": r"STORM n=\d+ (?:resumed=\d+ )?open=(\d+)",
    "resumed": r"STORM n=\d+ resumed=(\d+)",
    "n": r"STORM n=(\d+)",
    "cpu_ticks": r"cpu_ticks=(\d+)",
    "before_p99": r"BEATS_BEFORE n=\d+ rtt_ms p50=[\d.]+ p99=([\d.]+)",
    "during_n": r"BEATS_DURING n=(\d+)",
    "during_p50": r"BEATS_DURING n=\d+ rtt_ms p50=([\d.]+)",
    "during_p99": r"BEATS_DURING n=\d+ rtt_ms p50=[\d.]+ p99=([\d.]+)",
    "during_max": r"BEATS_DURING n=\d+ rtt_ms p50=[\d.]+ p99=[\d.]+ max=([\d.]+)",
    "lost": r"BEATS_DURING .*? lost=(\d+)",
}


def rows(paths):
    for path in paths:
        for line in open(path):
            if not line.startswith("RESULT"):
                continue
            proxy = re.search(r"proxy=(\S+)", line).group(1)
            row = {"proxy": proxy}
            for key, pat in FIELDS.items():
                m = re.search(pat, line)
                row[key] = float(m.group(1)) if m else float("nan")
            yield row


def main():
    by = {}
    for r in rows(sys.argv[1:]):
        by.setdefault(r["proxy"], []).append(r)
    med = {p: {k: statistics.median(r[k] for r in rs) for k in FIELDS} for p, rs in by.items()}
    worst = {p: {k: max(r[k] for r in rs) for k in ("during_p99",)} for p, rs in by.items()}
    print("| proxy | rounds | all open (s) | connect→101 p50 / p99 (ms) | agents failed | CPU per agent (ms) "
          "| heartbeat p99 before / during (ms) | during: max (ms), worst round's p99 | heartbeats lost |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = sorted(med, key=lambda p: (not p.startswith("node"), p))
    for p in order:
        m, w = med[p], worst[p]
        failed = int(sum(r["failed"] for r in by[p]))
        lost = int(sum(r["lost"] for r in by[p]))
        cpu = m["cpu_ticks"] * 10 / m["n"]
        print(f"| {p} | {len(by[p])} | {m['all_open_s']:.2f} | {m['c101_p50']:.0f} / {m['c101_p99']:.0f} | {failed} "
              f"| {cpu:.2f} | {m['before_p99']:.1f} / {m['during_p99']:.1f} | {m['during_max']:.1f}, {w['during_p99']:.1f} "
              f"| {lost} |")
    print()
    best = [p for p in ("nginx", "haproxy") if p in med]
    for p in order:
        if not p.startswith("node") or not best:
            continue
        for b in best:
            mb, mp = med[b], med[p]
            print(f"- {p} ÷ {b}: all open {mp['all_open_s'] / mb['all_open_s']:.2f}, "
                  f"connect→101 p99 {mp['c101_p99'] / mb['c101_p99']:.2f}, "
                  f"heartbeat p99 during {mp['during_p99'] / mb['during_p99']:.2f}, "
                  f"CPU per agent {mp['cpu_ticks'] / mb['cpu_ticks']:.2f}")


if __name__ == "__main__":
    main()
