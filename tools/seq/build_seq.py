#!/usr/bin/env python3
"""Rebuild the sequence workload under demo-seq/ from the package registries, deterministically.

    python3 tools/seq/build_seq.py            # creates tools/seq/.cache/venv on first use (no torch)

Each frame is one line of 3 to 6 handwritten MNIST digits (28 x 144 grey, white ink on black). Six
black-box models see it:

- `ocr_rec`: the real PP-OCRv4 text recogniser (rapidocr-onnxruntime 1.4.4 wheel) with its full CTC
  output, reduced by standard ONNX nodes to the columns [blank, '0'..'9', other] (other = the max
  over the 6,614 remaining characters), each time step renormalised to sum 1. Greedy CTC decoding
  over these 12 columns gives exactly the full model's greedy decode, any non-digit shown as '?'.
  Output: T = 38 steps x 12 values, flattened step-major (a `kind = "sequence"` output).
- `count` (how many digits, 3..6), `first` (the first digit), `first_odd` (is the first digit odd):
  scikit-learn classifiers trained here on lines drawn from the MNIST *training* split;
- `embed`: an 8-d PCA embedding of the line's leftmost 32 columns;
- `digits`: a per-position reader (six MLPs, one per position, each the p-th digit or none), a
  second sequence model: 6 steps x 11 class probabilities (`decode = "argmax"`).

How strings are drawn (`draw_lines`): the length k is uniform on {3, 4, 5, 6}; each of the k digits
is an MNIST image drawn uniformly (with replacement) from the split, cut to its ink columns (pixels
>= 30), placed left to right with gaps uniform on {1..3} px, starting at x uniform on {1..6} (so
every line fits the 144 px width: 6 x 20 + 5 x 3 + 6 <= 144), rows unchanged. Lines of the stream come
from the MNIST *test* split, lines for training the vector models from the *training* split. The
last N_DRIFT frames are degraded like demo/ (tools/demo/build_demo.py `degrade`, severity 0 -> 255).

Reuses tools/demo/build_demo.py (fetching and checking MNIST and the OCR wheel, views, the ONNX graph
builder, cost and latency measurement) by import.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import sys
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = HERE / ".cache"
VENV = CACHE / "venv"
OUT = ROOT / "demo-seq"


def bootstrap():
    """Re-run inside tools/seq/.cache/venv, creating it from requirements.txt when missing."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    stamp = VENV / ".requirements"
    req = (HERE / "requirements.txt").read_text()
    if not py.exists() or not stamp.exists() or stamp.read_text() != req:
        print(f"[setup] creating {VENV}", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")])
        stamp.write_text(req)
    os.execv(str(py), [str(py), str(Path(__file__).resolve())] + sys.argv[1:])


if __name__ == "__main__":
    bootstrap()

import gzip
import struct
import time
import warnings

import numpy as np

sys.path.insert(0, str(ROOT / "tools" / "demo"))
import build_demo as bd  # noqa: E402

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
import onnx  # noqa: E402

bd.CACHE = CACHE  # downloads of the shared fetchers go to this tool's cache
bd.CACHE.mkdir(parents=True, exist_ok=True)

SEED = 20261206
H, W = 28, 144
N_TRAIN_LINES = 12000
N_CLEAN = 1600
N_DRIFT = 400
TRAIN_END = 1000
DRIFT_START = N_CLEAN
INK = 30
ALPHABET = "0123456789?"  # CTC columns 1..11; column 0 is the blank
OCR_PAD_X = 8
OCR_W = 2 * W + 2 * OCR_PAD_X  # the recogniser's input width
STEPS = OCR_W // 8  # PP-OCRv4 rec: one CTC step per 8 input columns
C = 1 + len(ALPHABET)


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------------
# Lines of digits
# ---------------------------------------------------------------------------------------------------
def cut_ink(img):
    cols = np.nonzero((img >= INK).any(axis=0))[0]
    return img[:, cols[0] : cols[-1] + 1] if len(cols) else img[:, 10:18]


def draw_lines(x, y, n, rng):
    """n lines: frames uint8 [n, H, W], the digit strings, and the MNIST indices used."""
    frames = np.zeros((n, H, W), np.uint8)
    strings, picks = [], []
    for i in range(n):
        k = int(rng.integers(3, 7))
        idx = rng.integers(0, len(x), size=k)
        pos = int(rng.integers(1, 7))
        for j, d in enumerate(idx):
            g = cut_ink(x[d])
            g = g[:, :20]  # MNIST digits fit a 20 px box; guard anyway
            frames[i, :, pos : pos + g.shape[1]] = np.maximum(frames[i, :, pos : pos + g.shape[1]], g)
            pos += g.shape[1] + (int(rng.integers(1, 4)) if j + 1 < k else 0)
        assert pos <= W, pos
        strings.append("".join(str(int(y[d])) for d in idx))
        picks.append(idx)
    return frames, strings, picks


# ---------------------------------------------------------------------------------------------------
# Views (jetlink's src/view.rs semantics, applied by build_demo.apply_view)
# ---------------------------------------------------------------------------------------------------
V_UNIT = [{"op": "normalize", "mean": 0.0, "std": 1.0}]
VIEWS = {
    "ocr_rec": ([{"op": "invert"}, {"op": "crop", "x": 0, "y": 4, "w": W, "h": 20}, {"op": "upsample", "k": 2},
                 {"op": "pad", "top": 4, "bottom": 4, "left": OCR_PAD_X, "right": OCR_PAD_X, "value": 255.0},
                 {"op": "channels", "n": 3}, {"op": "normalize", "mean": 0.5, "std": 0.5}], [1, 3, 48, OCR_W]),
    "count": ([{"op": "pool", "k": 4}] + V_UNIT, [1, 7 * 36]),
    "first": ([{"op": "crop", "x": 0, "y": 0, "w": 32, "h": 28}] + V_UNIT, [1, 28 * 32]),
    "first_odd": ([{"op": "crop", "x": 0, "y": 0, "w": 32, "h": 28}] + V_UNIT, [1, 28 * 32]),
    "embed": ([{"op": "crop", "x": 0, "y": 0, "w": 32, "h": 28}] + V_UNIT, [1, 28 * 32]),
    "digits": ([{"op": "pool", "k": 2}] + V_UNIT, [1, 14 * 72]),
}
POSITIONS = 6
DIGITS_ALPHABET = "0123456789_"  # class 10: no digit at this position


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
def export_mlp(name, clf, n_in, doc):
    g = bd.G(name, [1, n_in])
    h = "input"
    for i, (Wt, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        h = bd.gemm(g, h, Wt, b, f"fc{i + 1}")
        if i + 1 < len(clf.coefs_):
            h = g.op("Relu", [h])
    if len(clf.classes_) == 2:  # sklearn's binary MLP has one logistic output: softmax([0, z])
        h = g.op("Concat", [g.w(np.zeros((1, 1)), "zero"), h], axis=1)
    p = g.op("Softmax", [h], "probabilities", axis=1)
    return g.model(p, [1, len(clf.classes_)], doc)


def train_mlp(name, X, t, hidden, iters, doc):
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=iters, batch_size=200, random_state=SEED % 2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, t)
    assert list(clf.classes_) == list(range(len(clf.classes_))), clf.classes_
    log(f"    train accuracy {clf.score(X, t):.3f}")
    return export_mlp(name, clf, X.shape[1], doc)


def train_embed(X):
    from sklearn.decomposition import PCA

    pca = PCA(n_components=8, random_state=SEED % 2**31).fit(X)
    Wt = pca.components_.T
    g = bd.G("embed", [1, X.shape[1]])
    z = g.op("Identity", [bd.gemm(g, "input", Wt, -pca.mean_ @ Wt, "pca")], "embedding")
    return g.model(z, [1, 8], "PCA (8 components) of the line's leftmost 28x32 pixels; 8-d embedding")


def train_digits(X, strings):
    """A per-position reader: for each position p < 6, an MLP classifies the line's p-th digit (or
    none); exported as one graph whose output is 6 steps x 11 class probabilities."""
    from sklearn.neural_network import MLPClassifier

    g = bd.G("digits", [1, X.shape[1]])
    outs = []
    for p in range(POSITIONS):
        t = np.array([int(s[p]) if p < len(s) else 10 for s in strings])
        clf = MLPClassifier(hidden_layer_sizes=(96,), max_iter=25, batch_size=200, random_state=SEED % 2**31 + p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, t)
        log(f"    position {p}: train accuracy {clf.score(X, t):.3f}")
        h = g.op("Relu", [bd.gemm(g, "input", clf.coefs_[0], clf.intercepts_[0], f"p{p}.fc1")])
        z = bd.gemm(g, h, clf.coefs_[1], clf.intercepts_[1], f"p{p}.fc2")
        q = g.op("Softmax", [z], axis=1)
        # Positions 0..2 always hold a digit, so their MLPs know 10 classes: place them in 11 columns.
        scatter = np.zeros((len(clf.classes_), 11))
        scatter[np.arange(len(clf.classes_)), clf.classes_] = 1.0
        outs.append(bd.gemm(g, q, scatter, np.zeros(11), f"p{p}.classes"))
    y = g.op("Concat", outs, "positions", axis=1)
    return g.model(y, [1, POSITIONS * 11], "six sklearn MLPClassifier(96), one per position: the p-th digit "
                   "of the line or none; 6 steps x 11 probabilities")


def wrap_ocr_rec_ctc(path):
    """PP-OCRv4 rec at [1,3,48,OCR_W] -> softmax [1,T,6625] -> [blank, '0'..'9', max(other)] per step,
    renormalised to sum 1 -> flattened [1, T*12]."""
    m = onnx.load(str(path))
    chars = [p.value for p in m.metadata_props if p.key == "character"][0].split("\n")
    digit_cols = [chars.index(c) + 1 for c in "0123456789"]  # CTC column 0 is the blank
    g = m.graph
    assert len(g.input) == 1 and len(g.output) == 1
    for d, v in zip(g.input[0].type.tensor_type.shape.dim, [1, 3, 48, OCR_W]):
        d.Clear()
        d.dim_value = v
    n_cols = len(chars) + 2  # blank, the metadata's characters, and ' ' (rapidocr appends a space)
    assert n_cols == 6625, n_cols
    other = [c for c in range(n_cols) if c != 0 and c not in digit_cols]
    assert len(other) == 6614, len(other)
    src = g.output[0].name
    g.initializer.extend([
        numpy_helper.from_array(np.array([0] + digit_cols, np.int64), "jl_keep_cols"),
        numpy_helper.from_array(np.array(other, np.int64), "jl_other_cols"),
        numpy_helper.from_array(np.array([1, STEPS * C], np.int64), "jl_flat_shape"),
    ])
    g.node.extend([
        helper.make_node("Gather", [src, "jl_keep_cols"], ["jl_keep"], axis=2, name="jl_gather_blank_digits"),
        helper.make_node("Gather", [src, "jl_other_cols"], ["jl_other_all"], axis=2, name="jl_gather_other"),
        helper.make_node("ReduceMax", ["jl_other_all"], ["jl_other"], axes=[2], keepdims=1, name="jl_max_other"),
        helper.make_node("Concat", ["jl_keep", "jl_other"], ["jl_12"], axis=2, name="jl_concat"),
        helper.make_node("ReduceSum", ["jl_12"], ["jl_sum"], axes=[2], keepdims=1, name="jl_step_sum"),
        helper.make_node("Div", ["jl_12", "jl_sum"], ["jl_norm"], name="jl_renormalise"),
        helper.make_node("Reshape", ["jl_norm", "jl_flat_shape"], ["ctc"], name="jl_flatten"),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("ctc", TensorProto.FLOAT, [1, STEPS * C]))
    del g.value_info[:]
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [12]  # axes as attributes
    m.doc_string = (f"PP-OCRv4 recognition (rapidocr-onnxruntime {bd.RAPIDOCR_VERSION}, Apache-2.0) + jetlink "
                    f"reduction: per CTC step, columns [blank, '0'..'9', max of the other 6614], renormalised; "
                    f"{STEPS} steps x {C} flattened")
    onnx.checker.check_model(m, full_check=True)
    return m


# ---------------------------------------------------------------------------------------------------
# Decoding and scores (the reference for src/links' sequence agreement)
# ---------------------------------------------------------------------------------------------------
def ctc_greedy(row):
    ids = row.reshape(STEPS, C).argmax(1)
    out, prev = [], 0
    for i in ids:
        if i != 0 and i != prev:
            out.append(ALPHABET[i - 1])
        prev = i
    return "".join(out)


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev = cur
    return d[len(b)]


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------
def write_stream(frames, counts, sev):
    n = len(frames)
    rec = np.zeros(n, np.dtype([("source", "<u4"), ("label", "u1"), ("severity", "u1"), ("px", "u1", H * W)]))
    rec["source"] = np.concatenate([np.arange(N_CLEAN), np.arange(N_DRIFT)])
    rec["label"], rec["severity"], rec["px"] = counts, sev, frames.reshape(n, H * W)
    header = b"JLSTRM01" + struct.pack("<IHHB3xII", n, H, W, 1, TRAIN_END, DRIFT_START)
    (OUT / "stream.jls.gz").write_bytes(gzip.compress(header + rec.tobytes(), compresslevel=9, mtime=0))


KIND_CODE = {"class": 0, "multilabel": 1, "regression": 2, "count": 3, "embedding": 4, "box": 5, "sequence": 6}
DECODE_CODE = {"ctc": 0, "argmax": 1, "raw": 2}


def write_recording(specs, outputs):
    """JLREC002: JLREC001 plus, for a sequence model, steps u32 and decode u8 after its size."""
    n = len(next(iter(outputs.values())))
    head = b"JLREC002" + struct.pack("<II", n, len(specs))
    for s in specs:
        nm = s["name"].encode()
        head += struct.pack("<H", len(nm)) + nm + struct.pack("<BI", KIND_CODE[s["kind"]], s["size"])
        if s["kind"] == "sequence":
            head += struct.pack("<IB", s["steps"], DECODE_CODE[s["decode"]])
    vals = np.concatenate([outputs[s["name"]] for s in specs], axis=1).astype("<f4")
    body = np.zeros(n, np.dtype([("frame", "<u4"), ("v", "<f4", vals.shape[1])]))
    body["frame"] = np.arange(n)
    body["v"] = vals
    (OUT / "reference.jlr.gz").write_bytes(gzip.compress(head + body.tobytes(), compresslevel=9, mtime=0))


def write_manifest(specs, runtime):
    tv = bd.toml_val
    L = ["# jetlink sequence workload. Generated by tools/seq/build_seq.py: do not edit by hand.",
         'name = "mnist-lines-seq"', 'stream = "stream.jls.gz"', 'reference = "reference.jlr.gz"', ""]
    for s in specs:
        L += ["[[model]]", f"name = {tv(s['name'])}", f"onnx = {tv(s['onnx'])}", f"kind = {tv(s['kind'])}",
              f"size = {s['size']}"]
        if s["kind"] == "sequence":
            L += [f"steps = {s['steps']}", f"decode = {tv(s['decode'])}", f"alphabet = {tv(s['alphabet'])}"]
        L += [f"importance = {tv(1.0)}", f"input_shape = {s['input_shape']}", f"view = {bd.view_toml(s['view'])}",
              f"provenance = {tv(s['provenance'])}"]
        c = s["cost"]
        L += ["", "[model.cost]", f"weight_bytes = {c['weight_bytes']}", f"activation_bytes = {c['activation_bytes']}",
              f"flops = {c['flops']}", f"latency_us = {tv(float(c['latency_us']))}",
              f"latency_runtime = {tv(runtime)}", ""]
    (OUT / "manifest.toml").write_text("\n".join(L))


PROV_OURS = ("trained by tools/seq/build_seq.py on lines of MNIST training digits (data CC BY-SA 3.0); "
             "model CC BY-SA 3.0")
PROV_OCR = (f"PP-OCRv4 text recognition from PaddleOCR via the PyPI wheel rapidocr-onnxruntime=={bd.RAPIDOCR_VERSION} "
            "(Apache-2.0), wrapped with standard ONNX nodes by tools/seq/build_seq.py")
MEASURES = {
    "ocr_rec": f"the text on the line: PP-OCRv4 CTC frames, {STEPS} steps x [blank, 0-9, other]",
    "count": "how many digits (3..6; class 0..3), MLP on a 7x36 pooled line",
    "first": "the first digit, MLP on the leftmost 32 columns",
    "first_odd": "is the first digit odd (1) or even (0), MLP on the leftmost 32 columns",
    "embed": "8-d PCA embedding of the leftmost 32 columns",
    "digits": "the digit at each of 6 positions or none (`_`): six MLPs on a 14x72 pooled line, 6 steps x 11",
}


def write_docs(specs, lines_acc, sizes):
    L = ["# jetlink sequence workload (lines of MNIST digits)", "",
         "Generated by `tools/seq/build_seq.py` (rerun: `python3 tools/seq/build_seq.py`). Do not edit by hand.", "",
         f"- `stream.jls.gz`: {N_CLEAN + N_DRIFT} frames of {H}x{W}x1 u8, each one line of 3 to 6 MNIST *test* digits "
         f"(label = the number of digits). Frames {DRIFT_START}..{N_CLEAN + N_DRIFT - 1} are lines 0..{N_DRIFT - 1} "
         "again, degraded like `demo/` (severity 0 -> 255). "
         f"`train_end = {TRAIN_END}`, `drift_start = {DRIFT_START}`.",
         "- How a line is drawn: length k uniform on {3,4,5,6}; k MNIST images drawn uniformly with replacement, "
         f"each cut to its ink columns (pixels >= {INK}), placed left to right with gaps uniform on {{1..3}} px from "
         "x uniform on {1..6}. The vector models were trained on 12,000 such lines from the MNIST *training* split.",
         f"- `models/*.onnx`: six black boxes (below). `ocr_rec` is a sequence model: {STEPS} CTC steps x {C} "
         "values [blank, '0'..'9', other], flattened step-major; greedy CTC decoding over alphabet "
         f"`{ALPHABET}` gives exactly the full PP-OCRv4 greedy decode (any non-digit read as `?`).",
         "- `reference.jlr.gz`: every model's output on every frame (onnxruntime), format JLREC002.",
         "", "## Models", "", "| model | kind | size | input | measures |", "|---|---|---|---|---|"]
    for s in specs:
        L.append(f"| {s['name']} | {s['kind']} | {s['size']} | {s['input_shape']} | {MEASURES[s['name']]} |")
    L += ["", "## Accuracy against the drawn strings", "", "```"] + lines_acc + ["```", "", "## Costs", "",
          "| model | weight bytes | activation bytes | FLOPs | latency us |", "|---|---|---|---|---|"]
    for s in specs:
        c = s["cost"]
        L.append(f"| {s['name']} | {c['weight_bytes']} | {c['activation_bytes']} | {c['flops']} | {c['latency_us']} |")
    L += ["", "Files: " + ", ".join(f"`{k}` {v} bytes" for k, v in sizes.items()) + ".",
          "", "Licences and attribution: `LICENSES.md`.", ""]
    (OUT / "README.md").write_text("\n".join(L))
    (OUT / "LICENSES.md").write_text(f"""# Licences of the sequence workload's assets

## MNIST (the digits of `stream.jls.gz`, training data of the trained models)

The MNIST database of handwritten digits, by Yann LeCun, Corinna Cortes and Christopher J. C. Burges,
is made available under the Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0,
https://creativecommons.org/licenses/by-sa/3.0/). The copy used is the one inside the PyPI source
distribution `{bd.MNIST_SDIST}`, verified by SHA-256. `stream.jls.gz` is an adapted work (test digits
composed into lines, the last {N_DRIFT} frames degraded) and is shared under CC BY-SA 3.0 too.

## PP-OCRv4 text recognition (`models/ocr_rec.onnx`)

By the PaddlePaddle authors (PaddleOCR, https://github.com/PaddlePaddle/PaddleOCR), converted to ONNX
and distributed by RapidOCR (https://github.com/RapidAI/RapidOCR) in the PyPI wheel
`rapidocr-onnxruntime=={bd.RAPIDOCR_VERSION}`, under the Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0). Copyright (c) PaddlePaddle Authors; Copyright (c) RapidAI.

Modifications (Apache-2.0 section 4(b)): the input shape is fixed to [1, 3, 48, {OCR_W}], and standard
ONNX nodes are appended: Gather of the CTC columns blank and '0'..'9', ReduceMax over the other 6,614
columns, Concat, renormalisation of each step to sum 1, and Reshape to [1, {STEPS * C}]. All original
weights are unchanged.

## Models trained here (`count`, `first`, `first_odd`, `embed`, `digits`)

Trained by `tools/seq/build_seq.py` on lines of MNIST training digits; as works adapted from MNIST
they are shared under CC BY-SA 3.0 with the attribution above.

## `reference.jlr.gz`

Outputs of the models above on the stream frames; same terms as the models and data it derives from.
""")


# ---------------------------------------------------------------------------------------------------
def main():
    t0 = time.time()
    import onnxruntime as ort

    OUT.mkdir(exist_ok=True)
    (OUT / "models").mkdir(exist_ok=True)
    xtr, ytr, xte, yte = bd.fetch_mnist()
    _, rec_src = bd.fetch_ocr()
    rng = np.random.default_rng(SEED)

    # Stream: clean lines of test digits, then the first N_DRIFT of them degraded.
    clean, strings, _ = draw_lines(xte, yte, N_CLEAN, rng)
    frames = np.empty((N_CLEAN + N_DRIFT, H, W), np.uint8)
    frames[:N_CLEAN] = clean
    sev = np.zeros(N_CLEAN + N_DRIFT, np.uint8)
    for j in range(N_DRIFT):
        s = int(round(255 * j / (N_DRIFT - 1)))
        frames[N_CLEAN + j] = bd.degrade(clean[j], s, rng)
        sev[N_CLEAN + j] = s
    truth = strings + strings[:N_DRIFT]
    counts = np.array([len(s) for s in truth], np.uint8)
    write_stream(frames, counts, sev)
    log(f"[stream] {len(frames)} frames of {H}x{W}")

    # Training lines for the vector models (MNIST training split).
    tr, tr_strings, _ = draw_lines(xtr, ytr, N_TRAIN_LINES, rng)
    t_count = np.array([len(s) - 3 for s in tr_strings])
    t_first = np.array([int(s[0]) for s in tr_strings])
    t_first_odd = np.array([int(s[0]) % 2 for s in tr_strings])

    models = {}
    log("[train] count")
    models["count"] = train_mlp("count", bd.apply_view(tr, *VIEWS["count"]), t_count, (64,), 40,
                                "sklearn MLPClassifier(64): number of digits 3..6 as class 0..3; 4 probabilities")
    log("[train] first")
    models["first"] = train_mlp("first", bd.apply_view(tr, *VIEWS["first"]), t_first, (128,), 30,
                                "sklearn MLPClassifier(128): the first digit of the line; 10 probabilities")
    log("[train] first_odd")
    models["first_odd"] = train_mlp("first_odd", bd.apply_view(tr, *VIEWS["first_odd"]), t_first_odd, (64,), 30,
                                    "sklearn MLPClassifier(64): is the first digit odd; 2 probabilities")
    log("[train] embed")
    models["embed"] = train_embed(bd.apply_view(tr, *VIEWS["embed"]))
    log("[train] digits")
    models["digits"] = train_digits(bd.apply_view(tr, *VIEWS["digits"]), tr_strings)
    log("[wrap] ocr_rec")
    models = {"ocr_rec": wrap_ocr_rec_ctc(rec_src), **models}

    kinds = {"ocr_rec": ("sequence", STEPS * C), "count": ("class", 4), "first": ("class", 10),
             "first_odd": ("class", 2), "embed": ("embedding", 8), "digits": ("sequence", POSITIONS * 11)}
    runtime = f"onnxruntime-{ort.__version__} 1 thread"
    specs, outputs = [], {}
    for name, m in models.items():
        path = OUT / "models" / f"{name}.onnx"
        path.write_bytes(m.SerializeToString())
        view, shape = VIEWS[name]
        X = bd.apply_view(frames, view, shape)
        log(f"[measure] {name}")
        cost, _ = bd.measure_cost(m, X[:1])
        cost["latency_us"] = bd.measure_latency(path, X[:1])
        log(f"    {cost}")
        log(f"[reference] {name}")
        out = bd.run_model(path, X)
        kind, size = kinds[name]
        assert out.shape == (len(frames), size), out.shape
        outputs[name] = out
        spec = {"name": name, "onnx": f"models/{name}.onnx", "kind": kind, "size": size,
                "input_shape": list(shape), "view": view, "cost": cost,
                "provenance": PROV_OCR if name == "ocr_rec" else PROV_OURS}
        if name == "ocr_rec":
            spec.update(steps=STEPS, decode="ctc", alphabet=ALPHABET)
        elif name == "digits":
            spec.update(steps=POSITIONS, decode="argmax", alphabet=DIGITS_ALPHABET)
        specs.append(spec)
    write_recording(specs, outputs)
    write_manifest(specs, runtime)

    # Accuracy of each model against the drawn strings (clean / drift segments).
    seg = {"clean": np.arange(N_CLEAN), "drift": np.arange(N_CLEAN, N_CLEAN + N_DRIFT)}
    read = [ctc_greedy(r) for r in outputs["ocr_rec"]]
    digits_read = ["".join(DIGITS_ALPHABET[k] for k in r.reshape(POSITIONS, 11).argmax(1)).replace("_", "")
                   for r in outputs["digits"]]
    ok = {
        "ocr_rec (exact string)": np.array([r == t for r, t in zip(read, truth)]),
        "ocr_rec (1 - norm. edit distance)": np.array(
            [1 - edit_distance(r, t) / max(len(r), len(t), 1) for r, t in zip(read, truth)]),
        "count": outputs["count"].argmax(1) == counts - 3,
        "first": outputs["first"].argmax(1) == np.array([int(t[0]) for t in truth]),
        "first_odd": outputs["first_odd"].argmax(1) == np.array([int(t[0]) % 2 for t in truth]),
        "digits (all 6 positions)": np.array([r == t for r, t in zip(digits_read, truth)]),
        "ocr_rec == digits (exact string)": np.array([r == d for r, d in zip(read, digits_read)]),
    }
    acc = [f"{'model':36s} {'clean':>7s} {'drift':>7s}   (percent)"]
    for k, v in ok.items():
        acc.append(f"{k:36s} {100 * v[seg['clean']].mean():7.2f} {100 * v[seg['drift']].mean():7.2f}")
    for line in acc:
        log(line)
    log("examples: " + ", ".join(f"{t}->{r}" for t, r in list(zip(truth, read))[:12]))
    sizes = {p.relative_to(OUT).as_posix(): p.stat().st_size for p in sorted(OUT.rglob("*"))
             if p.is_file() and p.suffix in (".gz", ".onnx")}
    write_docs(specs, acc, sizes)
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            log(f"{p.stat().st_size:10d}  {bd.sha256(p)}  {p.relative_to(ROOT)}")
    log(f"[done] {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
