"""PyTorch eager baseline for the demo bundle's links: the same work as one fused-kernel tick
(every link from an active source into every target not run, the ensembles, the activations),
written as a user would in eager PyTorch, batch 1, float32. Also replays it as a CUDA graph.

Usage: torch_links.py DIR   (DIR holds what examples/gpu_bench.rs exported; writes torch_bench.json)
Checks its outputs against the Rust CPU predictor's (reference.bin) before timing.
"""

import json
import os
import statistics
import sys

import numpy as np
import torch

d = sys.argv[1]
meta = json.load(open(os.path.join(d, "weights.json")))
lp = np.fromfile(os.path.join(d, "links.bin"), dtype="<f4")
ep = np.fromfile(os.path.join(d, "ensembles.bin"), dtype="<f4")
row_np = np.fromfile(os.path.join(d, "row.bin"), dtype="<f4")
ref = np.fromfile(os.path.join(d, "reference.bin"), dtype="<f4").reshape(len(meta["masks"]), -1)
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False
n, sizes, kinds = meta["n"], meta["sizes"], meta["kinds"]
k = n - 1
row_off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
T = lambda a: torch.tensor(np.ascontiguousarray(a), device=dev)


def slot_source(j, s):
    return s if s < j else s + 1


links = {}
for j in range(n):
    for s in range(k):
        idx = j * k + s
        ni, nh, no = meta["link_dims"][idx]
        o = meta["link_offsets"][idx]
        p = lp[o:]
        mean, inv = p[:ni], p[ni:2 * ni]
        w1 = p[2 * ni:2 * ni + nh * ni].reshape(nh, ni)
        b1 = p[2 * ni + nh * ni:2 * ni + nh * ni + nh]
        q = 2 * ni + nh * ni + nh
        w2 = p[q:q + no * nh].reshape(no, nh)
        b2 = p[q + no * nh:q + no * nh + no]
        links[(j, s)] = tuple(T(a) for a in (mean, inv, w1, b1, w2, b2))
ens = {}
for j in range(n):
    no = sizes[j]
    p = ep[meta["ensemble_offsets"][j]:]
    w = p[:k * no * no].reshape(k, no, no)
    alpha = p[k * no * no:k * no * no + k * no].reshape(k, no)
    b = p[k * no * no + k * no:k * no * no + k * no + no]
    ens[j] = (T(w), T(alpha), T(b))


def tick(row, mask, out):
    for j in range(n):
        sl = slice(row_off[j], row_off[j] + sizes[j])
        if mask >> j & 1:
            out[sl] = row[sl]
            continue
        w, alpha, b = ens[j]
        us, als = [], []
        for s in range(k):
            i = slot_source(j, s)
            if not mask >> i & 1:
                continue
            mean, inv, w1, b1, w2, b2 = links[(j, s)]
            x = row[row_off[i]:row_off[i] + sizes[i]]
            a = torch.relu(torch.nn.functional.linear((x - mean) * inv, w1, b1))
            z = torch.nn.functional.linear(a, w2, b2)
            us.append(w[s] @ z)
            als.append(alpha[s])
        y = b + (torch.softmax(torch.stack(als), 0) * torch.stack(us)).sum(0)
        if kinds[j] == "Class":
            y = torch.softmax(y, 0)
        elif kinds[j] == "Multilabel":
            y = torch.sigmoid(y)
        out[sl] = y


def timed(fn, warm=50, reps=500):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(reps):
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    return statistics.median(ts)


row = T(row_np)
results = []
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
with torch.no_grad():
    for mi, mask in enumerate(meta["masks"]):
        out = torch.full_like(row, float("nan"))
        tick(row, mask, out)
        got = out.cpu().numpy()
        err = float(np.linalg.norm(got - ref[mi]) / np.linalg.norm(ref[mi]))
        assert np.isfinite(got).all() and err < 1e-5, (mask, err)
        eager = timed(lambda: tick(row, mask, out))
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            tick(row, mask, out)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            tick(row, mask, out)
        graph = timed(g.replay)
        print(f"mask {mask:#b}: eager {eager:.1f} us, graph {graph:.1f} us, rel. error vs Rust CPU {err:.1e}")
        results.append({"mask": mask, "eager_us": eager, "graph_us": graph, "rel_error": err})
json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "results": results},
          open(os.path.join(d, "torch_bench.json"), "w"), indent=1)

rust = json.load(open(os.path.join(d, "rust_bench.json")))
print(f"\n{rust['device']} (compute_{rust['arch']}, driver {rust['driver']}), median µs per tick:")
print(f"{'mask':>8} {'links':>5} {'fused':>7} {'per-link':>9} {'torch':>8} {'graph':>7} {'cpu':>7} {'empty':>6} {'predict':>8} {'torch/fused':>11}")
for r, t in zip(rust["results"], results):
    print(f"{r['mask']:>#8b} {r['links']:>5} {r['fused_us']:>7.2f} {r['per_link_us']:>9.2f} {t['eager_us']:>8.1f} "
          f"{t['graph_us']:>7.1f} {r['cpu_us']:>7.2f} {r['empty_us']:>6.2f} {r['predict_wall_us']:>8.2f} "
          f"{t['eager_us'] / r['fused_us']:>11.0f}")
