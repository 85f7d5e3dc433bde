#!/usr/bin/env python3
"""Paired per-round ratios target/base from a compare.sh results.csv, computed the
same way as bench/harness/summarize.py (median over rounds of the per-round ratio,
same noise filter NOISE_MAX), but for any base (summarize.py only prints ÷ nginx).
usage: paired_ratios.py RESULTS_DIR [TARGET [BASE ...]]   (default: custom nginx haproxy)"""
import csv, os, statistics as st, sys

d = sys.argv[1]
target = sys.argv[2] if len(sys.argv) > 2 else "custom"
bases = sys.argv[3:] or ["nginx", "haproxy"]
NOISE_MAX = float(os.environ.get("NOISE_MAX", "25"))
rows = [r for r in csv.DictReader(open(os.path.join(d, "results.csv")))
        if float(r.get("foreign_cpu_pct") or 0) <= NOISE_MAX]
loads = list(dict.fromkeys(r["load"] for r in rows))

def per_round(load, t, k):
    return {r["round"]: float(r[k]) for r in rows
            if r["load"] == load and r["target"] == t and r[k] not in ("", "NA")}

print(f"| load | metric | {target} ÷ base | per-round ratios |")
print("|---|---|---|---|")
for load in loads:
    for base in bases:
        for k in ("rps", "p99_ms", "proxy_us_per_req"):
            a, b = per_round(load, target, k), per_round(load, base, k)
            rs = [a[x] / b[x] for x in sorted(a) if x in b and b[x]]
            if rs:
                print(f"| {load} | {k} ÷ {base} | {st.median(rs):.2f} [{min(rs):.2f}–{max(rs):.2f}] | "
                      + " ".join(f"{x:.2f}" for x in rs) + " |")
