#!/usr/bin/env bash
# Regenerates docs/top-*.txt (and docs/src/top-overview.svg from the overview): the real `sysmanage-node top` in tmux against a
# node with fake backends on loopback (two pools with a draining, a down and
# a maintained server, sticky agents, rate-limited logins, a `primary` pool),
# captured pane by pane with `tmux capture-pane -p`. About a minute.
# Needs tmux (apt-get install -y tmux).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tmux >/dev/null || { echo "capture_top.sh: tmux is not installed (apt-get install -y tmux)" >&2; exit 1; }
cargo test --test tools -- --ignored --exact tui_e2e::capture_docs
python3 docs/text_to_svg.py docs/top-overview.txt docs/src/top-overview.svg   # the picture in the README and the book
ls -l docs/top-*.txt docs/src/top-overview.svg
