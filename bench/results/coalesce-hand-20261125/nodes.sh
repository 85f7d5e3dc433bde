#!/bin/bash
# nodes.sh "port spin" ... : (re)start extra TLS nodes (plus 8445 with spin 0)
ulimit -n 20000
for f in /tmp/node-844[6-9].pid; do [ -f $f ] && kill $(cat $f) 2>/dev/null; rm -f $f; done
/work/perf/renode.sh 0
D=/tmp/sysmanage-bench/tls-20261125-051935
for x in "$@"; do set -- $x
  sed -e "s/127.0.0.1:8445/127.0.0.1:$1/" -e "s/9199/$((9150+$1-8446))/" $D/node-tls.toml > /tmp/node-$1.toml
  SMN_GATE_N=$5 SMN_GATE_US=$4 SMN_SPIN_MODE=${3:-pace} SMN_SPIN_US=$2 taskset -c 0 /work/main/target/release/sysmanage-node run -c /tmp/node-$1.toml > /tmp/node-$1.out 2>&1 & echo $! > /tmp/node-$1.pid
done
sleep 1; for p in 8446 8447 8448 8449; do [ -f /tmp/node-$p.pid ] && { curl -sk https://localhost:$p/ >/dev/null || echo FAIL $p; }; done
