#!/usr/bin/env bash
# Builds a static x86_64 musl binary of sysmanage-node, for distributions
# whose glibc is older than the glibc build's floor (2.34; see the
# "glibc floor and musl" section of packaging/README.md).
#
#   packaging/build-musl.sh                        # plain musl build
#   packaging/build-musl.sh --features mimalloc    # recommended: mimalloc as the allocator
#   CARGO_TARGET_DIR=/work/target-musl packaging/build-musl.sh
#
# Extra arguments are passed to `cargo build`. Installs musl-tools (apt-get,
# as root) and the Rust musl target (rustup) when they are missing: aws-lc-sys
# compiles its C code with musl-gcc. No cmake is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl

if ! command -v musl-gcc >/dev/null; then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        echo "== installing musl-tools"
        apt-get update
        apt-get install -y musl-tools
    else
        echo "musl-gcc not found: install musl-tools (Debian/Ubuntu) or your distribution's musl-gcc package" >&2
        exit 1
    fi
fi

if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "== adding the Rust target $TARGET"
    rustup target add "$TARGET"
fi

echo "== release build for $TARGET $*"
cargo build --release --locked --target "$TARGET" "$@"

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/$TARGET/release/sysmanage-node
echo "== binary"
ls -l "$BIN"
file "$BIN"
# A dynamic binary here would defeat the purpose: fail loudly.
if ! file "$BIN" | grep -q 'static'; then
    echo "error: $BIN is not statically linked" >&2
    exit 1
fi
"$BIN" --version
