#!/bin/bash
# tq2.sh port mode dur: also core1 busy% and backend us/req
p=$1; m=${2:-ka}; d=${3:-5}; c=${4:-50}
case $p in 8443) pid=$(pgrep -f "nginx-tls.conf" | head -1); pid=$(pgrep -P $pid | head -1);; 8444) pid=$(cat /tmp/hap-tls.pid);; 8445) pid=$(cat /tmp/node-tls.pid);; 844[6-9]) pid=$(cat /tmp/node-$p.pid);; esac
bpids=$(pgrep -f "nginx: worker" | while read x; do pp=$(ps -o ppid= $x | tr -d ' '); ps -o args= $pp | grep -q backend && echo $x; done)
H=(); [ $m = hs ] && H=(-H "Connection: close")
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
bt() { s=0; for b in $bpids; do s=$((s+$(ticks $b))); done; echo $s; }
c1() { awk '/^cpu1 /{print $2+$3+$4+$7+$8, $5}' /proc/stat; }
taskset -c 1 wrk -t1 -c$c -d1s "${H[@]}" https://localhost:$p/ >/dev/null
t0=$(ticks $pid); b0=$(bt); read cb0 ci0 < <(c1)
out=$( { /usr/bin/time -f "%U %S" taskset -c 1 wrk -t1 -c$c -d${d}s "${H[@]}" https://localhost:$p/; } 2>&1 )
t1=$(ticks $pid); b1=$(bt); read cb1 ci1 < <(c1)
reqs=$(echo "$out" | awk '/requests in/{print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
wc=$(echo "$out" | tail -1)
echo "$p $m rps=$rps wrk_us=$(echo $wc $reqs | awk '{printf "%.1f", ($1+$2)*1e6/$3}') backends_us=$(echo $((b1-b0)) $reqs | awk '{printf "%.1f", $1*1e4/$2}') core1_busy%=$(echo $((cb1-cb0)) $((ci1-ci0)) | awk '{printf "%.0f", 100*$1/($1+$2)}') proxy_us=$(echo $((t1-t0)) $reqs | awk '{printf "%.1f", $1*1e4/$2}') proxy_cpu%=$(( (t1-t0)/d ))"
