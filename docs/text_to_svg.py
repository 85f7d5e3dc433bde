#!/usr/bin/env python3
"""Renders a text capture of the terminal dashboard (docs/top-*.txt, made by
bench/capture_top.sh) as an SVG picture of the terminal, for the README and
the book: docs/text_to_svg.py docs/top-overview.txt docs/src/top-overview.svg

The first lines of a capture, up to the first empty line, describe it and
are left out."""
import sys
from xml.sax.saxutils import escape

src, dst = sys.argv[1], sys.argv[2]
lines = open(src, encoding="utf-8").read().split("\n")
lines = lines[lines.index("") + 1:] if "" in lines else lines
while lines and not lines[-1].strip():
    lines.pop()
cols = max(len(l) for l in lines)
cw, lh, pad = 8.4, 17, 12
width, height = int(cols * cw + 2 * pad), int(len(lines) * lh + 2 * pad)
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
    f'viewBox="0 0 {width} {height}" role="img" aria-label="sysmanage-node top">',
    f'<rect width="{width}" height="{height}" rx="6" fill="#1e1e1e"/>',
    '<g font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="14" fill="#d4d4d4">',
]
for i, line in enumerate(lines):
    if line.strip():
        y = pad + (i + 1) * lh - 4
        out.append(f'<text x="{pad}" y="{y}" xml:space="preserve" textLength="{len(line) * cw:.1f}">{escape(line)}</text>')
out += ["</g>", "</svg>", ""]
open(dst, "w", encoding="utf-8").write("\n".join(out))
