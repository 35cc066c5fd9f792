#!/usr/bin/env python3
"""Writes a copy of an exported demo model folder with the router tensors of a router checkpoint
(train.py router: router-*.safetensors, float32) in place of its own, rounded to bfloat16 (to
nearest, ties to even: what export.py's torch conversion does). Every other tensor and file is
copied byte for byte. Needs numpy only (no torch), reading and writing safetensors directly.

Usage: replace_router.py --model models/demo/flux-tiny --router RUN/router-NAME --out NEW
"""

import argparse
import glob
import json
import os
import shutil
import struct
import sys

import numpy as np


def read_safetensors(path):
    """(header without __metadata__, metadata, data bytes) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise SystemExit(f"{path}: expected a safetensors file, found {len(blob)} bytes")
    n = struct.unpack("<Q", blob[:8])[0]
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError as e:
        raise SystemExit(f"{path}: expected a JSON header of {n} bytes, found: {e}")
    meta = header.pop("__metadata__", None)
    return header, meta, blob[8 + n:]


def to_bf16(values):
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--router", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if os.path.abspath(args.out) == os.path.abspath(args.model):
        raise SystemExit("--out: expected a folder other than --model")
    model_file = os.path.join(args.model, "model.safetensors")
    if not os.path.isfile(model_file):
        raise SystemExit(f"--model: expected an exported folder with model.safetensors, found "
                         f"none in '{args.model}'")
    header, meta, data = read_safetensors(model_file)
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], data[begin:end])
    files = sorted(glob.glob(os.path.join(args.router, "router-*.safetensors")))
    if not files:
        raise SystemExit(f"{args.router}: expected router-*.safetensors, found none")
    replaced = 0
    for path in files:
        rh, _, rd = read_safetensors(path)
        for name, info in rh.items():
            if "mask_allocator" not in name or name not in tensors:
                raise SystemExit(f"{path}: tensor '{name}': expected a router tensor of the model")
            if info["dtype"] != "F32" or info["shape"] != tensors[name][1]:
                raise SystemExit(f"{path}: tensor '{name}': expected F32 {tensors[name][1]}, "
                                 f"found {info['dtype']} {info['shape']}")
            begin, end = info["data_offsets"]
            values = np.frombuffer(rd[begin:end], dtype=np.float32)
            tensors[name] = ("BF16", info["shape"], to_bf16(values).tobytes())
            replaced += 1
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.model):
        if f != "model.safetensors":
            shutil.copy(os.path.join(args.model, f), os.path.join(args.out, f))
    out_header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        out_header[name] = {"dtype": dtype, "shape": shape,
                            "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    if meta is not None:
        out_header["__metadata__"] = meta
    text = json.dumps(out_header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    print(f"{args.out}: {replaced} router tensors replaced", file=sys.stderr)


if __name__ == "__main__":
    main()
