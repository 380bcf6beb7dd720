"""Raw safetensors files for the fixture makers (make_tiny_model.py, make_fp8_model.py,
make_tiny_lora.py): numpy only, tensors as (dtype, shape, bytes) exactly as the header spells them.

Written files are deterministic: tensors sorted by name, back to back, the JSON header compact with
sorted keys and padded with spaces to a multiple of 8 bytes, so the same tensors give the same bytes.
"""
import json
import struct

import numpy as np


def bfloat16_bits(values):
    """float32 -> bfloat16 bit patterns, rounding to nearest even (NaN kept quiet)."""
    f32 = np.asarray(values, dtype="<f4")
    bits = f32.view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    return np.where(np.isnan(f32), np.uint16(0x7FC0), rounded).astype("<u2")


def write_safetensors(path, tensors):
    """tensors: {name: (dtype, shape, bytes)}."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        dtype, shape, blob = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    """{name: (dtype, shape, bytes)} of a file (its __metadata__ left out)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    return {name: (info["dtype"], info["shape"], data[info["data_offsets"][0]:info["data_offsets"][1]])
            for name, info in header.items() if name != "__metadata__"}
