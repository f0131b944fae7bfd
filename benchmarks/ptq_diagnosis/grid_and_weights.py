"""efficientnet_lite0 (docs/ptq.md): each float tensor rounded onto the int8 model's own grid (the activation
floor per tensor), and the float model with only its weights rounded per channel (the weight share of the error).

    python -m benchmarks.ptq_diagnosis.grid_and_weights
"""
import numpy as np, warnings, sys
sys.path.insert(0,str(__import__('pathlib').Path(__file__).resolve().parents[2]))
from ai_edge_litert.interpreter import Interpreter
from edgeq.tflite import flatbuffer as fb
W='/root/.cache/edgeq/zoo/work/efficientnet_lite0_'
x=np.load('/root/.cache/edgeq/zoo/data/efficientnet_lite0/eval_edgeq.npz')['input'].transpose(0,2,3,1)[:20]
warnings.simplefilter('ignore')
def run(content, keep=False):
    i=Interpreter(model_content=content,experimental_preserve_all_tensors=keep, num_threads=1); i.allocate_tensors(); return i
fbytes=open(W+'fp32.tflite','rb').read(); qbytes=open(W+'int8.tflite','rb').read()
fi,qi=run(fbytes,True),run(qbytes)
fnames={t['name']:t['index'] for t in fi.get_tensor_details()}
qt=[t for t in qi.get_tensor_details() if t['name'] in fnames and t['dtype']==np.int8 and t['quantization'][0]>0]
acc={t['name']:[0.,0.] for t in qt}; F=[]
for s in range(len(x)):
    fi.set_tensor(fi.get_input_details()[0]['index'],x[s:s+1]); fi.invoke(); F.append(fi.get_tensor(fi.get_output_details()[0]['index'])[0])
    for t in qt:
        r=fi.get_tensor(fnames[t['name']]).astype(float); sc,zp=t['quantization']
        o=(np.clip(np.round(r/sc+zp),-128,127)-zp)*sc
        acc[t['name']][0]+=(r**2).sum(); acc[t['name']][1]+=((r-o)**2).sum()
print('grid floor per tensor (float tensor rounded onto its int8 grid):')
for t in qt:
    a=acc[t['name']]; print(f"{10*np.log10(a[0]/max(a[1],1e-30)):6.1f} dB  range [{(-128-t['quantization'][1])*t['quantization'][0]:.2f},{(127-t['quantization'][1])*t['quantization'][0]:.2f}] {t['name'][:70]}")
# weights only: float model with conv/dw/fc weights fake-quantized per channel
m=fb.load(fbytes); names=fb.op_names(m); sg=m.subgraphs[0]
AX={'CONV_2D':0,'DEPTHWISE_CONV_2D':3,'FULLY_CONNECTED':0}
for op in sg.operators:
    k=names[op.opcodeIndex]
    if k in AX:
        w=fb.const(m,sg,int(op.inputs[1]))
        if w is None: continue
        a=AX[k]; red=tuple(i for i in range(w.ndim) if i!=a)
        s=np.abs(w).max(red,keepdims=True)/127; s[s==0]=1
        op.inputs[1]=fb.new_const(m,sg,int(op.inputs[1]),np.round(w/s)*s,'/fq')
wi=run(fb.dump(m)); G=[]
for s in range(len(x)):
    wi.set_tensor(wi.get_input_details()[0]['index'],x[s:s+1]); wi.invoke(); G.append(wi.get_tensor(wi.get_output_details()[0]['index'])[0])
F,G=np.array(F),np.array(G)
print('weights-only fake quant (per-channel nearest): output SQNR',10*np.log10((F**2).sum()/((F-G)**2).sum()),'agreement',(F.argmax(1)==G.argmax(1)).mean())
