#!/usr/bin/env python3
"""Compare two builds ("old", "new") of sysmanage-node from compare.sh runs made by bench/ab.sh.

For every load and metric, each round of each run gives one paired ratio custom ÷ nginx and
custom ÷ HAProxy (as bench/harness/summarize.py computes them, same noise filter NOISE_MAX).
The table shows, per build, the median and the interquartile range of these ratios, new ÷ old
of the medians, and a two-sided permutation test of the difference of the medians (10,000
relabellings, fixed seed): p well above 0.05 means the two builds cannot be told apart by this
many rounds on this machine.
usage: ab_summary.py --old DIR [DIR ...] --new DIR [DIR ...] [--idle OLD_IDLE_DIR NEW_IDLE_DIR]"""
import csv, os, random, statistics as st, sys

NOISE_MAX = float(os.environ.get("NOISE_MAX", "25"))
BASES = ["nginx", "haproxy"]
METRICS = [("rps", "req/s"), ("p99_ms", "p99"), ("proxy_us_per_req", "CPU µs/req")]


def parse_args(argv):
    groups, key = {"old": [], "new": [], "idle": []}, None
    for a in argv:
        if a.startswith("--"):
            key = a[2:]
            if key not in groups:
                sys.exit(__doc__)
        elif key is None:
            sys.exit(__doc__)
        else:
            groups[key].append(a)
    if not groups["old"] or not groups["new"]:
        sys.exit(__doc__)
    return groups


def ratios(dirs):
    """(load, metric, base) -> [custom ÷ base of each clean round]."""
    out = {}
    for d in dirs:
        rows = [r for r in csv.DictReader(open(os.path.join(d, "results.csv")))
                if float(r.get("foreign_cpu_pct") or 0) <= NOISE_MAX]
        val = {(r["load"], r["target"], r["round"], k): float(r[k])
               for r in rows for k, _ in METRICS if r[k] not in ("", "NA")}
        for (load, t, rnd, k), a in val.items():
            if t != "custom":
                continue
            for base in BASES:
                b = val.get((load, base, rnd, k))
                if b:
                    out.setdefault((load, k, base), []).append(a / b)
    return out


def quartiles(xs):
    q = st.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], q[2]


def permutation_p(a, b, n=10000, seed=1):
    observed = abs(st.median(b) - st.median(a))
    pooled, k = a + b, len(a)
    rng = random.Random(seed)
    hits = 0
    for _ in range(n):
        rng.shuffle(pooled)
        if abs(st.median(pooled[k:]) - st.median(pooled[:k])) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (n + 1)


def idle_per_conn(d):
    for r in csv.DictReader(open(os.path.join(d, "idle.csv"))):
        if r["target"] == "custom":
            n = max(1, int(r["n_ok"]))
            held, before = float(r["rss_held_kb"]), float(r["rss_before_kb"])
            return (held - before) / n, float(r["rss_start_kb"]) / 1024, int(r["n_ok"])
    return None


def main():
    g = parse_args(sys.argv[1:])
    old, new = ratios(g["old"]), ratios(g["new"])
    print(f"old: {len(g['old'])} runs ({', '.join(os.path.basename(d) for d in g['old'])})")
    print(f"new: {len(g['new'])} runs ({', '.join(os.path.basename(d) for d in g['new'])})")
    print()
    print("| load | metric | old: median [IQR] (rounds) | new: median [IQR] (rounds) | new ÷ old | permutation p |")
    print("|---|---|---|---|---|---|")
    order = [k for k, _ in METRICS]
    keys = sorted(set(old) & set(new), key=lambda x: (int(x[0].split("p")[0]), order.index(x[1]), BASES.index(x[2])))
    for key in keys:
        load, k, base = key
        a, b = old[key], new[key]
        (a1, a3), (b1, b3) = quartiles(a), quartiles(b)
        name = dict(METRICS)[k]
        print(f"| {load} | {name} ÷ {base} | {st.median(a):.3f} [{a1:.2f}–{a3:.2f}] ({len(a)}) | "
              f"{st.median(b):.3f} [{b1:.2f}–{b3:.2f}] ({len(b)}) | {st.median(b) / st.median(a):.3f} | "
              f"{permutation_p(a, b):.2f} |")
    if len(g["idle"]) == 2:
        print()
        print("| build | KiB per idle keep-alive connection | RSS at start MiB | connections held |")
        print("|---|---|---|---|")
        for label, d in zip(("old", "new"), g["idle"]):
            v = idle_per_conn(d)
            if v:
                print(f"| {label} | {v[0]:.2f} | {v[1]:.1f} | {v[2]} |")


if __name__ == "__main__":
    main()
