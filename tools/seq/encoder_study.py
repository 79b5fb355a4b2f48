#!/usr/bin/env python3
"""Offline study (numpy, not the product): which encoder should a seq->vec link put over a CTC
source? On demo-seq's reference recording, links from `ocr_rec` into `count`, `first` and
`first_odd` are trained five ways, each a small network fitted with Adam (60 epochs, batch 32) on
frames 0..799 and scored on frames 1000..1599 by top-1 agreement with the target model's output:

- dense_raw / dense_canonical: a dense layer over the flattened T x C frames (what jetlink's links
  are), the frames as emitted or in canonical alignment (k-th symbol at step 2k);
- reduce_first: a dense layer over the per-column maximum over time (today's vector wrapper);
- conv_maxpool_raw / conv_maxpool_canonical: a 1-D convolution over time (kernel 3, 32 filters,
  ReLU), max-pooled over time, then the dense head;
- gru_raw / gru_canonical: a GRU over time (32 units, read step by step), its last state into the
  dense head: a position-aware encoder (trained by backpropagation through time; its own random
  stream, so the five variants above draw exactly what they drew before it was added).

    tools/seq/.cache/venv/bin/python tools/seq/encoder_study.py    # writes docs/bench/seq-encoders.json
"""
import json
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent.parent
import gzip, struct
import numpy as np
b = gzip.decompress(open(ROOT / 'demo-seq' / 'reference.jlr.gz', 'rb').read())
assert b[:8]==b'JLREC002'
n, m = struct.unpack('<II', b[8:16]); at=16; specs=[]
for _ in range(m):
    L,=struct.unpack('<H',b[at:at+2]); at+=2; name=b[at:at+L].decode(); at+=L
    code,size=struct.unpack('<BI',b[at:at+5]); at+=5; steps=None
    if code==6: steps,dec=struct.unpack('<IB',b[at:at+5]); at+=5
    specs.append((name,code,size,steps))
stride=sum(s[2] for s in specs)
body=np.frombuffer(b[at:],dtype=np.dtype([('f','<u4'),('v','<f4',stride)]))
V=body['v']; off={}; o=0
for s in specs: off[s[0]]=(o,o+s[2]); o+=s[2]
def col(nm): a,z=off[nm]; return V[:,a:z]
T,C=38,12
X=col('ocr_rec').reshape(-1,T,C)
def canonical(x):
    out=np.zeros_like(x); 
    for i in range(len(x)):
        ids=x[i].argmax(1); sym=[]; prev=0
        for k in ids:
            if k!=0 and k!=prev: sym.append(k)
            prev=k
        for t in range(T):
            kk=t//2
            out[i,t, sym[kk] if (t%2==0 and kk<len(sym)) else 0]=1
    return out
Xc=canonical(X)
tr=np.arange(0,800); te=np.arange(1000,1600)
rng=np.random.default_rng(0)
def adam(params):
    st=[(np.zeros_like(p),np.zeros_like(p)) for p in params]; return st
def train(fwd_bwd, params, Y, epochs=60, lr=2e-3, bs=32, gen=None):
    st=adam(params); t=0
    for ep in range(epochs):
        perm=(gen or rng).permutation(tr)
        for i in range(0,len(perm),bs):
            idx=perm[i:i+bs]; t+=1
            grads=fwd_bwd(idx, Y[idx], True)
            for p,g,(m_,v_) in zip(params,grads,st):
                m_*=0.9; m_+=0.1*g; v_*=0.999; v_+=0.001*g*g
                p-= lr*(m_/(1-0.9**t))/(np.sqrt(v_/(1-0.999**t))+1e-8)
def softmax(z): z=z-z.max(1,keepdims=True); e=np.exp(z); return e/e.sum(1,keepdims=True)
def dense_model(Xf, H=64, out=4):
    D=Xf.shape[1]; mu=Xf[tr].mean(0); sd=Xf[tr].std(0)+1e-6; Z=(Xf-mu)/sd
    W1=rng.normal(0,np.sqrt(2/D),(D,H)); b1=np.zeros(H); W2=rng.normal(0,np.sqrt(1/H),(H,out)); b2=np.zeros(out)
    P=[W1,b1,W2,b2]
    def fb(idx,Y,grad):
        x=Z[idx]; h=np.maximum(x@P[0]+P[1],0); p=softmax(h@P[2]+P[3])
        if not grad: return p
        dz=(p-Y)/len(idx); dW2=h.T@dz; db2=dz.sum(0); dh=dz@P[2].T*(h>0)
        return [x.T@dh, dh.sum(0), dW2, db2]
    return P, fb
def conv_model(X3, K=3, F=32, H=64, out=4):
    N=len(X3); pad=np.pad(X3,((0,0),(K//2,K//2),(0,0)))
    Pt=np.stack([pad[:,k:k+T,:] for k in range(K)],2).reshape(N,T,K*C)  # patches
    W=rng.normal(0,np.sqrt(2/(K*C)),(K*C,F)); b=np.zeros(F)
    W1=rng.normal(0,np.sqrt(2/F),(F,H)); b1=np.zeros(H); W2=rng.normal(0,np.sqrt(1/H),(H,out)); b2=np.zeros(out)
    P=[W,b,W1,b1,W2,b2]
    def fb(idx,Y,grad):
        pt=Pt[idx]; c=np.maximum(pt@P[0]+P[1],0); am=c.argmax(1); e=c.max(1)
        h=np.maximum(e@P[2]+P[3],0); p=softmax(h@P[4]+P[5])
        if not grad: return p
        dz=(p-Y)/len(idx); dW2=h.T@dz; db2=dz.sum(0); dh=dz@P[4].T*(h>0)
        dW1=e.T@dh; db1=dh.sum(0); de=dh@P[2].T
        dc=np.zeros_like(c); ii=np.arange(len(idx))[:,None]; ff=np.arange(c.shape[2])[None,:]
        dc[ii,am,ff]=de; dc*= (c>0)
        dW=np.einsum('ntk,ntf->kf',pt,dc); db=dc.sum((0,1))
        return [dW,db,dW1,db1,dW2,db2]
    return P, fb
def sig(x): return 1/(1+np.exp(-x))
def gru_model(X3, gen, H=32, H2=64, out=4):
    N=len(X3)
    g=lambda a,b: gen.normal(0,np.sqrt(1/a),(a,b))
    P=[g(C,3*H), g(H,3*H), np.zeros(3*H), gen.normal(0,np.sqrt(2/H),(H,H2)), np.zeros(H2), g(H2,out), np.zeros(out)]
    def fb(idx,Y,grad):
        W,U,b,W1,b1,W2,b2=P
        x=X3[idx]; B=len(idx); h=np.zeros((B,H)); cache=[]
        for t in range(T):  # z (update), r (reset), n (candidate): columns [0,H), [H,2H), [2H,3H)
            xt=x[:,t,:]; gx=xt@W+b
            z=sig(gx[:,:H]+h@U[:,:H]); r=sig(gx[:,H:2*H]+h@U[:,H:2*H])
            n=np.tanh(gx[:,2*H:]+(r*h)@U[:,2*H:])
            cache.append((xt,h,z,r,n)); h=(1-z)*n+z*h
        a=np.maximum(h@W1+b1,0); p=softmax(a@W2+b2)
        if not grad: return p
        dz_=(p-Y)/B; dW2=a.T@dz_; db2=dz_.sum(0); da=dz_@W2.T*(a>0); dW1=h.T@da; db1=da.sum(0); dh=da@W1.T
        dW=np.zeros_like(W); dU=np.zeros_like(U); db=np.zeros_like(b)
        for t in reversed(range(T)):
            xt,hp,z,r,n=cache[t]
            dnp=dh*(1-z)*(1-n*n); dzp=dh*(hp-n)*z*(1-z); drh=dnp@U[:,2*H:].T; drp=drh*hp*r*(1-r)
            gpre=np.concatenate([dzp,drp,dnp],1); dW+=xt.T@gpre; db+=gpre.sum(0)
            dU[:,:H]+=hp.T@dzp; dU[:,H:2*H]+=hp.T@drp; dU[:,2*H:]+=(r*hp).T@dnp
            dh=dh*z+drh*r+dzp@U[:,:H].T+drp@U[:,H:2*H].T
        return [dW,dU,db,dW1,db1,dW2,db2]
    return P, fb
def check_gru_gradients():
    """The GRU's backpropagation against central finite differences on a tiny random problem (its
    own random stream): fails loudly rather than study a wrong gradient."""
    g=np.random.default_rng(7); x=g.random((5,T,C)); y=np.eye(3)[g.integers(0,3,5)]; idx=np.arange(5)
    P,fb=gru_model(x,g,H=4,H2=5,out=3)
    loss=lambda: -(y*np.log(fb(idx,None,False))).sum()/5
    for p,gr in zip(P,fb(idx,y,True)):
        for i in list(np.ndindex(p.shape))[:40]:
            o=p[i]; p[i]=o+1e-6; l1=loss(); p[i]=o-1e-6; l2=loss(); p[i]=o
            assert abs((l1-l2)/2e-6-gr[i])<1e-6, ("GRU gradient", i, (l1-l2)/2e-6, gr[i])
check_gru_gradients()
res={}
for tgt in ['count','first','first_odd']:
    Yp=col(tgt); out=Yp.shape[1]; Y=np.eye(out)[Yp.argmax(1)]
    for name,(P,fb) in {'dense_raw':dense_model(X.reshape(len(X),-1),out=out),
                        'dense_canonical':dense_model(Xc.reshape(len(X),-1),out=out),
                        'reduce_first':dense_model(X.max(1),out=out),
                        'conv_maxpool_raw':conv_model(X,out=out),
                        'conv_maxpool_canonical':conv_model(Xc,out=out)}.items():
        train(fb,P,Y)
        acc=(fb(te,None,False).argmax(1)==Yp[te].argmax(1)).mean()
        res.setdefault(tgt, {})[name] = float(acc); print(tgt, name, round(acc, 3), flush=True)

# The GRU variants last, from their own stream (so the variants above are unchanged by them).
gru_rng=np.random.default_rng(1)
for tgt in ['count','first','first_odd']:
    Yp=col(tgt); out=Yp.shape[1]; Y=np.eye(out)[Yp.argmax(1)]
    for name,x3 in [('gru_raw',X),('gru_canonical',Xc)]:
        P,fb=gru_model(x3,gru_rng,out=out)
        train(fb,P,Y,gen=gru_rng)
        acc=(fb(te,None,False).argmax(1)==Yp[te].argmax(1)).mean()
        res[tgt][name] = float(acc); print(tgt, name, round(acc, 3), flush=True)

(ROOT / "docs" / "bench" / "seq-encoders.json").write_text(json.dumps(
    {"fit_frames": [0, 800], "eval_frames": [1000, 1600], "source": "ocr_rec", "agreement": res}, indent=2) + "\n")
