#!/usr/bin/python3
"""make_tiny_model.py: writes a tiny, seeded-random Hugging Face model directory (config.json,
model.safetensors, tokenizer.model) for tests. Needs only numpy, so it runs on a bare machine.

The same arguments always give byte-identical files: every tensor draws from its own generator,
seeded from --seed and the tensor's name, and the safetensors file is written by hand in a fixed
layout (tensors sorted by name, header padded with spaces to a multiple of 8).

Weights are scaled so the random model's greedy output depends on its input and does not collapse
into one repeated token: projections ~ N(0, 1/fan_in), norm weights 1 + N(0, 0.1^2) (Gemma's
N(0, 0.1^2): its norms scale by 1 + weight), biases ~ N(0, 0.1^2), embeddings ~ N(0, 1) untied and
N(0, 0.05^2) tied unless --embedding-std says otherwise (see random_tensor).

Example (tests/data/models/README.md lists the committed ones):
    scripts/make_tiny_model.py --out /tmp/m --arch llama --hidden 64 --layers 2 --heads 4 \\
        --intermediate 128 --tie --dtype float16
"""

import argparse
import json
import math
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

from safetensors_file import bfloat16_bits, write_safetensors

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "granite": "GraniteForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
MODEL_TYPES = {"gemma3": "gemma3_text"}  # Gemma 3's text-only model; "gemma3" is the multimodal one
GEMMA = ("gemma", "gemma2", "gemma3")
MOE = ("mixtral", "qwen2_moe", "qwen3_moe")
QWEN_MOE = ("qwen2_moe", "qwen3_moe")
SAFETENSORS_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
TRANSFORMERS_VERSION = "4.46.0"
QWEN3_TRANSFORMERS_VERSION = "4.51.0"  # the first with Qwen3
GEMMA3_TRANSFORMERS_VERSION = "4.50.0"  # the first with Gemma 3
TIED_EMBEDDING_STD = 0.05


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, help="default: --heads (no grouped-query attention)")
    p.add_argument("--head-dim", type=int, help="default: hidden / heads (written to config.json only if given)")
    p.add_argument("--intermediate", type=int, required=True)
    p.add_argument("--vocab", type=int, default=512, help="must equal the tokenizer's vocabulary size")
    p.add_argument("--tie", action=argparse.BooleanOptionalAction, default=False,
                   help="tie lm_head to embed_tokens (no lm_head.weight written)")
    p.add_argument("--dtype", choices=sorted(SAFETENSORS_DTYPE), default="float32")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--llama3-rope-scaling", type=float, metavar="FACTOR",
                   help="add Llama 3 rope_scaling with this factor (low 1, high 4, "
                        "original_max_position_embeddings = max_pos / FACTOR)")
    p.add_argument("--sliding-window", type=int,
                   help="mistral, phi3, gemma2 and gemma3 only (gemma2 and gemma3 need it): sliding_window")
    p.add_argument("--longrope-original", type=int, metavar="LENGTH",
                   help="phi3 only: longrope rope_scaling (seeded short and long factors in [1, 4)) with "
                        "original_max_position_embeddings LENGTH")
    p.add_argument("--attention-bias", action="store_true", help="qwen3 only: q/k/v biases (attention_bias)")
    p.add_argument("--granite-multipliers", type=float, nargs=4, metavar=("EMBEDDING", "ATTENTION", "RESIDUAL", "LOGITS"),
                   help="granite only: embedding_multiplier, attention_multiplier, residual_multiplier, logits_scaling")
    p.add_argument("--embedding-std", type=float,
                   help="standard deviation of embed_tokens (default 1 untied, 0.05 tied)")
    p.add_argument("--query-pre-attn-scalar", type=int,
                   help="gemma2 and gemma3 only: attention scale query_pre_attn_scalar ** -0.5 (default: head_dim)")
    p.add_argument("--softcapping", type=float, nargs=2, metavar=("ATTENTION", "FINAL"),
                   help="gemma2 only: attn_logit_softcapping and final_logit_softcapping (default Gemma2Config's 50, 30)")
    p.add_argument("--rope-local-base-freq", type=float,
                   help="gemma3 only: rope_local_base_freq, the sliding layers' RoPE base (default 10000)")
    p.add_argument("--linear-rope-scaling", type=float, metavar="FACTOR",
                   help="gemma3 only: rope_scaling {rope_type linear, factor FACTOR} (its full-attention layers')")
    p.add_argument("--sliding-window-pattern", type=int,
                   help="gemma3 only: every N-th layer is full attention, the others sliding (default 6)")
    p.add_argument("--layer-types", action="store_true",
                   help="gemma3 only: also write the layer_types list that --sliding-window-pattern implies")
    p.add_argument("--experts", type=int, help="mixtral, qwen2_moe and qwen3_moe (needed): experts per routed layer")
    p.add_argument("--experts-per-token", type=int, help="the MoE models (needed): num_experts_per_tok")
    p.add_argument("--moe-intermediate", type=int,
                   help="qwen2_moe and qwen3_moe (needed): moe_intermediate_size, each expert's (mixtral's "
                        "experts are --intermediate wide; Qwen's dense layers are)")
    p.add_argument("--shared-expert-intermediate", type=int,
                   help="qwen2_moe (needed): shared_expert_intermediate_size")
    p.add_argument("--norm-topk-prob", action="store_true",
                   help="qwen2_moe and qwen3_moe: renormalize the chosen experts' weights (norm_topk_prob)")
    p.add_argument("--decoder-sparse-step", type=int, default=1,
                   help="qwen2_moe and qwen3_moe: layer i is routed when (i + 1) %% N == 0 (decoder_sparse_step)")
    p.add_argument("--mlp-only-layers", type=int, nargs="*", default=[],
                   help="qwen2_moe and qwen3_moe: layers with the dense MLP (mlp_only_layers)")
    p.add_argument("--max-pos", type=int, default=1024)
    p.add_argument("--rms-norm-eps", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", type=Path, default=REPO / "tests/data/tokenizer/tokenizer.model")
    args = p.parse_args(argv)

    args.kv_heads = args.kv_heads or args.heads
    for name in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab", "max_pos"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.heads % args.kv_heads:
        p.error("--heads must be a multiple of --kv-heads")
    if args.head_dim is None and args.hidden % args.heads:
        p.error("--hidden must be divisible by --heads (or give --head-dim)")
    if (args.head_dim or args.hidden // args.heads) % 2:
        p.error("the head dimension must be even (RoPE rotates pairs)")
    if args.attention_bias and args.arch not in ("qwen3", "qwen3_moe"):
        sys.exit("--attention-bias is for --arch qwen3 and qwen3_moe (qwen2 and qwen2_moe always have q/k/v "
                 "biases, the others none)")
    if args.sliding_window is not None and args.arch not in ("mistral", "mixtral", "phi3", "gemma2", "gemma3"):
        p.error("--sliding-window is a mistral, mixtral, phi3, gemma2 and gemma3 option")
    if args.sliding_window is None and args.arch in ("gemma2", "gemma3"):
        p.error(f"--arch {args.arch} needs --sliding-window")
    if args.embedding_std is not None and args.embedding_std <= 0:
        p.error("--embedding-std must be positive")
    if args.query_pre_attn_scalar is not None and args.arch not in ("gemma2", "gemma3"):
        p.error("--query-pre-attn-scalar is a gemma2 and gemma3 option")
    if args.softcapping is not None and args.arch != "gemma2":
        p.error("--softcapping is a gemma2 option")
    if args.softcapping is not None and min(args.softcapping) <= 0:
        p.error("--softcapping values must be positive")
    for name in ("rope_local_base_freq", "linear_rope_scaling", "sliding_window_pattern"):
        if getattr(args, name) is not None and args.arch != "gemma3":
            p.error(f"--{name.replace('_', '-')} is a gemma3 option")
    if args.layer_types and args.arch != "gemma3":
        p.error("--layer-types is a gemma3 option")
    for name in ("query_pre_attn_scalar", "rope_local_base_freq", "linear_rope_scaling", "sliding_window_pattern"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.longrope_original is not None and args.arch != "phi3":
        p.error("--longrope-original is a phi3 option")
    if (args.granite_multipliers is not None) != (args.arch == "granite"):
        p.error("--granite-multipliers goes with --arch granite, and granite needs it")
    if args.arch in MOE:
        if not args.experts or not args.experts_per_token or args.experts_per_token > args.experts:
            p.error(f"--arch {args.arch} needs --experts and --experts-per-token (at most --experts)")
        if args.arch in QWEN_MOE and not args.moe_intermediate:
            p.error(f"--arch {args.arch} needs --moe-intermediate")
        if (args.arch == "qwen2_moe") != (args.shared_expert_intermediate is not None):
            p.error("--shared-expert-intermediate goes with --arch qwen2_moe, and qwen2_moe needs it")
    elif args.experts or args.experts_per_token:
        p.error("--experts and --experts-per-token are MoE options")
    if args.arch not in QWEN_MOE and (args.moe_intermediate or args.norm_topk_prob or args.mlp_only_layers
                                      or args.decoder_sparse_step != 1):
        p.error("--moe-intermediate, --norm-topk-prob, --decoder-sparse-step and --mlp-only-layers are "
                "qwen2_moe and qwen3_moe options")
    return args


def routed(args, layer):
    """Whether `layer`'s MLP is a mixture of experts (transformers' rule for Qwen-MoE; Mixtral's all)."""
    if args.arch == "mixtral":
        return True
    return args.arch in QWEN_MOE and layer not in args.mlp_only_layers and (layer + 1) % args.decoder_sparse_step == 0


def moe_shapes(args, p):
    """A routed layer's MLP tensors: router, experts (Mixtral's w1 / w3 / w2 are gate / up / down), and
    Qwen2-MoE's shared expert with its gate."""
    h = args.hidden
    if args.arch == "mixtral":
        block, names, inter = p + "block_sparse_moe.", ("w1", "w3", "w2"), args.intermediate
    else:
        block, names, inter = p + "mlp.", ("gate_proj", "up_proj", "down_proj"), args.moe_intermediate
    shapes = {block + "gate.weight": (args.experts, h)}
    for e in range(args.experts):
        ep = f"{block}experts.{e}."
        shapes.update({ep + names[0] + ".weight": (inter, h), ep + names[1] + ".weight": (inter, h),
                       ep + names[2] + ".weight": (h, inter)})
    if args.arch == "qwen2_moe":
        s = args.shared_expert_intermediate
        shapes.update({block + "shared_expert.gate_proj.weight": (s, h), block + "shared_expert.up_proj.weight": (s, h),
                       block + "shared_expert.down_proj.weight": (h, s), block + "shared_expert_gate.weight": (1, h)})
    return shapes


def sentencepiece_vocab_size(path):
    """Counts the pieces in a SentencePiece ModelProto (field 1, repeated) without the library."""
    data = path.read_bytes()

    def varint(pos):
        value, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, pos

    pos, pieces = 0, 0
    while pos < len(data):
        key, pos = varint(pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = varint(pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 2:
            length, pos = varint(pos)
            pos += length
        elif wire_type == 5:
            pos += 4
        else:
            sys.exit(f"{path}: not a SentencePiece model (wire type {wire_type})")
        pieces += field == 1
    return pieces


def tensor_shapes(args):
    head_dim = args.head_dim or args.hidden // args.heads
    h, q, kv, inter = args.hidden, args.heads * head_dim, args.kv_heads * head_dim, args.intermediate
    shapes = {"model.embed_tokens.weight": (args.vocab, h), "model.norm.weight": (h,)}
    if not args.tie:
        shapes["lm_head.weight"] = (args.vocab, h)
    for i in range(args.layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "self_attn.o_proj.weight": (h, q),
            p + "post_attention_layernorm.weight": (h,),
        })
        if args.arch == "phi3":  # q|k|v and gate|up each stored as one tensor, rows one after another
            shapes.update({p + "self_attn.qkv_proj.weight": (q + 2 * kv, h), p + "mlp.gate_up_proj.weight": (2 * inter, h)})
        else:
            shapes.update({
                p + "self_attn.q_proj.weight": (q, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
            })
        if routed(args, i):
            shapes.update(moe_shapes(args, p))
        else:
            shapes[p + "mlp.down_proj.weight"] = (h, inter)
            if args.arch != "phi3":
                shapes.update({p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h)})
        if args.arch in ("qwen2", "qwen2_moe") or args.attention_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,)})
        if args.arch in ("gemma2", "gemma3"):  # a norm after attention and one on each side of the MLP
            shapes.update({p + "pre_feedforward_layernorm.weight": (h,), p + "post_feedforward_layernorm.weight": (h,)})
        if args.arch in ("qwen3", "qwen3_moe", "gemma3"):  # an RMSNorm over each head's q and k
            shapes.update({p + "self_attn.q_norm.weight": (head_dim,), p + "self_attn.k_norm.weight": (head_dim,)})
    return shapes


def random_tensor(name, shape, seed, embedding_std, norm_center):
    # One generator per tensor, so a tensor's values do not depend on which others exist.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name.endswith("norm.weight"):
        return norm_center + 0.1 * rng.standard_normal(shape)
    if name.endswith(".bias"):
        return 0.1 * rng.standard_normal(shape)
    if name == "model.embed_tokens.weight":
        # Untied, N(0, 1) embeddings give each token a strong random successor through lm_head.
        # Tied, the same strength would make the last token's own embedding win every argmax and
        # the model would repeat its input forever, so the layers' output must dominate instead.
        return rng.standard_normal(shape) * embedding_std
    return rng.standard_normal(shape) / math.sqrt(shape[1])  # [out, in]: fan_in is the last dim


def encode(values, dtype):
    if dtype == "float32":
        return values.astype("<f4").tobytes()
    if dtype == "float16":
        return values.astype("<f2").tobytes()  # numpy rounds to nearest even
    return bfloat16_bits(values.astype(np.float32)).tobytes()


def write_model_weights(path, tensors, dtype):
    """tensors: {name: float array}, all stored as `dtype`."""
    write_safetensors(path, {name: (SAFETENSORS_DTYPE[dtype], t.shape, encode(t, dtype)) for name, t in tensors.items()})


def config_json(args):
    config = {
        "architectures": [ARCHITECTURES[args.arch]],
        "model_type": MODEL_TYPES.get(args.arch, args.arch),
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": args.rms_norm_eps,
        "rope_theta": args.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": args.max_pos,
        "tie_word_embeddings": args.tie,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": args.dtype,
        "dtype": args.dtype,
        "transformers_version": {"qwen3": QWEN3_TRANSFORMERS_VERSION, "qwen3_moe": QWEN3_TRANSFORMERS_VERSION,
                                 "gemma3": GEMMA3_TRANSFORMERS_VERSION}.get(args.arch, TRANSFORMERS_VERSION),
    }
    if args.head_dim is not None:
        config["head_dim"] = args.head_dim
    elif args.arch in ("qwen3", "qwen3_moe"):  # Qwen3Config's default is 128, not hidden / heads
        config["head_dim"] = args.hidden // args.heads
    if args.llama3_rope_scaling is not None:
        config["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": args.llama3_rope_scaling,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": int(args.max_pos / args.llama3_rope_scaling),
        }
    if args.arch in ("mistral", "mixtral", "phi3"):
        config["sliding_window"] = args.sliding_window
    if args.arch == "phi3":
        config["original_max_position_embeddings"] = args.longrope_original or args.max_pos
        if args.longrope_original:
            half = (args.head_dim or args.hidden // args.heads) // 2
            rng = np.random.default_rng([args.seed, zlib.crc32(b"longrope")])
            config["rope_scaling"] = {"type": "longrope",
                                      "short_factor": [round(float(x), 4) for x in 1 + 3 * rng.random(half)],
                                      "long_factor": [round(float(x), 4) for x in 1 + 3 * rng.random(half)]}
        # Phi3Config's default pad id (32000) lies outside a tiny vocabulary, and transformers builds
        # its embedding with that padding index.
        config["pad_token_id"] = None
    if args.arch == "granite":
        config.update(zip(("embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling"),
                          args.granite_multipliers))
        config.update(attention_bias=False, mlp_bias=False)
    if args.arch in ("qwen2", "qwen3") + QWEN_MOE:
        config["use_sliding_window"] = False
    if args.arch in ("qwen3", "qwen3_moe"):
        config["attention_bias"] = args.attention_bias
    if args.arch == "mixtral":
        config.update(num_local_experts=args.experts, num_experts_per_tok=args.experts_per_token)
    if args.arch in QWEN_MOE:
        config.update(num_experts=args.experts, num_experts_per_tok=args.experts_per_token,
                      moe_intermediate_size=args.moe_intermediate, norm_topk_prob=args.norm_topk_prob,
                      decoder_sparse_step=args.decoder_sparse_step, mlp_only_layers=args.mlp_only_layers)
    if args.arch == "qwen2_moe":
        config["shared_expert_intermediate_size"] = args.shared_expert_intermediate
    if args.arch in GEMMA:
        head_dim = args.head_dim or args.hidden // args.heads
        # Gemma configs default head_dim to 256, bos/eos to 2/1 (written above) and tying to true.
        # Gemma 2 and 3 read the activation from hidden_activation; Gemma 1 from hidden_act in 4.38
        # and again in later releases, from hidden_activation in between: both are written, alike.
        config.update(head_dim=head_dim, hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
                      attention_bias=False, pad_token_id=0)
    if args.arch in ("gemma2", "gemma3"):
        config["query_pre_attn_scalar"] = args.query_pre_attn_scalar or head_dim
        config["sliding_window"] = args.sliding_window
        config["attn_logit_softcapping"], config["final_logit_softcapping"] = (
            (args.softcapping or (50.0, 30.0)) if args.arch == "gemma2" else (None, None))
    if args.arch == "gemma3":
        pattern = args.sliding_window_pattern or 6
        config.update(rope_local_base_freq=args.rope_local_base_freq or 10000.0, sliding_window_pattern=pattern)
        if args.linear_rope_scaling is not None:
            config["rope_scaling"] = {"rope_type": "linear", "factor": args.linear_rope_scaling}
        if args.layer_types:
            config["layer_types"] = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                     for i in range(args.layers)]
    return config


def main(argv):
    args = parse_args(argv)
    tokenizer_vocab = sentencepiece_vocab_size(args.tokenizer)
    if tokenizer_vocab != args.vocab:
        sys.exit(f"--vocab {args.vocab} does not match {args.tokenizer} ({tokenizer_vocab} pieces)")
    args.out.mkdir(parents=True, exist_ok=True)
    embedding_std = args.embedding_std or (TIED_EMBEDDING_STD if args.tie else 1.0)
    norm_center = 0.0 if args.arch in GEMMA else 1.0
    tensors = {name: random_tensor(name, shape, args.seed, embedding_std, norm_center)
               for name, shape in tensor_shapes(args).items()}
    write_model_weights(args.out / "model.safetensors", tensors, args.dtype)
    (args.out / "config.json").write_text(json.dumps(config_json(args), indent=2, sort_keys=True) + "\n")
    shutil.copyfile(args.tokenizer, args.out / "tokenizer.model")
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"{args.out}: {ARCHITECTURES[args.arch]}, {sum(t.size for t in tensors.values())} parameters, "
          f"{total} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
