#!/bin/bash
# tlsenv.sh start|stop : backends + nginx-tls + haproxy-tls + node-tls from a saved tls run
D=/tmp/sysmanage-bench/tls-20261125-051935
BIN=${BIN:-/work/main/target/release/sysmanage-node}
ulimit -n 20000
case $1 in
start)
  for p in 9001 9002; do taskset -c 1 nginx -e /tmp/be$p.err -c $D/run/backend-$p.conf >/dev/null 2>&1 & echo $! > /tmp/be$p.pid; done
  taskset -c 0 nginx -e /tmp/ngx-tls.err -c $D/nginx-tls.conf >/dev/null 2>&1 & echo $! > /tmp/nginx-tls.pid
  taskset -c 0 haproxy -db -f $D/haproxy-tls.cfg >/dev/null 2>&1 & echo $! > /tmp/hap-tls.pid
  taskset -c 0 $BIN run -c $D/node-tls.toml >/tmp/node-tls.out 2>&1 & echo $! > /tmp/node-tls.pid
  sleep 1; for p in 8443 8444 8445; do curl -sk https://localhost:$p/ ; done ;;
stop)
  for f in /tmp/be9001.pid /tmp/be9002.pid /tmp/nginx-tls.pid /tmp/hap-tls.pid /tmp/node-tls.pid; do [ -f $f ] && kill $(cat $f) 2>/dev/null; rm -f $f; done ;;
esac
