"""Diagnosis of the zoo's efficientnet_lite0 int8 model (docs/ptq.md): the output quantization floor vs internal
error, and the error of every int8 tensor against the float model's tensor of the same name.

Run after `make zoo` has written <cache>/work/efficientnet_lite0_{fp32,int8}.tflite:
    python -m benchmarks.ptq_diagnosis.floor_and_layers
"""
import numpy as np, warnings
from ai_edge_litert.interpreter import Interpreter
W='/root/.cache/edgeq/zoo/work/efficientnet_lite0_'
x=np.load('/root/.cache/edgeq/zoo/data/efficientnet_lite0/eval_edgeq.npz')['input'].transpose(0,2,3,1)
def interp(f):
    warnings.simplefilter('ignore')
    i=Interpreter(W+f+'.tflite',experimental_preserve_all_tensors=True); i.allocate_tensors(); return i
fi,qi=interp('fp32'),interp('int8')
qin,qout=qi.get_input_details()[0],qi.get_output_details()[0]
s_in,z_in=qin['quantization']; s_o,z_o=qout['quantization']
fnames={t['name']:t for t in fi.get_tensor_details()}
qt=[t for t in qi.get_tensor_details() if t['name'] in fnames and t['dtype']==np.int8 and t['quantization'][0]>0]
def sqnr(r,o): return 10*np.log10((r**2).sum()/max(((r-o)**2).sum(),1e-30))
F,Q=[],[]; acc={t['name']:[0.,0.] for t in qt}
for s in range(len(x)):
    fi.set_tensor(fi.get_input_details()[0]['index'],x[s:s+1]); fi.invoke()
    qi.set_tensor(qin['index'],np.clip(np.round(x[s:s+1]/s_in+z_in),-128,127).astype(np.int8)); qi.invoke()
    F.append(fi.get_tensor(fi.get_output_details()[0]['index'])[0]); Q.append((qi.get_tensor(qout['index'])[0].astype(float)-z_o)*s_o)
    for t in qt:
        r=fi.get_tensor(fnames[t['name']]['index']).astype(float); sc,zp=t['quantization']
        o=(qi.get_tensor(t['index']).astype(float)-zp)*sc
        if r.shape!=o.shape: continue
        acc[t['name']][0]+=(r**2).sum(); acc[t['name']][1]+=((r-o)**2).sum()
F,Q=np.array(F),np.array(Q)
Fq=(np.clip(np.round(F/s_o+z_o),-128,127)-z_o)*s_o
agree=lambda a,b:(a.argmax(1)==b.argmax(1)).mean()
print('int8 agreement',agree(F,Q),'sqnr',sqnr(F,Q))
print('float logits quantized to output grid: agreement (argmax of first max)',agree(F,Fq),'sqnr',sqnr(F,Fq))
ties=[(Fq[i]==Fq[i].max()).sum()>1 for i in range(len(F))]; print('samples with tied max after output quantization',sum(ties))
top2=np.sort(F,1)[:,-2:]; print('float top1-top2 margin in output steps: median',np.median((top2[:,1]-top2[:,0])/s_o),'min',((top2[:,1]-top2[:,0])/s_o).min())
wrong=F.argmax(1)!=Q.argmax(1); print('margins (steps) of flipped samples',np.round(((top2[:,1]-top2[:,0])/s_o)[wrong],2))
print('output range float min/max',F.min(),F.max(),'grid range',(-128-z_o)*s_o,(127-z_o)*s_o)
print('\nper-tensor SQNR (float vs int8 dequantized, same tensor name), graph order:')
ops=qi._get_ops_details(); kind={o['outputs'][0]:o['op_name'] for o in ops if len(o['outputs'])}
for t in qt:
    a=acc[t['name']]
    if a[0]>0: print(f"{10*np.log10(a[0]/max(a[1],1e-30)):6.1f} dB  {kind.get(t['index'],'-'):20s} scale {t['quantization'][0]:.4g} {t['name'][:90]}")
