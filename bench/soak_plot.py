#!/usr/bin/env python3
"""Plots of a soak run (bench/soak.sh): reads DIR/series.csv and
DIR/faults.csv, writes DIR/soak-traffic.png, DIR/soak-nodes.png and
DIR/soak-tunnels.png, with every fault shaded and labelled.

    python3 bench/soak_plot.py DIR [--to OUTDIR]
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "kill -9 backend": "#d62728",
    "kill -9 node": "#9467bd",
    "partition": "#ff7f0e",
    "gossip loss": "#bcbd22",
    "reload": "#2ca02c",
    "rotate certificate": "#17becf",
    "drain": "#8c564b",
}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows, name):
    return [float(r[name]) if r.get(name) not in (None, "") else float("nan") for r in rows]


def shade(ax, faults, label=False):
    for f in faults:
        start, end = float(f["start_s"]), float(f["end_s"])
        color = COLORS.get(f["kind"], "#7f7f7f")
        ax.axvspan(start / 60, end / 60, color=color, alpha=0.15, lw=0)
        if label:
            ax.text(start / 60, 1.0, f" {f['kind']} {f['target']}", transform=ax.get_xaxis_transform(),
                    rotation=90, va="top", ha="left", fontsize=6, color=color)


def figure(rows, faults, panels, title, path):
    t = [x / 60 for x in column(rows, "t")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 2.6 * len(panels)), sharex=True)
    for i, (ax, (ylabel, series)) in enumerate(zip(axes, panels)):
        for name, label in series:
            ax.plot(t, column(rows, name), lw=1, label=label)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        if len(series) > 1:
            ax.legend(loc="upper right", fontsize=7, ncol=len(series))
        shade(ax, faults, label=(i == 0))
    axes[-1].set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    dst = sys.argv[sys.argv.index("--to") + 1] if "--to" in sys.argv else src
    rows = read(os.path.join(src, "series.csv"))
    faults = read(os.path.join(src, "faults.csv"))
    nodes = sorted({k.split("_")[0] for k in rows[0] if k.endswith("_rss_mib")})
    backends = sorted({k.split("_")[0] for k in rows[0] if k.endswith("_tunnels") and k != "tunnels_open"})
    figure(rows, faults, [
        ("REST req/s", [("rest_per_s", "answered")]),
        ("REST failures / 2 s", [("rest_failed", "failed")]),
        ("REST p99 (ms)", [("p99_ms", "p99")]),
        ("agents", [("connects_per_s", "WebSockets opened/s"), ("heartbeats_per_s", "heartbeats/s")]),
    ], "Soak: traffic (faults shaded)", os.path.join(dst, "soak-traffic.png"))
    figure(rows, faults, [
        ("RSS (MiB)", [(f"{n}_rss_mib", n) for n in nodes]),
        ("open fds", [(f"{n}_fds", n) for n in nodes]),
        ("connections + tunnels", [(f"{n}_conns", n) for n in nodes]),
        ("admin API (ms)", [(f"{n}_admin_ms", n) for n in nodes]),
    ], "Soak: the nodes", os.path.join(dst, "soak-nodes.png"))
    figure(rows, faults, [
        ("tunnels per backend", [(f"{b}_tunnels", b) for b in backends]),
        ("agents' open tunnels", [("tunnels_open", "open")]),
    ], "Soak: where the agents are", os.path.join(dst, "soak-tunnels.png"))
    print(f"soak_plot.py: wrote soak-traffic.png, soak-nodes.png, soak-tunnels.png to {dst}")


if __name__ == "__main__":
    main()
