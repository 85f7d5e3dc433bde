#!/bin/bash
# prounds.sh N conns targets... : interleaved rotated rounds of pc.sh
n=$1; c=$2; shift 2; ts=("$@"); k=${#ts[@]}
for r in $(seq 0 $((n-1))); do
  for i in $(seq 0 $((k-1))); do t=${ts[$(( (i+r) % k ))]}; echo "r=$r $(bash /work/perf/pc.sh $t $c 5)"; done
done
