#!/bin/bash
# rounds.sh N mode ports... : interleaved rotated rounds of tq2.sh
n=$1; m=$2; shift 2; ports=("$@"); k=${#ports[@]}
for r in $(seq 0 $((n-1))); do
  for i in $(seq 0 $((k-1))); do p=${ports[$(( (i+r) % k ))]}; echo "r=$r $(bash /work/perf/tq2.sh $p $m 5)"; done
done
