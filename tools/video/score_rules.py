#!/usr/bin/env python3
"""Score rules for the video demo, from the training part of its recording only.

Usage: python3 tools/video/score_rules.py demo-video/reference.jlr.gz --train 250 --presence face palm selfie centerface

Tolerance (every model; the kind's own rule, kept beside a declared one): the largest of 0.01, 0.02,
0.03, 0.05, 0.08, 0.1, 0.15, 0.2 that the constant predictor (the training mean) passes on at most a
quarter of the training frames, as tools/video/build_video.py chooses it.

The rule, fixed before any evaluation frame was looked at: a model's presence threshold is the 80th
percentile of all its values (every tile) on the training frames (frame index < --train), rounded
up to three decimals. A tile then counts as "present" on about a fifth of training tile-frames. The
models' own confidence thresholds (0.5 for MediaPipe and CenterFace) are not used: on this street
clip their scores stay below 0.5 almost everywhere (face at most .39, CenterFace .42), so presence
at 0.5 would be "nothing, ever" and score every method 100%.

Prints the `tolerance` of every model and a `score = { ... }` line for the --presence models. With
--write MANIFEST it also puts them into the manifest: each model's `tolerance = ...` line is replaced
and its `score = ...` line (after the tolerance) written or replaced; nothing else in the file
changes. Standard library only.
"""
import argparse
import gzip
import math
import os
import re
import struct


def load(path):
    b = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    if b[:8] != b"JLREC001":
        raise SystemExit(f"{path}: not a JLREC001 recording (vector outputs only)")
    n_frames, n_models = struct.unpack_from("<II", b, 8)
    o, models = 16, []
    for _ in range(n_models):
        (l,) = struct.unpack_from("<H", b, o)
        o += 2
        name = b[o:o + l].decode()
        o += l + 1  # name, kind code
        (size,) = struct.unpack_from("<I", b, o)
        o += 4
        models.append((name, size))
    total = sum(s for _, s in models)
    frames = []
    for _ in range(n_frames):
        (index,) = struct.unpack_from("<I", b, o)
        frames.append((index, struct.unpack_from(f"<{total}f", b, o + 4)))
        o += 4 + 4 * total
    return models, frames


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recording")
    ap.add_argument("--train", type=int, required=True, help="first evaluation frame")
    ap.add_argument("--quantile", type=float, default=0.8)
    ap.add_argument("--presence", nargs="*", default=[], help="models judged by presence per tile")
    ap.add_argument("--write", metavar="MANIFEST", help="put the tolerances and score lines into MANIFEST")
    a = ap.parse_args()
    models, frames = load(a.recording)
    offsets, o = {}, 0
    for name, size in models:
        offsets[name] = (o, size)
        o += size
    train = [row for index, row in frames if index < a.train]
    if not train:
        raise SystemExit(f"{a.recording}: no frame below --train {a.train}")
    tolerances, scores = {}, {}
    for name, size in models:
        o, _ = offsets[name]
        ys = [row[o:o + size] for row in train]
        mean = [sum(y[i] for y in ys) / len(ys) for i in range(size)]
        best = 0.01
        for tol in (0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2):
            passed = sum(all(abs(y[i] - mean[i]) <= tol for i in range(size)) for y in ys) / len(ys)
            if passed <= 0.25:
                best = tol
        print(f"{name}: tolerance = {best}")
        tolerances[name] = best
    for name in a.presence:
        if name not in offsets:
            raise SystemExit(f"--presence {name}: no such model in {a.recording}")
        o, size = offsets[name]
        values = sorted(v for row in train for v in row[o:o + size])
        q = values[min(len(values) - 1, int(a.quantile * len(values)))]
        t = math.ceil(q * 1000) / 1000
        print(f'# {name}: {len(train)} training frames, {len(values)} values, 80th percentile {q:.4f}')
        line = f'score = {{ rule = "presence", threshold = {t:.3f}, per = "tile" }}'
        print(line)
        scores[name] = f"{line}   # tools/video/score_rules.py"
    if a.write:
        write_manifest(a.write, tolerances, scores)


def write_manifest(path, tolerances, scores):
    """Replace each model's tolerance line and write or replace its score line (after the
    tolerance); a model of the recording missing from the manifest is an error."""
    lines = open(path).read().split("\n")
    out, model, seen = [], None, set()
    for line in lines:
        m = re.match(r'name = "([^"]+)"', line)
        if m and out and out[-1] == "[[model]]":
            model = m.group(1)
        if model in tolerances and line.startswith("score = "):
            continue  # written again after the tolerance
        if model in tolerances and line.startswith("tolerance = "):
            out.append(f"tolerance = {tolerances[model]}")
            if model in scores:
                out.append(scores[model])
            seen.add(model)
            continue
        out.append(line)
    missing = sorted(set(tolerances) - seen)
    if missing:
        raise SystemExit(f"{path}: no `tolerance = ` line for {', '.join(missing)}")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
