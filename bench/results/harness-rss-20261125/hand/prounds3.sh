#!/bin/bash
# prounds3.sh N conns targets... : interleaved rotated rounds of pc3.sh; target "X:mon" runs X with MON=1
n=$1; c=$2; shift 2; ts=("$@"); k=${#ts[@]}
for r in $(seq 0 $((n-1))); do
  for i in $(seq 0 $((k-1))); do t=${ts[$(( (i+r) % k ))]}; b=${t%:mon}; m=0; [ "$b" != "$t" ] && m=1
    echo "r=$r $(MON=$m bash /work/perf/pc3.sh $b $c ${DUR:-5} | sed "s/^$b /$t /")"; done
done
