#!/usr/bin/env bash
# Fuzz the gossip datagram decoder (sysmanage_node::cluster::transport::Opener:
# authentication, frame parsing, replay window, reassembly) for a bounded
# time: bench/fuzz_for.sh with the cluster_datagram target.
#
#   bench/fuzz_cluster.sh              # 60 s of fuzzing (after the build)
#   bench/fuzz_cluster.sh 600 -seed=1  # 10 minutes; extra arguments go to libFuzzer
#
# A crash lands in fuzz/artifacts/cluster_datagram/ and the script exits
# non-zero: fix the decoder and add the input to tests/cluster/datagram_fuzz.rs.
exec bash "$(dirname "$0")/fuzz_for.sh" cluster_datagram "$@"
