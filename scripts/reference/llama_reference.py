#!/usr/bin/python3
"""Independent reference for kvserve's whole-model tests.

A plain PyTorch implementation of the published Llama / Mistral / Qwen2 / Qwen3 / Phi-3 / Granite /
Gemma / Gemma 2 / Gemma 3 (text) architectures (RMSNorm, rotate-half RoPE with Llama-3 or linear
frequency scaling, grouped-query attention, SwiGLU, optional q/k/v bias, Qwen3's RMSNorm of each
head's q and k before RoPE, Phi-3's fused qkv_proj and gate_up_proj, a sliding attention window,
Granite's embedding, attention, residual and logit multipliers, tied or untied embeddings; Gemma's
(1 + weight) norms, sqrt(hidden) embedding scale and tanh-GELU MLP, Gemma 2's and 3's norms after
attention and around the MLP, query_pre_attn_scalar, per-layer sliding or full attention, Gemma 2's
attention and final logit soft-capping, Gemma 3's q/k norms and separate RoPE for sliding layers;
the mixture-of-experts MLP of Mixtral / Qwen2-MoE / Qwen3-MoE (softmax router, top-k experts,
optionally renormalized weights, Qwen2-MoE's sigmoid-gated shared expert, Qwen's dense layers);
FP8 checkpoints' E4M3 weights times their block scales), run in float64 with no KV cache: every step recomputes the whole sequence, so nothing here shares a
code path or a bookkeeping idea with the engine.

For a model directory and a prompt it writes expected.json: the prompt ids, the greedy
continuation, the logits of the last position at each greedy step, and the final hidden state (after
the last norm) of the prompt's last token. The C++ test reads it.
Run with Debian's python3 (python3-torch, python3-numpy) or with transformers where available:

    scripts/reference/llama_reference.py tests/data/models/tiny-llama --prompt "Once upon a time"

--lora DIR merges a PEFT LoRA adapter into the weights first (W + scaling * B @ A, as PEFT's
merge_and_unload), for the adapters' tests (tests/data/loras).

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
GEMMA = {"GemmaForCausalLM": 1, "Gemma2ForCausalLM": 2, "Gemma3ForCausalLM": 3}
QWEN_MOE = ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM")


def gelu_tanh(x):  # "gelu_pytorch_tanh", Gemma's activation
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))


def gelu_erf(x):  # "gelu": the exact one
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


ACTIVATIONS = {"silu": torch.nn.functional.silu, "gelu_pytorch_tanh": gelu_tanh, "gelu": gelu_erf}


def e4m3_table():
    """OCP FP8 E4M3 ("e4m3fn") code -> value: (-1)^s * 2^(e-7) * (1 + m/8), subnormal at e = 0
    (2^-6 * m/8), NaN at S.1111.111 and no infinities."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    e, m = (codes >> 3) & 0xF, codes & 0x7
    value = sign * np.where(e == 0, m / 8 * 2.0 ** -6, (1 + m / 8) * np.exp2(e - 7.0))
    value[(e == 0xF) & (m == 0x7)] = np.nan
    return value


def dequantize_fp8(tensors, cfg):
    """FP8 checkpoints: each F8_E4M3 weight times its scales (one per block of the rows x columns that
    quantization_config names: the whole tensor, one row, or a block), spread over the weight by
    repetition; the activation and KV scales are dropped (the model is run unquantized)."""
    q = cfg.get("quantization_config")
    if not q:
        return tensors
    if q["quant_method"] == "fp8":
        suffix, block = "_scale_inv", q["weight_block_size"]
    else:  # compressed-tensors
        w = next(iter(q["config_groups"].values()))["weights"]
        suffix = "_scale"
        block = {"tensor": [0, 0], "channel": [1, 0], "block": w.get("block_structure")}[w["strategy"]]
    out = {}
    for name, t in tensors.items():
        if name.endswith((suffix, "input_scale")):
            continue
        if name + suffix in tensors:
            rows, cols = t.shape
            br, bc = block[0] or rows, block[1] or cols
            scales = tensors[name + suffix].reshape(-(-rows // br), -(-cols // bc))
            t = t * scales.repeat_interleave(br, 0).repeat_interleave(bc, 1)[:rows, :cols]
        out[name] = t
    return out


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
        elif info["dtype"] == "F8_E4M3":  # the stored values; dequantize_fp8 applies the scales
            arr = e4m3_table()[np.frombuffer(buf, dtype=np.uint8)]
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
    if rs and rs.get("rope_type", rs.get("type")) == "linear":  # positions divided by the factor
        return inv / rs["factor"], 1.0
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


def merge_lora(tensors, lora_dir):
    """A PEFT LoRA adapter merged into the weights, as PEFT's merge_and_unload does:
    W += scaling * B @ A, scaling = lora_alpha / r (or / sqrt(r) with use_rslora)."""
    cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    adapter = read_safetensors(lora_dir / "adapter_model.safetensors")
    merged = 0
    for name, a in adapter.items():
        if not name.endswith(".lora_A.weight"):
            continue
        target = name.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
        b = adapter[name.replace(".lora_A.", ".lora_B.")]
        tensors[target] = tensors[target] + scaling * (b @ a)
        merged += 1
    if not merged:
        sys.exit(f"{lora_dir}: no LoRA weights")
    return tensors


class Reference:
    def __init__(self, model_dir, lora_dir=None):
        self.cfg = json.loads((model_dir / "config.json").read_text())
        self.w = {}
        for f in sorted(model_dir.glob("*.safetensors")):
            self.w.update(read_safetensors(f))
        self.w = dequantize_fp8(self.w, self.cfg)
        if lora_dir:
            self.w = merge_lora(self.w, lora_dir)
        c = self.cfg
        arch = c["architectures"][0]
        gemma = GEMMA.get(arch, 0)  # 0: not a Gemma
        layers = c["num_hidden_layers"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        default_head_dim = 128 if arch == "Qwen3ForCausalLM" else 256 if gemma else c["hidden_size"] // self.heads
        self.moe_config(arch, layers)
        self.head_dim = c.get("head_dim") or default_head_dim
        self.eps = c.get("rms_norm_eps", 1e-6)
        if arch == "Phi3ForCausalLM":
            self.unfuse_phi3()
        granite = arch == "GraniteForCausalLM"  # GraniteConfig's defaults are 1.0
        self.embedding_multiplier = c.get("embedding_multiplier", 1.0) if granite else 1.0
        self.attention_scale = c.get("attention_multiplier", 1.0) if granite else 1 / math.sqrt(self.head_dim)
        self.residual_multiplier = c.get("residual_multiplier", 1.0) if granite else 1.0
        self.logits_scaling = c.get("logits_scaling", 1.0) if granite else 1.0
        rope = rope_inv_freq(c, self.head_dim)
        self.layer_rope = [rope] * layers  # (inverse frequencies, cos/sin factor) of each layer
        window = c.get("sliding_window") if arch in ("MistralForCausalLM", "MixtralForCausalLM", "Phi3ForCausalLM") else None
        self.layer_window = [window] * layers  # None: plain causal
        self.norm_offset = 0.0  # norms scale by offset + weight
        self.act = ACTIVATIONS[c.get("hidden_act", "silu")]
        self.sandwich = False  # Gemma 2 and 3: norms after attention and around the MLP
        self.attn_softcap = self.final_softcap = None
        if gemma:
            self.gemma_config(gemma, layers, rope)
        tied = c.get("tie_word_embeddings", gemma > 0)  # Gemma configs tie by default
        self.lm_head = self.w["model.embed_tokens.weight"] if tied else self.w["lm_head.weight"]

    def gemma_config(self, gemma, layers, rope):
        c = self.cfg
        # Stored norm weights are offsets: every norm (q/k norms and the final one too) scales by
        # 1 + weight. Embeddings are scaled by sqrt(hidden); transformers rounds that to the weight
        # dtype (exact for hidden 64) and this runs in float64.
        self.norm_offset = 1.0
        self.embedding_multiplier = math.sqrt(c["hidden_size"])
        # Gemma 2 and 3 read hidden_activation only. transformers versions disagree on Gemma 1
        # (hidden_act or hidden_activation first); the models were trained with the tanh GELU, so
        # hidden_activation counts, else hidden_act, whose "gelu" in the first Gemma 1 configs meant
        # the approximation too.
        act = c.get("hidden_activation")
        if gemma == 1 and act is None:
            act = {"gelu": "gelu_pytorch_tanh"}.get(c.get("hidden_act"), c.get("hidden_act"))
        self.act = ACTIVATIONS[act or "gelu_pytorch_tanh"]
        if gemma == 1:
            return
        self.sandwich = True
        self.attention_scale = c.get("query_pre_attn_scalar", 256) ** -0.5
        if gemma == 2:  # Gemma2Config's defaults
            self.attn_softcap = c.get("attn_logit_softcapping", 50.0)
            self.final_softcap = c.get("final_logit_softcapping", 30.0)
        else:
            if c.get("attn_logit_softcapping") is not None:  # Gemma3Attention stores it but never applies it
                sys.exit("config.json: Gemma 3 with attn_logit_softcapping, which transformers ignores")
            self.final_softcap = c.get("final_logit_softcapping")
        # Layer i slides when (i + 1) % pattern != 0 (pattern 2 in Gemma 2, sliding_window_pattern,
        # default 6, in Gemma 3), unless config.json lists layer_types.
        pattern = 2 if gemma == 2 else c.get("sliding_window_pattern", 6)
        types = c.get("layer_types") or ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                         for i in range(layers)]
        assert len(types) == layers and set(types) <= {"sliding_attention", "full_attention"}, types
        window = c.get("sliding_window", 4096)
        self.layer_window = [window if t == "sliding_attention" else None for t in types]
        if gemma == 3:  # sliding layers rotate with rope_local_base_freq and no scaling
            local = rope_inv_freq({"rope_theta": c.get("rope_local_base_freq", 10000.0)}, self.head_dim)
            self.layer_rope = [local if t == "sliding_attention" else rope for t in types]

    def moe_config(self, arch, layers):
        """Which layers route their MLP through experts, and how (transformers' Mixtral and Qwen-MoE)."""
        c = self.cfg
        self.routed = [False] * layers
        # The smallest gap between a token's last chosen expert's probability and the next one's: a
        # near-tie could route the float32 engine differently, and then its logits would differ by more
        # than rounding (main() refuses to write such a reference).
        self.min_router_gap = math.inf
        if arch == "MixtralForCausalLM":
            self.routed = [True] * layers
            self.experts_per_token, self.normalize_routing = c["num_experts_per_tok"], True
            self.moe_names = ("block_sparse_moe.", "w1", "w3", "w2")
        elif arch in QWEN_MOE:
            step, dense = c.get("decoder_sparse_step", 1), c.get("mlp_only_layers") or []
            self.routed = [i not in dense and (i + 1) % step == 0 for i in range(layers)]
            self.experts_per_token, self.normalize_routing = c["num_experts_per_tok"], c.get("norm_topk_prob", False)
            self.moe_names = ("mlp.", "gate_proj", "up_proj", "down_proj")

    def swiglu(self, h, prefix, names=("gate_proj", "up_proj", "down_proj")):
        w = self.w
        gate, up = h @ w[prefix + names[0] + ".weight"].T, h @ w[prefix + names[1] + ".weight"].T
        return (self.act(gate) * up) @ w[prefix + names[2] + ".weight"].T

    def moe_mlp(self, h, p):
        """Token by token: the softmax of the router's logits, the top experts_per_token experts (their
        weights renormalized to sum 1 where the model does), the weighted sum of their outputs, plus
        Qwen2-MoE's shared expert times sigmoid(its gate)."""
        block, *names = self.moe_names
        block = p + block
        probs = (h @ self.w[block + "gate.weight"].T).softmax(-1)
        out = torch.zeros_like(h)
        for t in range(h.shape[0]):
            if self.experts_per_token < probs.shape[1]:
                ranked = probs[t].topk(self.experts_per_token + 1).values
                self.min_router_gap = min(self.min_router_gap, float(ranked[-2] - ranked[-1]))
            weights, experts = probs[t].topk(self.experts_per_token)
            if self.normalize_routing:
                weights = weights / weights.sum()
            for weight, e in zip(weights.tolist(), experts.tolist()):
                out[t] += weight * self.swiglu(h[t], f"{block}experts.{e}.", names)
        if block + "shared_expert_gate.weight" in self.w:
            gate = torch.sigmoid(h @ self.w[block + "shared_expert_gate.weight"].T)
            out = out + gate * self.swiglu(h, block + "shared_expert.")
        return out

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
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (weight + self.norm_offset)

    @staticmethod
    def rope(x, positions, rope):
        inv_freq, mscale = rope
        angles = positions[:, None].double() * inv_freq[None, :]
        cos = torch.cat([angles.cos(), angles.cos()], -1)[:, None, :] * mscale
        sin = torch.cat([angles.sin(), angles.sin()], -1)[:, None, :] * mscale
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def final_hidden(self, ids):  # after the last norm: what the LM head reads, and embeddings
        w, n = self.w, len(ids)
        x = w["model.embed_tokens.weight"][torch.tensor(ids)] * self.embedding_multiplier
        positions = torch.arange(n)
        causal = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            mask, window = causal, self.layer_window[i]
            if window:  # query q sees keys k with q - window < k <= q
                mask = mask + torch.full((n, n), float("-inf"), dtype=torch.float64).tril(-window)
            h = self.norm(x, w[p + "input_layernorm.weight"])

            def proj(name):
                out = h @ w[p + f"self_attn.{name}.weight"].T
                bias = w.get(p + f"self_attn.{name}.bias")
                return out if bias is None else out + bias

            def head_norm(x, name):  # Qwen3: RMSNorm over each head's vector, before RoPE
                weight = w.get(p + f"self_attn.{name}.weight")
                return x if weight is None else self.norm(x, weight)

            rope = self.layer_rope[i]
            q = self.rope(head_norm(proj("q_proj").view(n, self.heads, self.head_dim), "q_norm"), positions, rope)
            k = self.rope(head_norm(proj("k_proj").view(n, self.kv_heads, self.head_dim), "k_norm"), positions, rope)
            v = proj("v_proj").view(n, self.kv_heads, self.head_dim)
            group = self.heads // self.kv_heads
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", q, k) * self.attention_scale
            if self.attn_softcap:  # Gemma 2: capped before the mask
                scores = self.attn_softcap * torch.tanh(scores / self.attn_softcap)
            attn = torch.einsum("hqk,khd->qhd", (scores + mask).softmax(-1), v).reshape(n, -1)
            attn = attn @ w[p + "self_attn.o_proj.weight"].T
            if self.sandwich:  # Gemma 2 and 3: the attention output is normed before the residual add
                x = x + self.norm(attn, w[p + "post_attention_layernorm.weight"])
                h = self.norm(x, w[p + "pre_feedforward_layernorm.weight"])
            else:
                x = x + attn * self.residual_multiplier
                h = self.norm(x, w[p + "post_attention_layernorm.weight"])
            mlp = self.moe_mlp(h, p) if self.routed[i] else self.swiglu(h, p + "mlp.")
            if self.sandwich:
                x = x + self.norm(mlp, w[p + "post_feedforward_layernorm.weight"])
            else:
                x = x + mlp * self.residual_multiplier
        return self.norm(x, w["model.norm.weight"])

    def logits(self, ids):
        x = self.final_hidden(ids)
        logits = (x[-1] @ self.lm_head.T) / self.logits_scaling
        if self.final_softcap:  # Gemma 2
            logits = self.final_softcap * torch.tanh(logits / self.final_softcap)
        return logits


def encode(tokenizer, text):
    out = subprocess.run(["spm_encode", f"--model={tokenizer}", "--output_format=id"], input=text,
                         capture_output=True, text=True, check=True)
    return [int(t) for t in out.stdout.split()]


def check_transformers(model_dir, prompt_ids, greedy):
    import transformers  # only on machines that have it
    # Eager: the SDPA path drops Gemma 2's attention soft-capping without a word.
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float64,
                                                              attn_implementation="eager")
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
    ap.add_argument("--lora", type=Path, help="a PEFT LoRA adapter directory, merged into the weights")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    ref = Reference(args.model_dir, args.lora)
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
    if ref.min_router_gap < 1e-4:
        sys.exit(f"{args.model_dir}: two experts' router probabilities are {ref.min_router_gap:.2e} apart: "
                 "the float32 engine may route that token the other way; use another seed or prompt")
    if args.check_transformers:
        check_transformers(args.model_dir, prompt_ids, greedy)

    out = {
        "reference": f"scripts/reference/llama_reference.py, PyTorch {torch.__version__}, float64, no KV cache",
        "prompt": args.prompt,
        "prompt_ids": prompt_ids,
        "greedy_ids": greedy,
        "min_top2_gap": min_gap,
        "step_logits": step_logits,
        # The prompt's last token's final hidden state: what an embedding request returns.
        "prompt_final_hidden": [float(f"{v:.7g}") for v in ref.final_hidden(prompt_ids)[-1].tolist()],
    }
    (args.out or args.model_dir / "expected.json").write_text(json.dumps(out, separators=(",", ":")) + "\n")
    router = f", smallest router gap {ref.min_router_gap:.4f}" if ref.min_router_gap < math.inf else ""
    print(f"{args.model_dir}: prompt {len(prompt_ids)} tokens, greedy {greedy}, smallest top-2 gap {min_gap:.4f}{router}")


if __name__ == "__main__":
    main()
