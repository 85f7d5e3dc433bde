#!/usr/bin/env python3
"""Pooled paired ratios over several compare.sh runs: every round of every run gives one
ratio target/base (as paired_ratios.py and bench/harness/summarize.py compute it, same
noise filter NOISE_MAX); the table shows the median of all of them and how many rounds
met the target (req/s ratio >= 1.0, p99 and CPU ratio <= 1.0).
A round counts against the better base too ("best": the faster of the bases in that round, by
req/s; for p99 the base with the lower p99).
usage: pooled_ratios.py RESULTS_DIR [RESULTS_DIR ...]   (target custom, bases nginx haproxy)
       TARGET=custom2 pooled_ratios.py ...             (another target, e.g. HAProxy in TCP mode)"""
import csv, os, statistics as st, sys

NOISE_MAX = float(os.environ.get("NOISE_MAX", "25"))
TARGET, BASES = os.environ.get("TARGET", "custom"), ["nginx", "haproxy"]
dirs = sys.argv[1:]
if not dirs:
    sys.exit(__doc__)
ratios = {}  # (load, metric, base) -> [ratio, ...]
for d in dirs:
    rows = [r for r in csv.DictReader(open(os.path.join(d, "results.csv")))
            if float(r.get("foreign_cpu_pct") or 0) <= NOISE_MAX]
    val = {(r["load"], r["target"], r["round"], k): float(r[k])
           for r in rows for k in ("rps", "p99_ms") if r[k] not in ("", "NA")}
    for (load, t, rnd, k), a in val.items():
        if t != TARGET:
            continue
        present = {base: val[(load, base, rnd, k)] for base in BASES if val.get((load, base, rnd, k))}
        for base, b in present.items():
            ratios.setdefault((load, k, base), []).append(a / b)
        if len(present) == len(BASES):
            best = (max if k == "rps" else min)(present.values())
            ratios.setdefault((load, k, "best"), []).append(a / best)

print(f"target {TARGET}, {len(dirs)} runs: " + ", ".join(os.path.basename(d.rstrip('/')) for d in dirs))
print()
print("| load | metric | pooled median | rounds meeting the target |")
print("|---|---|---|---|")
for (load, k, base), rs in sorted(ratios.items(), key=lambda x: (int(x[0][0]), x[0][1] != "rps", x[0][2])):
    met = sum(1 for x in rs if (x >= 1.0 if k == "rps" else x <= 1.0))
    print(f"| {load} | {k} ÷ {base} | {st.median(rs):.2f} | {met} of {len(rs)} |")
