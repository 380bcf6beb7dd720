#!/usr/bin/env python3
"""The peer of issue 6: Hugging Face transformers generating on the GPU with the same model shape
and the same weights as `kvserve --model random:<shape>[:seed]`, the same prompt lengths and batch
sizes, with its best available settings (bf16, SDPA attention, static KV cache, transformers'
default automatic compilation of the decode step).

Weights: engine/random_model.h defines every weight as a function of (seed, tensor id, element
index) through splitmix64; this file computes the same function with 64-bit integer tensor ops on
the GPU and rounds to bf16, so the peer holds the weights kvserve's CUDA backend holds (kvserve
generates them on the GPU with the same function, kernels/seeded_fill.h). `--weights hf-init` uses
transformers' own initialisation instead: the timings do not depend on weight values, only on
shapes. Prompts are random token ids in [3, vocab) of the same lengths kvserve-bench sends (not the
same ids: kvserve-bench draws them with std::mt19937_64; with random weights the ids change no
timing).

Figures per (batch, input, output):
  ttft_ms            one generate(max_new_tokens=1) of the whole batch: prefill + first token
  total_ms           one generate(max_new_tokens=output, no EOS) of the whole batch
  output_tokens_per_s  batch * output / total
  decode_step_ms     (total - ttft) / (output - 1)
after one untimed warm-up generate of the same shape (which also pays for compilation).

Runs only where transformers is installed (the GPU machine); CI never imports it. --self-check
checks the weight function against the values tests/engine/random_model_test.cc expects, with torch
only (CPU is fine), and exits.

  python3 bench/peer_transformers.py --shape llama3-8b --batch-sizes 1,16,64,256 \
      --lengths 128/128,512/256,2048/128 --json out/peer.json
"""

import argparse
import json
import math
import struct
import sys
import time

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
                      rope_factor=8.0, rms_norm_eps=1e-5, max_position_embeddings=8192),
    "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                        rope_factor=32.0, rms_norm_eps=1e-5, max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, head_dim=16, vocab_size=512, tie_word_embeddings=True, rope_factor=None,
                 rms_norm_eps=1e-6, max_position_embeddings=1024),
}

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
C1 = 0xBF58476D1CE4E5B9
C2 = 0x94D049BB133111EB
LAYER_TENSORS = {
    "input_layernorm.weight": 0, "self_attn.q_proj.weight": 1, "self_attn.k_proj.weight": 2,
    "self_attn.v_proj.weight": 3, "self_attn.o_proj.weight": 4, "post_attention_layernorm.weight": 5,
    "mlp.gate_proj.weight": 6, "mlp.up_proj.weight": 7, "mlp.down_proj.weight": 8,
}
SMALL = 0.02


# ---- the weight function, in plain Python integers (the definition) ----

def mix_int(z):
    z &= MASK64
    z = ((z ^ (z >> 30)) * C1) & MASK64
    z = ((z ^ (z >> 27)) * C2) & MASK64
    return z ^ (z >> 31)


def tensor_key(seed, tensor_id):
    return mix_int(seed ^ ((GOLDEN * (tensor_id + 1)) & MASK64))


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def scale_for(std):
    return f32(std * math.sqrt(3.0) / 65536.0)


def weight_int(seed, tensor_id, index, mean, std):
    h = mix_int(tensor_key(seed, tensor_id) + index * GOLDEN)
    n = sum((h >> s) & 0xFFFF for s in (0, 16, 32, 48)) - 131070
    v = f32(f32(float(n)) * scale_for(std))
    return v if mean == 0 else f32(f32(mean) + v)


# ---- the same function on torch tensors ----

def s64(u):
    """An unsigned 64-bit constant as the int64 with the same bits."""
    u &= MASK64
    return u - (1 << 64) if u >= 1 << 63 else u


def lsr(torch, x, s):
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def weights_torch(torch, seed, tensor_id, start, count, mean, std, device):
    """float32 values of elements [start, start + count) of a tensor. int64 arithmetic wraps on CPU and CUDA."""
    idx = torch.arange(start, start + count, dtype=torch.int64, device=device)
    z = idx * s64(GOLDEN) + s64(tensor_key(seed, tensor_id))
    z = (z ^ lsr(torch, z, 30)) * s64(C1)
    z = (z ^ lsr(torch, z, 27)) * s64(C2)
    z = z ^ lsr(torch, z, 31)
    n = (z & 0xFFFF) + (lsr(torch, z, 16) & 0xFFFF) + (lsr(torch, z, 32) & 0xFFFF) + lsr(torch, z, 48) - 131070
    c = torch.tensor(scale_for(std), dtype=torch.float32, device=device)
    v = n.to(torch.float32) * c
    if mean != 0:
        v = torch.tensor(f32(mean), dtype=torch.float32, device=device) + v
    return v


def tensor_spec(name, shape):
    """(tensor id, mean, std) of a Hugging Face parameter name, as engine/random_model.cc assigns them."""
    if name == "model.embed_tokens.weight":
        return 0, 0.0, SMALL
    if name == "model.norm.weight":
        return 1, 1.0, SMALL
    if name == "lm_head.weight":
        return 2, 0.0, 1.0 / math.sqrt(shape[1])
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] == "model" and parts[1] == "layers":
        layer, rest = int(parts[2]), ".".join(parts[3:])
        if rest in LAYER_TENSORS:
            k = LAYER_TENSORS[rest]
            tid = 16 + 16 * layer + k
            if rest.endswith("layernorm.weight"):
                return tid, 1.0, SMALL
            return tid, 0.0, 1.0 / math.sqrt(shape[1])
    raise ValueError(f"parameter {name} has no counterpart in engine/random_model.cc")


def fill_like_kvserve(torch, model, seed, device):
    chunk = 1 << 26
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied lm_head is listed once, as embed_tokens
            tid, mean, std = tensor_spec(name, tuple(p.shape))
            flat = p.view(-1)
            for start in range(0, flat.numel(), chunk):
                n = min(chunk, flat.numel() - start)
                flat[start:start + n].copy_(weights_torch(torch, seed, tid, start, n, mean, std, device))


def self_check(device):
    import torch
    # The values tests/engine/random_model_test.cc expects of the C++ implementation.
    golden = [((42, 0, 0, 0.0, 0.02), float.fromhex("0x1.a660bep-7")),
              ((42, 0, 1, 0.0, 0.02), float.fromhex("0x1.71b93cp-8")),
              ((42, 17, 1000, 0.0, 0.125), -float.fromhex("0x1.0bd18p-5")),
              ((42, 16, 5, 1.0, 0.02), float.fromhex("0x1.faff1ep-1")),
              ((0, 32, 12345, 0.0, 1 / math.sqrt(128)), -float.fromhex("0x1.7a7e78p-3")),
              ((7, 2, 99, 0.0, 1 / 64), -float.fromhex("0x1.a227aap-8"))]
    bad = 0
    for args, want in golden:
        got_int = weight_int(*args)
        seed, tid, index, mean, std = args
        got_t = weights_torch(torch, seed, tid, index, 1, mean, std, device).item()
        if got_int != want or got_t != want:
            print(f"self-check: {args}: want {want!r}, python {got_int!r}, torch {got_t!r}")
            bad += 1
    # A run of elements, including indices where index * GOLDEN wraps many times.
    for start in (0, 123_456_789, 5_000_000_000):
        vals = weights_torch(torch, 99, 37, start, 64, 0.0, 0.05, device).tolist()
        ref = [weight_int(99, 37, start + i, 0.0, 0.05) for i in range(64)]
        if vals != ref:
            print(f"self-check: torch and python differ for elements {start}..{start + 63}")
            bad += 1
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
             "model.layers.3.self_attn.k_proj.weight", "model.layers.3.post_attention_layernorm.weight"]
    ids = [tensor_spec(n, (8, 4096))[0] for n in names]
    if ids != [0, 1, 2, 16 + 48 + 2, 16 + 48 + 5]:
        print(f"self-check: tensor ids {ids}")
        bad += 1
    print(f"self-check ({device}): {'OK' if bad == 0 else f'{bad} FAILED'}")
    return 0 if bad == 0 else 1


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    ap.add_argument("--seed", type=int, default=0, help="as in random:<shape>:<seed>")
    ap.add_argument("--weights", choices=["kvserve", "hf-init"], default="kvserve",
                    help="kvserve: the same weights as kvserve's random model; hf-init: transformers' init")
    ap.add_argument("--batch-sizes", default="1,16,64,256")
    ap.add_argument("--lengths", default="128/128,512/256,2048/128", help="input/output pairs")
    ap.add_argument("--min-token-id", type=int, default=3)
    ap.add_argument("--compile", choices=["auto", "off"], default="auto",
                    help="auto: transformers' default (compiles the static-cache decode step); off: eager")
    ap.add_argument("--time-budget-s", type=float, default=0,
                    help="start no new configuration after this many seconds (0 = no limit)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--self-check", action="store_true",
                    help="check the weight function (torch only) and exit; no transformers needed")
    a = ap.parse_args(argv)
    try:
        a.batch_sizes = [int(b) for b in a.batch_sizes.split(",")]
        a.lengths = [tuple(int(x) for x in p.split("/")) for p in a.lengths.split(",")]
    except ValueError:
        ap.error("--batch-sizes is N,N,... and --lengths is IN/OUT,IN/OUT,...")
    if any(b < 1 for b in a.batch_sizes) or any(len(p) != 2 or min(p) < 1 for p in a.lengths):
        ap.error("batch sizes and lengths must be positive")
    return a


def build_model(a):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    s = SHAPES[a.shape]
    rope = {"rope_type": "default", "rope_theta": 500000.0 if s["rope_factor"] else 10000.0}
    if s["rope_factor"]:
        rope.update(rope_type="llama3", factor=s["rope_factor"], low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)
    cfg = LlamaConfig(
        vocab_size=s["vocab_size"], hidden_size=s["hidden_size"], intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"], num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"], head_dim=s["head_dim"], rms_norm_eps=s["rms_norm_eps"],
        max_position_embeddings=s["max_position_embeddings"], tie_word_embeddings=s["tie_word_embeddings"],
        rope_parameters=rope, hidden_act="silu", attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=0)
    with torch.device(a.device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    if a.weights == "kvserve":
        fill_like_kvserve(torch, model, a.seed, a.device)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def timed_generate(torch, model, ids, new_tokens, compile_off):
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  cache_implementation="static", attention_mask=torch.ones_like(ids))
    if compile_off:
        kwargs["disable_compile"] = True
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, **kwargs)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    if out.shape[1] != ids.shape[1] + new_tokens:
        raise RuntimeError(f"generate returned {out.shape[1] - ids.shape[1]} tokens, not {new_tokens}")
    return elapsed


def run(a):
    import torch
    import transformers

    t_start = time.perf_counter()
    model = build_model(a)
    load_s = time.perf_counter() - t_start
    vocab = SHAPES[a.shape]["vocab_size"]
    gen = torch.Generator(device="cpu").manual_seed(a.seed)
    results = []
    for in_len, out_len in a.lengths:
        for batch in a.batch_sizes:
            row = dict(batch=batch, input_len=in_len, output_len=out_len)
            if a.time_budget_s and time.perf_counter() - t_start > a.time_budget_s:
                row["skipped"] = "time budget"
                results.append(row)
                continue
            ids = torch.randint(a.min_token_id, vocab, (batch, in_len), generator=gen).to(a.device)
            try:
                timed_generate(torch, model, ids, out_len, a.compile == "off")  # warm-up (and compile)
                ttft = timed_generate(torch, model, ids, 1, a.compile == "off")
                total = timed_generate(torch, model, ids, out_len, a.compile == "off")
                row.update(ttft_ms=ttft * 1e3, total_ms=total * 1e3, output_tokens_per_s=batch * out_len / total,
                           decode_step_ms=(total - ttft) * 1e3 / max(out_len - 1, 1))
            except torch.cuda.OutOfMemoryError as e:
                row["error"] = "out of GPU memory: " + str(e).split("\n")[0][:200]
            except RuntimeError as e:
                row["error"] = str(e).split("\n")[0][:300]
            finally:
                del ids
                torch.cuda.empty_cache()
            results.append(row)
            print_row(row)
    return dict(tool="peer_transformers", shape=a.shape, seed=a.seed, weights=a.weights, compile=a.compile,
                attention="sdpa", cache="static", dtype="bfloat16", torch=torch.__version__,
                transformers=transformers.__version__, device=torch.cuda.get_device_name(0),
                model_build_s=load_s, results=results)


def print_row(r):
    if "ttft_ms" in r:
        print(f"peer  batch {r['batch']:4d}  {r['input_len']:5d}/{r['output_len']:<4d}  TTFT {r['ttft_ms']:9.1f} ms  "
              f"step {r['decode_step_ms']:7.2f} ms  {r['output_tokens_per_s']:9.0f} tok/s", flush=True)
    else:
        print(f"peer  batch {r['batch']:4d}  {r['input_len']:5d}/{r['output_len']:<4d}  "
              f"{r.get('error') or r.get('skipped')}", flush=True)


def main(argv):
    a = parse_args(argv)
    if a.self_check:
        return self_check("cpu" if a.device == "cuda" and not _cuda_available() else a.device)
    report = run(a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def _cuda_available():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
