#!/bin/bash
# pc3.sh target conns dur: like pc2.sh (no warm-up, IDLE s idle before) with, when MON=1,
# the harness's unpinned RSS-polling loop running during wrk
t=$1; c=${2:-50}; d=${3:-5}
case $t in nginx) port=8081;; haproxy) port=8082;; custom) port=8085;; *) port=$t;; esac
if [ -f /tmp/pnode-$t.pid ]; then pid=$(cat /tmp/pnode-$t.pid); else pid=$(cat /tmp/sysmanage-bench/run/pids/$t); fi; pids="$pid $(ps -o pid= --ppid $pid | tr -d ' ')"
sleep ${IDLE:-1}
taskset -c 1 wrk -t1 -c$c -d${d}s --latency http://127.0.0.1:$port/ > /tmp/pc-wrk.txt & w=$!
if [ "$MON" = 1 ]; then while kill -0 $w 2>/dev/null; do s=0; for p in $pid $(ps -o pid= --ppid $pid 2>/dev/null | tr -d ' '); do r=$(awk '/^VmRSS:/{print $2}' /proc/$p/status 2>/dev/null || echo 0); s=$((s+${r:-0})); done; sleep 0.5; done; fi
wait $w
rps=$(awk '/Requests\/sec/{print $2}' /tmp/pc-wrk.txt)
l=$(awk '$1=="50%"||$1=="90%"||$1=="99%"{printf "%s ", $2}' /tmp/pc-wrk.txt)
echo "$t c=$c rps=$rps lat50/90/99=$l core1_busy=0 proxy_cpu=0"
