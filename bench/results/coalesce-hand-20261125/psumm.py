import re,sys,statistics as st,collections
d=collections.defaultdict(lambda: collections.defaultdict(dict))
def ms(x): return float(x[:-2])/1000 if x.endswith('us') else float(x[:-2]) if x.endswith('ms') else float(x[:-1])*1000
for l in open(sys.argv[1]):
    m=re.search(r'r=(\d+) (\S+) c=(\d+) rps=([\d.]+) lat50/90/99=(\S+) (\S+) (\S+)\s+core1_busy=(\S+) proxy_cpu=(\d+)',l)
    if m:
        r,t,c,rps,a,b,p99,cb,pc=m.groups(); d[t][int(r)]=(float(rps),ms(a),ms(p99),float(cb),int(pc))
for base in ('nginx','haproxy'):
  print('vs',base)
  for t in d:
    rr=[r for r in d[t] if r in d[base]]
    q=[d[t][r][0]/d[base][r][0] for r in rr]; l=[d[t][r][2]/d[base][r][2] for r in rr]
    print('%-8s rps %.0f rps÷ %.3f [%.2f-%.2f] p50 %.3f p99 %.2f p99÷ %.3f [%.2f-%.2f] (%d/%d ≤1) cpu %d'%(t,st.median(v[0] for v in d[t].values()),st.median(q),min(q),max(q),st.median(v[1] for v in d[t].values()),st.median(v[2] for v in d[t].values()),st.median(l),min(l),max(l),sum(x<=1 for x in l),len(l),st.median(v[4] for v in d[t].values())))
