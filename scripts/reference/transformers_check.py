#!/usr/bin/env python3
"""transformers_check.py MODEL_DIR...: checks each tiny model's expected.json (written by
llama_reference.py, our own float64 implementation) against Hugging Face transformers' model class
on the same weights: the greedy tokens must be equal and every step's logits within 1e-5 (both float64;
expected.json keeps 7 significant digits). Needs transformers and torch (the GPU machine has them; runs on CPU or GPU).

With cuda_backend_tests comparing the CUDA backend with expected.json, this closes the chain
CUDA backend ~ expected.json == transformers. Prompt ids come from expected.json, so no tokenizer
tool is needed.
"""
import json
import sys
from pathlib import Path

import torch
import transformers


def check(model_dir: Path) -> bool:
    exp = json.loads((model_dir / "expected.json").read_text())
    prompt, greedy, step_logits = exp["prompt_ids"], exp["greedy_ids"], exp["step_logits"]
    # Eager: the SDPA path drops Gemma 2's attention soft-capping without a word.
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64,
                                                              attn_implementation="eager")
    model.eval()
    ids = list(prompt)
    worst = 0.0
    with torch.no_grad():
        for step, want in enumerate(greedy):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ref = torch.tensor(step_logits[step], dtype=torch.float64)
            worst = max(worst, float((logits - ref).abs().max()))
            got = int(torch.argmax(logits))
            if got != want:
                print(f"{model_dir.name}: step {step}: transformers picks {got}, expected.json {want}")
                return False
            ids.append(want)
    # expected.json keeps 7 significant digits: 1e-5 covers that rounding at magnitudes up to ~10.
    ok = worst < 1e-5
    print(f"{model_dir.name}: transformers {transformers.__version__}: {len(greedy)} greedy tokens equal, "
          f"max logit difference {worst:.2e} {'OK' if ok else 'TOO LARGE'}")
    return ok


def main():
    dirs = [Path(a) for a in sys.argv[1:]]
    if not dirs:
        sys.exit(__doc__)
    results = []
    for d in dirs:  # one model that transformers cannot even build must not hide the others' results
        try:
            results.append(check(d))
        except Exception as e:  # noqa: BLE001 - reported, and the run fails
            print(f"{d.name}: transformers failed: {type(e).__name__}: {e}")
            results.append(False)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
