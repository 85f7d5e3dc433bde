import re,sys,statistics as st,collections
d=collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(sys.argv[1]):
    m=re.search(r'r=(\d+) (\d+) \S+ rps=([\d.]+) wrk_us=([\d.]+) backends_us=([\d.]+)',l)
    if m: r,p,rps,w,b=m.groups(); d[p]['rps'].append(float(rps)); d[p]['w'].append(float(w)); d[p]['b'].append(float(b)); d[p]['r'].append(int(r))
for basep in ('8443','8444'):
  base={r:v for r,v in zip(d[basep]['r'],d[basep]['rps'])}
  print('vs',basep)
  for p in sorted(d):
    rat=[v/base[r] for r,v in zip(d[p]['r'],d[p]['rps'])]
    print(p,'rps med %.0f'%st.median(d[p]['rps']),'ratio med %.3f'%st.median(rat),'[%.2f-%.2f]'%(min(rat),max(rat)),'wrk %.2f'%st.median(d[p]['w']),'be %.2f'%st.median(d[p]['b']))
