#!/usr/bin/env bash
# Regenerates docs/top-*.txt: the real `sysmanage-node top` in tmux against a
# node with fake backends on loopback (two pools with a draining, a down and
# a maintained server, sticky agents, rate-limited logins, a `primary` pool),
# captured pane by pane with `tmux capture-pane -p`. About a minute.
# Needs tmux (apt-get install -y tmux).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tmux >/dev/null || { echo "capture_top.sh: tmux is not installed (apt-get install -y tmux)" >&2; exit 1; }
cargo test --test tools -- --ignored --exact tui_e2e::capture_docs
ls -l docs/top-*.txt
