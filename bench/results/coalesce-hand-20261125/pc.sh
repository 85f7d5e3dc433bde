#!/bin/bash
# pc.sh target conns dur: rps, p50/p90/p99, load-core busy %, proxy cpu %
t=$1; c=${2:-50}; d=${3:-5}
case $t in nginx) port=8081;; haproxy) port=8082;; custom) port=8085;; *) port=$t;; esac
if [ -f /tmp/pnode-$t.pid ]; then pid=$(cat /tmp/pnode-$t.pid); else pid=$(cat /tmp/sysmanage-bench/run/pids/$t); fi; pids="$pid $(ps -o pid= --ppid $pid | tr -d ' ')"
pt() { s=0; for p in $pids; do v=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0); s=$((s+v)); done; echo $s; }
c1() { awk '/^cpu1 /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
taskset -c 1 wrk -t1 -c$c -d1s http://127.0.0.1:$port/ >/dev/null
read cb0 ci0 < <(c1); p0=$(pt)
taskset -c 1 wrk -t1 -c$c -d${d}s --latency http://127.0.0.1:$port/ > /tmp/pc-wrk.txt
read cb1 ci1 < <(c1); p1=$(pt)
rps=$(awk '/Requests\/sec/{print $2}' /tmp/pc-wrk.txt)
l=$(awk '$1=="50%"||$1=="90%"||$1=="99%"{printf "%s ", $2}' /tmp/pc-wrk.txt)
echo "$t c=$c rps=$rps lat50/90/99=$l core1_busy=$(echo $((cb1-cb0)) $((ci1-ci0)) | awk '{printf "%.1f", 100*$1/($1+$2)}') proxy_cpu=$(( (p1-p0)/d ))"
