#!/usr/bin/python3
"""Independent reference for kvserve's whole-model tests.

A plain PyTorch implementation of the published Llama / Mistral / Qwen2 / Qwen3 / Phi-3 / Granite
architectures (RMSNorm, rotate-half RoPE with Llama-3 frequency scaling, grouped-query attention,
SwiGLU, optional q/k/v bias, Qwen3's RMSNorm of each head's q and k before RoPE, Phi-3's fused
qkv_proj and gate_up_proj, a sliding attention window, Granite's embedding, attention, residual
and logit multipliers, tied or untied embeddings), run in float64 with no KV cache: every step
recomputes the whole sequence, so nothing here shares a code path or a bookkeeping idea with the
engine.

For a model directory and a prompt it writes expected.json: the prompt ids, the greedy
continuation, and the logits of the last position at each greedy step. The C++ test reads it.
Run with Debian's python3 (python3-torch, python3-numpy) or with transformers where available:

    scripts/reference/llama_reference.py tests/data/models/tiny-llama --prompt "Once upon a time"

Where transformers is installed (the GPU machine), --check-transformers also runs
transformers' own model class on the same weights and fails if it disagrees.
"""
import argparse
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None}


def read_safetensors(path):
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    data = raw[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = data[begin:end]
        if info["dtype"] == "BF16":
            # bfloat16 is the top half of a float32.
            bits = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=DTYPES[info["dtype"]])
        tensors[name] = torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]).copy())
    return tensors


def rope_inv_freq(cfg, head_dim):
    """The inverse frequencies, and the factor cos and sin are multiplied by (longrope's)."""
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) in ("longrope", "su"):
        # Phi-3 128k: sequences up to the original length use the short factors (all this reference
        # runs), and every angle's cos and sin are scaled by sqrt(1 + ln(s) / ln(original)), s being
        # how far max_position_embeddings stretches the original length.
        original = cfg.get("original_max_position_embeddings", 4096)  # Phi3Config's default
        stretch = cfg["max_position_embeddings"] / original
        mscale = rs.get("attention_factor") or (math.sqrt(1 + math.log(stretch) / math.log(original)) if stretch > 1 else 1.0)
        return inv / torch.tensor(rs["short_factor"], dtype=torch.float64), mscale
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv / factor + smooth * inv
        medium = (wavelen <= old / low) & (wavelen >= old / high)
        inv = torch.where(medium, blended, scaled)
    return inv, 1.0


class Reference:
    def __init__(self, model_dir):
        self.cfg = json.loads((model_dir / "config.json").read_text())
        self.w = {}
        for f in sorted(model_dir.glob("*.safetensors")):
            self.w.update(read_safetensors(f))
        c = self.cfg
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        default_head_dim = 128 if c["architectures"][0] == "Qwen3ForCausalLM" else c["hidden_size"] // self.heads
        self.head_dim = c.get("head_dim") or default_head_dim
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.window = c.get("sliding_window") if c["architectures"][0] in ("MistralForCausalLM", "Phi3ForCausalLM") else None
        if c["architectures"][0] == "Phi3ForCausalLM":
            self.unfuse_phi3()
        granite = c["architectures"][0] == "GraniteForCausalLM"  # GraniteConfig's defaults are 1.0
        self.embedding_multiplier = c.get("embedding_multiplier", 1.0) if granite else 1.0
        self.attention_scale = c.get("attention_multiplier", 1.0) if granite else 1 / math.sqrt(self.head_dim)
        self.residual_multiplier = c.get("residual_multiplier", 1.0) if granite else 1.0
        self.logits_scaling = c.get("logits_scaling", 1.0) if granite else 1.0
        self.inv_freq, self.rope_mscale = rope_inv_freq(c, self.head_dim)
        tied = c.get("tie_word_embeddings", False)
        self.lm_head = self.w["model.embed_tokens.weight"] if tied else self.w["lm_head.weight"]

    def unfuse_phi3(self):
        # Phi-3 stores [q; k; v] as one qkv_proj and [gate; up] as one gate_up_proj (stacked rows).
        q_rows, kv_rows = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            qkv = self.w.pop(p + "self_attn.qkv_proj.weight")
            assert qkv.shape[0] == q_rows + 2 * kv_rows, qkv.shape
            self.w[p + "self_attn.q_proj.weight"] = qkv[:q_rows]
            self.w[p + "self_attn.k_proj.weight"] = qkv[q_rows:q_rows + kv_rows]
            self.w[p + "self_attn.v_proj.weight"] = qkv[q_rows + kv_rows:]
            gate_up = self.w.pop(p + "mlp.gate_up_proj.weight")
            inter = gate_up.shape[0] // 2
            self.w[p + "mlp.gate_proj.weight"] = gate_up[:inter]
            self.w[p + "mlp.up_proj.weight"] = gate_up[inter:]

    def norm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def rope(self, x, positions):
        angles = positions[:, None].double() * self.inv_freq[None, :]
        cos = torch.cat([angles.cos(), angles.cos()], -1)[:, None, :] * self.rope_mscale
        sin = torch.cat([angles.sin(), angles.sin()], -1)[:, None, :] * self.rope_mscale
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def logits(self, ids):
        w, n = self.w, len(ids)
        x = w["model.embed_tokens.weight"][torch.tensor(ids)] * self.embedding_multiplier
        positions = torch.arange(n)
        mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
        if self.window:  # query q sees keys k with q - window < k <= q
            mask = mask + torch.full((n, n), float("-inf"), dtype=torch.float64).tril(-self.window)
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = self.norm(x, w[p + "input_layernorm.weight"])

            def proj(name):
                out = h @ w[p + f"self_attn.{name}.weight"].T
                bias = w.get(p + f"self_attn.{name}.bias")
                return out if bias is None else out + bias

            def head_norm(x, name):  # Qwen3: RMSNorm over each head's vector, before RoPE
                weight = w.get(p + f"self_attn.{name}.weight")
                return x if weight is None else self.norm(x, weight)

            q = self.rope(head_norm(proj("q_proj").view(n, self.heads, self.head_dim), "q_norm"), positions)
            k = self.rope(head_norm(proj("k_proj").view(n, self.kv_heads, self.head_dim), "k_norm"), positions)
            v = proj("v_proj").view(n, self.kv_heads, self.head_dim)
            group = self.heads // self.kv_heads
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", q, k) * self.attention_scale + mask
            attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, -1)
            x = x + (attn @ w[p + "self_attn.o_proj.weight"].T) * self.residual_multiplier
            h = self.norm(x, w[p + "post_attention_layernorm.weight"])
            gate = h @ w[p + "mlp.gate_proj.weight"].T
            up = h @ w[p + "mlp.up_proj.weight"].T
            x = x + ((torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T) * self.residual_multiplier
        x = self.norm(x, w["model.norm.weight"])
        return (x[-1] @ self.lm_head.T) / self.logits_scaling


def encode(tokenizer, text):
    out = subprocess.run(["spm_encode", f"--model={tokenizer}", "--output_format=id"], input=text,
                         capture_output=True, text=True, check=True)
    return [int(t) for t in out.stdout.split()]


def check_transformers(model_dir, prompt_ids, greedy):
    import transformers  # only on machines that have it
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float64)
    ids = torch.tensor([prompt_ids])
    out = model.generate(ids, max_new_tokens=len(greedy), do_sample=False)
    theirs = out[0, len(prompt_ids):].tolist()
    if theirs != greedy:
        sys.exit(f"transformers disagrees: {theirs} vs {greedy}")
    print(f"transformers {transformers.__version__} agrees on {len(greedy)} greedy tokens")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--check-transformers", action="store_true")
    ap.add_argument("--out", type=Path, help="where to write (default: MODEL_DIR/expected.json)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    ref = Reference(args.model_dir)
    bos = ref.cfg.get("bos_token_id")
    prompt_ids = ([bos] if bos is not None else []) + encode(args.model_dir / "tokenizer.model", args.prompt)
    ids, greedy, step_logits, min_gap = list(prompt_ids), [], [], float("inf")
    for _ in range(args.steps):
        logits = ref.logits(ids)
        top2 = torch.topk(logits, 2).values
        min_gap = min(min_gap, float(top2[0] - top2[1]))
        token = int(torch.argmax(logits))
        greedy.append(token)
        step_logits.append([float(f"{v:.7g}") for v in logits.tolist()])
        ids.append(token)
    if args.check_transformers:
        check_transformers(args.model_dir, prompt_ids, greedy)

    out = {
        "reference": f"scripts/reference/llama_reference.py, PyTorch {torch.__version__}, float64, no KV cache",
        "prompt": args.prompt,
        "prompt_ids": prompt_ids,
        "greedy_ids": greedy,
        "min_top2_gap": min_gap,
        "step_logits": step_logits,
    }
    (args.out or args.model_dir / "expected.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{args.model_dir}: prompt {len(prompt_ids)} tokens, greedy {greedy}, smallest top-2 gap {min_gap:.4f}")


if __name__ == "__main__":
    main()
