#!/usr/bin/env python3
"""Presence thresholds for the video demo's score rules, from the training part only.

Usage: python3 tools/video/score_rules.py demo-video/reference.jlr.gz --train 250 face palm selfie centerface

The rule, fixed before any evaluation frame was looked at: a model's presence threshold is the 80th
percentile of all its values (every tile) on the training frames (frame index < --train), rounded
up to two decimals. A tile then counts as "present" on about a fifth of training tile-frames. The
models' own confidence thresholds (0.5 for MediaPipe and CenterFace) are not used: on this street
clip their scores stay below 0.5 almost everywhere (face at most .39, CenterFace .42), so presence
at 0.5 would be "nothing, ever" and score every method 100%.

Prints one `score = { ... }` line per model for the manifest. Standard library only.
"""
import argparse
import gzip
import math
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
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    models, frames = load(a.recording)
    offsets, o = {}, 0
    for name, size in models:
        offsets[name] = (o, size)
        o += size
    train = [row for index, row in frames if index < a.train]
    for name in a.models:
        o, size = offsets[name]
        values = sorted(v for row in train for v in row[o:o + size])
        q = values[min(len(values) - 1, int(a.quantile * len(values)))]
        t = math.ceil(q * 100) / 100
        print(f'# {name}: {len(train)} training frames, {len(values)} values, 80th percentile {q:.4f}')
        print(f'score = {{ rule = "presence", threshold = {t:.2f}, per = "tile" }}')


if __name__ == "__main__":
    main()
