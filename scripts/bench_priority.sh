#!/usr/bin/env bash
# bench_priority.sh: what --scheduling-policy priority does for interactive traffic while batch
# traffic keeps the server saturated. The same load runs twice against a fresh server each time:
#   fcfs      batch and interactive requests alike (priority 0), first come first served
#   priority  batch at priority 1, interactive at 0 (--scheduling-policy priority)
# Batch: closed loop at --batch-concurrency (far more than --max-num-seqs, so a queue builds up).
# Interactive: one request at a time, started once the queue is full, ending before the batch load.
# Prints the interactive TTFT and the batch throughput under both, and their ratios; the JSON
# reports stay in $OUT.
# Then the bound on waiting (--max-priority-wait): interactive traffic alone saturates the server
# (closed loop at twice --max-num-seqs) while a little batch traffic (priority 1) runs beside it,
# once with no bound (0: strict priority) and once with $BOUND_S (default 5) seconds. Prints the
# batch requests completed and their TTFT, and the interactive TTFT, under both. Uses the binaries of $BUILD (default build/cpu) and, by default, the tiny
# model with a 5 ms step (--debug-step-delay-ms) so that it queues like a real model's server.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build/cpu}
model=${MODEL:-tests/data/models/tiny-llama}
out=${OUT:-bench-priority-out}
port=${PORT:-50093}
server_flags=${SERVER_FLAGS:---max-num-seqs 8 --debug-step-delay-ms 5}
batch_concurrency=${BATCH_CONCURRENCY:-64}
batch_s=${BATCH_S:-30}
interactive_s=${INTERACTIVE_S:-20}
mkdir -p "$out"
# A server left running (this script failing midway) would share the port with the next one.
server=""
trap '[[ -n $server ]] && kill "$server" 2>/dev/null; true' EXIT

run() {  # policy batch-priority interactive-priority
  local policy=$1 batch=$2 interactive=$3
  # shellcheck disable=SC2086
  "$build/server/kvserve" --model "$model" --port "$port" --metrics-port -1 --scheduling-policy "$policy" \
    $server_flags >"$out/server-$policy.log" 2>&1 &
  server=$!
  "$build/bench/kvserve-bench" --target "127.0.0.1:$port" --connect-timeout 30 --concurrency "$batch_concurrency" \
    --duration "$batch_s" --prompt-len 64 --output-len 64 --priority "$batch" --seed 1 \
    --json "$out/batch-$policy.json" >"$out/batch-$policy.txt" &
  local batch_pid=$!
  sleep 4  # the batch load fills the seats and the queue
  "$build/bench/kvserve-bench" --target "127.0.0.1:$port" --concurrency 1 --duration "$interactive_s" \
    --prompt-len 64 --output-len 16 --priority "$interactive" --seed 2 \
    --json "$out/interactive-$policy.json" >"$out/interactive-$policy.txt"
  wait "$batch_pid"
  kill -INT "$server"
  wait "$server" || true
  server=""
}

run fcfs 0 0
run priority 1 0

bound_s=${BOUND_S:-5}
run_bound() {  # max-priority-wait
  local wait_s=$1
  # shellcheck disable=SC2086
  "$build/server/kvserve" --model "$model" --port "$port" --metrics-port -1 --scheduling-policy priority \
    --max-priority-wait "$wait_s" $server_flags >"$out/server-bound-$wait_s.log" 2>&1 &
  server=$!
  # Priority 0, 16 in flight for the 8 seats, for $batch_s s: the seats are never free for priority 1.
  "$build/bench/kvserve-bench" --target "127.0.0.1:$port" --connect-timeout 30 --concurrency 16 \
    --duration "$batch_s" --prompt-len 64 --output-len 64 --priority 0 --seed 3 \
    --json "$out/saturating-bound-$wait_s.json" >"$out/saturating-bound-$wait_s.txt" &
  local saturating=$!
  sleep 1
  # Priority 1, two at a time for $interactive_s s; requests still waiting then count as unfinished.
  "$build/bench/kvserve-bench" --target "127.0.0.1:$port" --concurrency 2 --duration "$interactive_s" \
    --timeout 60 --prompt-len 64 --output-len 16 --priority 1 --seed 4 \
    --json "$out/batch-bound-$wait_s.json" >"$out/batch-bound-$wait_s.txt" || true  # none may complete
  wait "$saturating"
  kill -INT "$server"
  wait "$server" || true
  server=""
}
run_bound 0
run_bound "$bound_s"

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
r = {f"{kind}-{policy}": json.load(open(f"{out}/{kind}-{policy}.json"))
     for kind in ("batch", "interactive") for policy in ("fcfs", "priority")}
def ttft(policy, q): return r[f"interactive-{policy}"]["latency_ms"]["ttft"][q]
def tput(policy): return r[f"batch-{policy}"]["throughput"]["output_tokens_per_s"]
print("| | fcfs | priority | priority / fcfs |")
print("|---|---|---|---|")
for q in ("p50", "p99"):
    print(f"| interactive TTFT {q} (ms) | {ttft('fcfs', q):.1f} | {ttft('priority', q):.1f} | {ttft('priority', q) / ttft('fcfs', q):.3f} |")
print(f"| interactive requests | {r['interactive-fcfs']['requests']['completed']} | {r['interactive-priority']['requests']['completed']} | |")
print(f"| batch output tokens/s | {tput('fcfs'):.0f} | {tput('priority'):.0f} | {tput('priority') / tput('fcfs'):.3f} |")
PY

python3 - "$out" "$bound_s" <<'PY'
import json, sys
out, bound = sys.argv[1], sys.argv[2]
r = {f"{kind}-{b}": json.load(open(f"{out}/{kind}-bound-{b}.json"))
     for kind in ("batch", "saturating") for b in ("0", bound)}
def ttft(kind, b, q):
    v = r[f"{kind}-{b}"]["latency_ms"]["ttft"].get(q)
    return "-" if v is None or r[f"{kind}-{b}"]["requests"]["completed"] == 0 else f"{v:.0f}"
print()
print(f"| | --max-priority-wait 0 | --max-priority-wait {bound} |")
print("|---|---|---|")
print(f"| batch (priority 1) requests completed | {r['batch-0']['requests']['completed']} | {r[f'batch-{bound}']['requests']['completed']} |")
for q in ("p50", "p99"):
    print(f"| batch TTFT {q} (ms) | {ttft('batch', '0', q)} | {ttft('batch', bound, q)} |")
for q in ("p50", "p99"):
    print(f"| interactive (priority 0) TTFT {q} (ms) | {ttft('saturating', '0', q)} | {ttft('saturating', bound, q)} |")
PY
