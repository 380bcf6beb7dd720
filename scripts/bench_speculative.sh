#!/usr/bin/env bash
# bench_speculative.sh: what speculative decoding by prompt lookup (--num-speculative-tokens) does
# for offline generation, run as a ratio against the same generation without it, in the same run.
# For each prompt (one that repeats itself, one that does not) it runs kvserve-offline with K = 0
# and K = $DRAFTS (default 4), $REPEATS times each (default 5), and prints the engine steps, the
# draft tokens accepted / checked, and the median time and its ratio to K = 0's. The outputs are
# the same in both (engine_tests check it), so only steps and time can change.
# Uses $OFFLINE (default $BUILD/server/kvserve-offline, $BUILD default build/cpu; on the GPU machine
# the bundle's .gpu/bin/kvserve-offline), the model $MODEL (default the tiny Llama under tests/data)
# on $BACKEND (default cpu), $REQUESTS requests (default 1) of $TOKENS tokens (default 400).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build/cpu}
offline=${OFFLINE:-$build/server/kvserve-offline}
model=${MODEL:-tests/data/models/tiny-llama}
backend=${BACKEND:-cpu}
drafts=${DRAFTS:-4}
repeats=${REPEATS:-5}
requests=${REQUESTS:-1}
tokens=${TOKENS:-400}

run() {  # prompt drafts -> "steps draft accepted time" of the median-time run
  local prompt=$1 k=$2
  for ((i = 0; i < repeats; ++i)); do
    "$offline" --quiet --model "$model" --backend "$backend" --ignore-eos \
      -n "$requests" --max-tokens "$tokens" --prompt "$prompt" --num-speculative-tokens "$k" |
      sed -n 's/.*steps=\([0-9]*\).*draft_tokens=\([0-9]*\) accepted_draft_tokens=\([0-9]*\).*time=\([0-9.]*\)s.*/\1 \2 \3 \4/p'
  done | sort -g -k4 | sed -n "$(((repeats + 1) / 2))p"
}

printf '%-34s %3s %6s %14s %9s %8s\n' prompt K steps accepted/draft time ratio
for prompt in "a b a b a b a b a b a b" "Once upon a time"; do
  read -r base_steps _ _ base_time < <(run "$prompt" 0)
  if [[ ${base_steps:-0} == 0 ]]; then
    echo "bench_speculative.sh: nothing generated; is prompt + TOKENS within the model's length?" >&2
    exit 1
  fi
  printf '%-34s %3d %6d %14s %8.3fs %7.2fx\n' "\"$prompt\"" 0 "$base_steps" - "$base_time" 1
  read -r steps draft accepted time < <(run "$prompt" "$drafts")
  printf '%-34s %3d %6d %14s %8.3fs %7.2fx\n' "\"$prompt\"" "$drafts" "$steps" "$accepted/$draft" "$time" \
    "$(awk -v a="$time" -v b="$base_time" 'BEGIN { print a / b }')"
done
