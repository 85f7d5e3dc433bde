#!/usr/bin/env bash
# Fuzz the PROXY protocol parser (sysmanage_node::proxy_protocol::parse) for
# a bounded time: bench/fuzz_for.sh with the proxy_protocol target (and
# fuzz/proxy_protocol.dict).
#
#   bench/fuzz_proxy_protocol.sh              # 60 s of fuzzing (after the build)
#   bench/fuzz_proxy_protocol.sh 600 -seed=1  # 10 minutes; extra arguments go to libFuzzer
#
# A crash lands in fuzz/artifacts/proxy_protocol/ and the script exits
# non-zero: fix the parser and add the input as a regression test in
# tests/proxy/proxy_protocol.rs.
exec bash "$(dirname "$0")/fuzz_for.sh" proxy_protocol "$@"
