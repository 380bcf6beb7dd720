#!/usr/bin/python3
"""Writes an FP8 copy of a tiny test model, as FP8 checkpoints are published.

Every linear weight of the decoder layers (`model.layers.N.{self_attn,mlp}.*_proj.weight`) is
quantized to OCP FP8 E4M3 with one scale per block of rows x columns (the whole tensor, one row, or
a block), scale = max |w| of the block / 448 (E4M3's largest value) as llm-compressor and DeepSeek's
tools compute it, and the values rounded to the nearest E4M3 number (ties to the even code). The
embeddings, norms, biases and LM head are copied as they are, as the published checkpoints keep
them. config.json gains the quantization_config of the chosen format:

  --format fp8                 quant_method "fp8", weight_block_size [R, C], scales "<weight>_scale_inv"
                               (Qwen3-*-FP8, DeepSeek-V3)
  --format compressed-tensors  llm-compressor's "float-quantized": strategy tensor / channel / block,
                               scales "<weight>_scale"; --static-input-scales adds the per-tensor
                               activation scales a static scheme stores (kvserve leaves them unused)

Numpy only; the same arguments give byte-identical files. For example (from the repository root):

    scripts/make_fp8_model.py tests/data/models/tiny-qwen3 tests/data/models/tiny-qwen3-fp8 \
        --format fp8 --block 32 32 --scale-dtype BF16
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from safetensors_file import bfloat16_bits, read_safetensors, write_safetensors

E4M3_MAX = 448.0


def e4m3_values():
    """The 256 codes' values: sign, 4 exponent bits (bias 7), 3 mantissa bits; 0x7F / 0xFF NaN."""
    values = np.empty(256, dtype=np.float64)
    for code in range(256):
        exponent, mantissa = (code >> 3) & 0xF, code & 0x7
        if exponent == 0xF and mantissa == 0x7:
            values[code] = np.nan
            continue
        magnitude = mantissa / 8 * 2.0 ** -6 if exponent == 0 else (1 + mantissa / 8) * 2.0 ** (exponent - 7)
        values[code] = -magnitude if code & 0x80 else magnitude
    return values


def to_e4m3(x):
    """Codes of the E4M3 numbers nearest to x (|x| <= 448), ties to the even code."""
    grid = e4m3_values()[:0x7F]  # 0 .. 448, increasing
    magnitude = np.abs(x)
    upper = np.clip(np.searchsorted(grid, magnitude), 1, 0x7E)
    lower = upper - 1
    below, above = magnitude - grid[lower], grid[upper] - magnitude
    code = np.where((above < below) | ((above == below) & (upper % 2 == 0)), upper, lower)
    return (code | np.where(x < 0, 0x80, 0)).astype(np.uint8)


def as_float(dtype, shape, buf):
    if dtype == "BF16":
        return (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(buf, dtype={"F16": np.float16, "F32": np.float32}[dtype]).astype(np.float32).reshape(shape)


def encode_scales(scales, dtype):
    """Scales as stored (BF16 rounds to nearest even), and their bytes."""
    s32 = scales.astype("<f4")
    if dtype == "F32":
        return s32.astype(np.float64), s32.tobytes()
    rounded = bfloat16_bits(s32)
    return (rounded.astype(np.uint32) << 16).view(np.float32).astype(np.float64), rounded.tobytes()


def quantize(w, block_rows, block_cols, scale_dtype):
    """(E4M3 codes, stored scales [ceil(rows/br), ceil(cols/bc)], their bytes) for the 2-D w."""
    rows, cols = w.shape
    br, bc = block_rows or rows, block_cols or cols
    sr, sc = -(-rows // br), -(-cols // bc)
    amax = np.zeros((sr, sc))
    for i in range(sr):
        for j in range(sc):
            amax[i, j] = np.abs(w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]).max()
    scales, scale_bytes = encode_scales(np.maximum(amax, 1e-12) / E4M3_MAX, scale_dtype)
    spread = np.repeat(np.repeat(scales, br, axis=0), bc, axis=1)[:rows, :cols]
    codes = to_e4m3(np.clip(w / spread, -E4M3_MAX, E4M3_MAX))
    return codes, scales, scale_bytes


def quantization_config(args):
    if args.format == "fp8":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                "weight_block_size": list(args.block)}
    strategy = {(0, 0): "tensor", (1, 0): "channel"}.get(tuple(args.block), "block")
    weights = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": strategy,
               "group_size": None, "block_structure": list(args.block) if strategy == "block" else None}
    activations = ({"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": "tensor"}
                   if args.static_input_scales else
                   {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": True, "strategy": "token"})
    return {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
            "ignore": ["lm_head"], "kv_cache_scheme": None,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": activations}}}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="a tiny model directory (config.json, model.safetensors)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--format", choices=["fp8", "compressed-tensors"], required=True)
    ap.add_argument("--block", type=int, nargs=2, default=[0, 0], metavar=("ROWS", "COLS"),
                    help="rows x columns one scale covers; 0: the whole dimension (0 0 per tensor, 1 0 per row)")
    ap.add_argument("--scale-dtype", choices=["F32", "BF16"], default="F32")
    ap.add_argument("--static-input-scales", action="store_true")
    args = ap.parse_args(argv)
    if args.format == "fp8" and 0 in args.block:
        ap.error("--format fp8 writes weight_block_size: give both block sizes")

    args.out.mkdir(parents=True, exist_ok=True)
    for f in sorted(args.source.iterdir()):
        if f.name not in ("config.json", "model.safetensors", "expected.json") and f.is_file():
            shutil.copyfile(f, args.out / f.name)
    config = json.loads((args.source / "config.json").read_text())
    config["quantization_config"] = quantization_config(args)
    (args.out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    suffix = "_scale_inv" if args.format == "fp8" else "_scale"
    out = {}
    for name, (dtype, shape, buf) in read_safetensors(args.source / "model.safetensors").items():
        if not (name.startswith("model.layers.") and name.endswith("_proj.weight") and len(shape) == 2):
            out[name] = (dtype, shape, buf)
            continue
        codes, scales, scale_bytes = quantize(as_float(dtype, shape, buf).astype(np.float64), *args.block,
                                              args.scale_dtype)
        out[name] = ("F8_E4M3", shape, codes.tobytes())
        out[name + suffix] = (args.scale_dtype, list(scales.shape), scale_bytes)
        if args.static_input_scales:
            out[name.removesuffix("weight") + "input_scale"] = ("F32", [1], np.float32(0.02).tobytes())
    write_safetensors(args.out / "model.safetensors", out)


if __name__ == "__main__":
    main(sys.argv[1:])
