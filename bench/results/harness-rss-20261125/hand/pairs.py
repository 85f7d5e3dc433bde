import re,sys,statistics as st,collections
# pairs.py log a b : per-round ratio a/b of rps and p99
d=collections.defaultdict(dict)
def ms(x): return float(x[:-2])/1000 if x.endswith('us') else float(x[:-2]) if x.endswith('ms') else float(x[:-1])*1000
for l in open(sys.argv[1]):
    m=re.search(r'r=(\d+) (\S+) c=\d+ rps=([\d.]+) lat50/90/99=(\S+) (\S+) (\S+)',l)
    if m: d[m.group(2)][int(m.group(1))]=(float(m.group(3)),ms(m.group(4)),ms(m.group(6)))
a,b=sys.argv[2],sys.argv[3]; rr=sorted(set(d[a])&set(d[b]))
q=[d[a][r][0]/d[b][r][0] for r in rr]; l=[d[a][r][2]/d[b][r][2] for r in rr]
print('%s÷%s n=%d rps %.3f p99 %.3f [%.2f-%.2f] %d≤1 | medians p99 %.2f vs %.2f'%(a,b,len(rr),st.median(q),st.median(l),min(l),max(l),sum(x<=1 for x in l),st.median(d[a][r][2] for r in rr),st.median(d[b][r][2] for r in rr)))
