#!/usr/bin/env bash
# Builds the release binary and the .deb and .rpm packages of sysmanage-node.
#
#   packaging/build.sh            -> target/debian/*.deb, target/generate-rpm/*.rpm
#
# Installs cargo-deb and cargo-generate-rpm (cargo install --locked) when
# they are missing. The binary is the release profile's (LTO, stripped).
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "== installing $2"
        cargo install --locked "$2"
    fi
}
need deb cargo-deb
need generate-rpm cargo-generate-rpm

echo "== release build"
cargo build --release --locked

echo "== man pages"
mkdir -p target/man
for page in man/sysmanage-node.1 man/sysmanage-node.toml.5; do
    # -n: no name or time stamp in the archive, so builds are reproducible.
    gzip -9nc "$page" > "target/man/$(basename "$page").gz"
done

echo "== .deb"
cargo deb --no-build --no-strip
echo "== .rpm"
cargo generate-rpm

ls -l target/debian/*.deb target/generate-rpm/*.rpm
