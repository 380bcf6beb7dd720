#!/usr/bin/python3
"""Writes a seeded-random LoRA adapter for a tiny test model, as PEFT's save_pretrained lays it out.

adapter_config.json (peft_type LORA, r, lora_alpha, target_modules, use_rslora, bias "none") and
adapter_model.safetensors with base_model.model.model.layers.N.<module>.lora_A.weight [r, in] and
lora_B.weight [out, r] for every layer and target module, the shapes read from the base model's
config.json. Unlike a freshly initialized PEFT adapter (B = 0), both matrices are random, so that
the adapter changes the model's output. Numpy only; the same arguments give byte-identical files:

    scripts/make_tiny_lora.py tests/data/models/tiny-llama3-gqa tests/data/loras/tiny-llama3-gqa-lora \
        --rank 4 --alpha 8 --seed 11
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from safetensors_file import bfloat16_bits, write_safetensors


def module_shapes(cfg, module):
    """(out_features, in_features) of a layer's linear module in the base model."""
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or hidden // heads
    return {
        "self_attn.q_proj": (heads * head_dim, hidden),
        "self_attn.k_proj": (kv_heads * head_dim, hidden),
        "self_attn.v_proj": (kv_heads * head_dim, hidden),
        "self_attn.qkv_proj": ((heads + 2 * kv_heads) * head_dim, hidden),
        "self_attn.o_proj": (hidden, heads * head_dim),
        "mlp.gate_proj": (inter, hidden),
        "mlp.up_proj": (inter, hidden),
        "mlp.gate_up_proj": (2 * inter, hidden),
        "mlp.down_proj": (hidden, inter),
    }[module]


def stored(values, dtype):
    """(dtype, shape, bytes): F32, or BF16 rounded to nearest even."""
    f32 = values.astype("<f4")
    return dtype, f32.shape, (f32 if dtype == "F32" else bfloat16_bits(f32)).tobytes()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path, help="the base model's directory (its config.json)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--alpha", type=float, required=True)
    ap.add_argument("--rslora", action="store_true", help="scaling alpha / sqrt(r) instead of alpha / r")
    ap.add_argument("--targets", nargs="+",
                    default=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                    help="module names, as PEFT's target_modules")
    ap.add_argument("--layers", type=int, nargs="+", help="the layers to adapt (default: all)")
    ap.add_argument("--dtype", choices=["F32", "BF16"], default="F32", help="how the weights are stored")
    ap.add_argument("--std", type=float, default=0.15, help="standard deviation of A and B's entries")
    ap.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)

    cfg = json.loads((args.base / "config.json").read_text())
    rng = np.random.default_rng(args.seed)
    tensors = {}
    for layer in args.layers if args.layers is not None else range(cfg["num_hidden_layers"]):
        for target in args.targets:
            module = ("self_attn." if target in ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj") else "mlp.") + target
            out_features, in_features = module_shapes(cfg, module)
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[prefix + ".lora_A.weight"] = stored(rng.normal(0, args.std, (args.rank, in_features)), args.dtype)
            tensors[prefix + ".lora_B.weight"] = stored(rng.normal(0, args.std, (out_features, args.rank)), args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": args.base.name,
              "r": args.rank, "lora_alpha": args.alpha, "lora_dropout": 0.0, "target_modules": args.targets,
              "use_rslora": args.rslora, "use_dora": False, "bias": "none", "fan_in_fan_out": False,
              "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
              "layers_to_transform": args.layers}
    (args.out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_safetensors(args.out / "adapter_model.safetensors", tensors)


if __name__ == "__main__":
    main(sys.argv[1:])
