# Sourced by the bench/fuzz_*.sh scripts: what every fuzzing run needs.
# Sets ROOT (the checkout), FUZZ (its fuzz/ directory) and SANITIZER
# (FUZZ_SANITIZER: address, the default, or none), exports
# RUSTC_BOOTSTRAP=1 (the toolchain is stable; this lets it take the
# nightly-only flags cargo-fuzz passes: -Zsanitizer, sancov), installs
# cargo-fuzz when it is missing, and moves to ROOT.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ=$ROOT/fuzz
SANITIZER=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cd "$ROOT"
