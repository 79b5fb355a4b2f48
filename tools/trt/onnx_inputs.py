#!/usr/bin/env python3
"""List the models of a jetlink manifest for tools/trt/build_plans.sh, one tab-separated line each:

    name  onnx-path  input-name  shape  dynamic  unsupported

`shape` is the manifest's input_shape as trtexec writes it (1x784), `dynamic` is 1 when the ONNX
input has a symbolic or missing dimension (then trtexec needs --shapes), `unsupported` lists
operator domains TensorRT's ONNX parser does not take (ai.onnx.ml: tree ensembles, linear
classifiers...), or "-".

Standard library only (the board's python3 may be 3.8 with no `onnx` or `tomllib`): the ONNX file is
read with a minimal protobuf reader, the manifest with a line parser that understands the subset
tools/demo/build_demo.py writes ([[model]] tables with name, onnx and input_shape keys).
"""
import os
import re
import sys


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def fields(buf):
    """Yield (field number, wire type, value) of one protobuf message; LEN values are bytes."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wt)
        yield num, wt, v


def onnx_input(path):
    """(first non-initialiser input name, dims as int or None, set of node domains)."""
    with open(path, "rb") as f:
        model = f.read()
    graph = next((v for n, wt, v in fields(model) if n == 7 and wt == 2), None)
    if graph is None:
        raise ValueError("%s: no graph" % path)
    inits, inputs, domains = set(), [], set()
    for n, wt, v in fields(graph):
        if n == 1 and wt == 2:  # NodeProto.domain = 7
            for m, _, d in fields(v):
                if m == 7:
                    domains.add(d.decode())
        elif n == 5 and wt == 2:  # TensorProto.name = 8
            for m, _, d in fields(v):
                if m == 8:
                    inits.add(d.decode())
        elif n == 11 and wt == 2:
            inputs.append(v)
    for vi in inputs:
        name, dims = None, []
        for m, _, d in fields(vi):
            if m == 1:
                name = d.decode()
            elif m == 2:  # TypeProto.tensor_type = 1 -> TensorShapeProto shape = 2 -> dim = 1
                for a, _, t in fields(d):
                    if a != 1:
                        continue
                    for b, _, s in fields(t):
                        if b != 2:
                            continue
                        for c, _, dim in fields(s):
                            if c != 1:
                                continue
                            value = None
                            for e, ewt, x in fields(dim):
                                if e == 1 and ewt == 0:
                                    value = x
                            dims.append(value)
        if name is not None and name not in inits:
            return name, dims, domains
    raise ValueError("%s: no graph input" % path)


def strip_comment(line):
    """Drop a TOML comment (a # outside a basic string)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def manifest_models(path):
    models, cur = [], None
    for raw in open(path, encoding="utf-8"):
        line = strip_comment(raw).strip()
        if line == "[[model]]":
            cur = {}
            models.append(cur)
        elif line.startswith("["):
            if not line.startswith("[model."):
                cur = None
        elif cur is not None and "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            if key in ("name", "onnx") and key not in cur:
                cur[key] = re.match(r'^"([^"]*)"', value).group(1)
            elif key == "input_shape":
                cur[key] = [int(x) for x in re.findall(r"\d+", value)]
    for i, m in enumerate(models):
        for key in ("name", "onnx", "input_shape"):
            if key not in m:
                raise ValueError("%s: model[%d]: missing key `%s`" % (path, i, key))
    return models


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: onnx_inputs.py MANIFEST")
    manifest = sys.argv[1]
    base = os.path.dirname(os.path.abspath(manifest))
    for m in manifest_models(manifest):
        onnx = os.path.join(base, m["onnx"])
        name, dims, domains = onnx_input(onnx)
        dynamic = len(dims) != len(m["input_shape"]) or any(d is None or d == 0 for d in dims)
        unsupported = sorted(d for d in domains if d not in ("", "ai.onnx"))
        print("\t".join([m["name"], onnx, name, "x".join(str(d) for d in m["input_shape"]),
                         "1" if dynamic else "0", ",".join(unsupported) or "-"]))


if __name__ == "__main__":
    main()
