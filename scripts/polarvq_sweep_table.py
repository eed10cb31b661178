# Renders docs/polarvq-sweep.txt as the markdown table of docs/polarvq-results.md ("Preset sweep").
# Candidate names are changes of the presets as defined BEFORE the sweep (the `base` dict below),
# as they were passed to `tq calibrate --preset`; bpv at d = 128 is computed from the parameters
# (the rows hold the measured bpv at d = 64). Usage: python3 scripts/polarvq_sweep_table.py FILE
import json,sys,re
base={'quality':dict(mag_bits=4,angle_bits=2,value_bits=4),
      'gqa':dict(mag_bits=4,angle_bits=3,value_bits=5),
      'balanced':dict(mag_bits=2,angle_bits=3,value_bits=2,vq_size=256,vq_dim=16,subspaces=4,vq_keys=0),
      'max':dict(mag_bits=2,angle_bits=1,value_bits=2,value_group=128,vq_size=256,vq_dim=64,key_vq_dim=32,subspaces=4)}
def params(spec):
    items=spec.split('+'); p=dict(mag_bits=4,angle_bits=2,group_size=64,key_block_tokens=1,value_bits=4,value_group=64,vq_size=0,vq_dim=8,subspaces=4,key_vq_dim=0,vq_keys=1,vq_values=1)
    p.update(base[items[0]])
    for it in items[1:]:
        k,v=it.split('='); p[k]=int(v)
    return p
def bpv(p,d,key):
    import math
    vqb=int(math.log2(p['vq_size'])) if p['vq_size'] else 0
    if key:
        half=d//2; T=p['key_block_tokens']
        groups=(half+p['group_size']-1)//p['group_size'] if T==1 else half
        vq= p['vq_size'] and p['vq_keys']
        g=p['key_vq_dim'] or p['vq_dim']
        bits=half*(p['mag_bits']+p['angle_bits'])+((d//g)*vqb if vq else 0)
        return (groups*32+bits*T)/(T*d)  # packed bytes rounding ignored
    groups=(d+p['value_group']-1)//p['value_group']
    vq=p['vq_size'] and p['vq_values']
    bits=d*p['value_bits']+((d//p['vq_dim'])*vqb if vq else 0)
    return (groups*32+bits)/d
def short(spec):
    items=spec.split('+'); name=items[0]
    ab={'mag_bits':'r','angle_bits':'θ','value_bits':'v','key_block_tokens':'kbt','value_group':'vg','vq_keys':'keyPQ','vq_dim':'PQdim','vq_size':'PQsize'}
    return name+(' '+', '.join(ab.get(k,k)+'='+v for k,v in (i.split('=') for i in items[1:])) if len(items)>1 else ' (as defined before)')
rows={}
for line in open(sys.argv[1]):
    m=re.match(r'(\S+) (\S+) (\S+) (\[.*\])',line.strip())
    if not m: continue
    rows[m.group(3)]=json.loads(m.group(4))
order=['quality','gqa','balanced','max']
out=[]
for fam in order:
    for spec,v in sorted(rows.items(), key=lambda kv: kv[1][3]):
        if spec.split('+')[0]!=fam: continue
        p=params(spec); k=bpv(p,128,1); vv=bpv(p,128,0); x=16/((k+vv)/2)
        out.append(f"| {short(spec)} | {k:.3f} / {vv:.3f} | {x:.2f}x | {v[0]:.3f} / {v[1]:.3f} | {v[2]:.2f} | {v[3]:.4f} | {v[4]:.3f} | {100*v[5]:.1f} |")
print('| candidate | bpv K / V at d=128 | vs f16 at d=128 | bpv K / V at d=64 | PPL | KLD mean | KLD p99 | top-1 % |')
print('|---|---:|---:|---:|---:|---:|---:|---:|')
print('\n'.join(out))
