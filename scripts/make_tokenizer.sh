#!/usr/bin/env bash
# make_tokenizer.sh: trains the tiny SentencePiece tokenizer that the test models use, from the
# fixed corpus in tests/data/tokenizer/corpus.txt, with Debian's spm_train. The result is committed
# (tests/data/tokenizer/tokenizer.model); rerun only to change it.
# Llama-style settings: BPE, byte fallback (any UTF-8 text encodes), digits split, no normalization,
# unk=0 bos=1 eos=2, no pad.
set -euo pipefail
cd "$(dirname "$0")/../tests/data/tokenizer"
spm_train --input=corpus.txt --model_prefix=tokenizer --vocab_size=512 --model_type=bpe \
  --byte_fallback=true --split_digits=true --character_coverage=1.0 \
  --normalization_rule_name=identity --remove_extra_whitespaces=false \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=1 --minloglevel=1
rm -f tokenizer.vocab
ls -l tokenizer.model
