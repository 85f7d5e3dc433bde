import csv,sys,statistics as st,collections
# alt.py results_dir: paired p99/rps ratios, odd rounds (RSS polling on) vs even (off)
rows=list(csv.DictReader(open(sys.argv[1]+'/results.csv')))
d=collections.defaultdict(dict)
for r in rows: d[int(r['round'])][r['target']]=(float(r['rps']),float(r['p99_ms']))
for name,par in (('RSS polling on (odd rounds)',1),('RSS polling off (even rounds)',0)):
    rr=[r for r in sorted(d) if r%2==par]
    print('##',name,len(rr),'rounds')
    for t in ('nginx','haproxy','custom'):
        print('  %-8s p99 median %.2f ms  rps median %.0f'%(t,st.median(d[r][t][1] for r in rr),st.median(d[r][t][0] for r in rr)))
    for a,b in (('custom','haproxy'),('custom','nginx'),('haproxy','nginx')):
        q=[d[r][a][1]/d[r][b][1] for r in rr]; x=[d[r][a][0]/d[r][b][0] for r in rr]
        print('  %s÷%s p99 %.2f [%.2f-%.2f] %d of %d ≤1; rps %.2f'%(a,b,st.median(q),min(q),max(q),sum(v<=1 for v in q),len(q),st.median(x)))
