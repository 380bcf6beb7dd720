#!/usr/bin/env bash
# gpu_perf.sh: issue 6's end-to-end measurement, in one GPU-machine call that builds nothing. It runs
# the binaries bundled in --bundle (../shared/gpu/README.md: gpu_peak_bench, kvserve, kvserve-bench):
#   peak  gpu_peak_bench: copy bandwidth and bf16 matrix rate (the roofline's denominators)
#   grid  kvserve --model random:<shape> --backend cuda, then kvserve-bench closed loop over
#         concurrency x input/output lengths, sampling GetServerStatus (KV use) while it runs
#   open  the same server, open loop at increasing request rates until p99 TTFT passes 1 s
#   peer  bench/peer_transformers.py (Hugging Face transformers) on the same shapes, server stopped
# then prints one table (scripts/roofline.py --collect) and writes everything under --out.
#
# The device tool allows 10 minutes a call: the full 8B grid does not fit in one. Split it (each call
# gets its own $OUT; merge afterwards here with --report):
#   call 1: scripts/gpu_perf.sh --parts peak,grid --lengths 128/128,512/256
#   call 2: scripts/gpu_perf.sh --parts peak,grid --lengths 2048/128
#   call 3: scripts/gpu_perf.sh --parts peak,open
#   call 4: scripts/gpu_perf.sh --parts peer
#   here:   scripts/gpu_perf.sh --report DIR1 DIR2 DIR3 DIR4      (the fetched $OUT folders)
# --quick runs a reduced version of every part (concurrency 1,64; 512/256 only; 3 rates; peer batch
# 1,64) that fits one call. --budget-s stops starting new runs past that many seconds (recorded as
# skipped), so a call ends inside the tool's limit.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bundle=.gpu
out=${OUT:-$PWD/perf-out}
shape=llama3-8b
seed=0
model=""
parts=peak,grid,open,peer
concurrency=1,16,64,256
lengths=128/128,512/256,2048/128
duration=20
rates=1,2,4,8,12,16,20,24,32,40,48
open_lengths=512/256
open_duration=30
peer_batch=""
peer_lengths=""
backend=cuda
gpu_memory_utilization=0.90
max_num_seqs=256
port=50551
metrics_port=50552
budget_s=560
server_args=()
report_dirs=()
quick=0

usage() {
  sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF

options (defaults in brackets):
  --bundle DIR          bundled binaries and libraries [.gpu]
  --out DIR             where results go [\$OUT, else ./perf-out]
  --shape NAME          llama3-8b, llama3.2-1b or tiny [$shape]; --seed N [$seed]
  --model SPEC          serve this instead of random:SHAPE:SEED (the roofline still uses --shape), e.g.
                        a Llama 3 directory (its tokenizer.json is read; the benchmark sends token ids)
  --parts LIST          peak,grid,open,peer [$parts]
  --concurrency LIST    closed-loop concurrencies [$concurrency]
  --lengths LIST        input/output pairs for grid and peer [$lengths]
  --duration S          seconds measured per closed-loop point [$duration]
  --rates LIST          open-loop request rates, increasing [$rates]
  --open-lengths I/O    open-loop input/output [$open_lengths]; --open-duration S [$open_duration]
  --peer-batch-sizes L  [the --concurrency list]; --peer-lengths L [the --lengths list]
  --backend NAME        kvserve --backend value; "none" passes no --backend flag [$backend]
  --gpu-memory-utilization U  KV pool sizing on the GPU [$gpu_memory_utilization]; --max-num-seqs N [$max_num_seqs]
  --server-arg ARG      one more kvserve flag (repeatable), e.g. --server-arg=--max-num-batched-tokens=4096
  --port P              gRPC port [$port]; metrics on --metrics-port [$metrics_port]
  --budget-s S          start no new run after S seconds [$budget_s]
  --quick               a reduced grid that fits one call
  --report DIR...       only merge and print results already in these folders (no GPU needed)
EOF
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --bundle) bundle=$2; shift ;;
    --out) out=$2; shift ;;
    --shape) shape=$2; shift ;;
    --seed) seed=$2; shift ;;
    --model) model=$2; shift ;;
    --parts) parts=$2; shift ;;
    --concurrency) concurrency=$2; shift ;;
    --lengths) lengths=$2; shift ;;
    --duration) duration=$2; shift ;;
    --rates) rates=$2; shift ;;
    --open-lengths) open_lengths=$2; shift ;;
    --open-duration) open_duration=$2; shift ;;
    --peer-batch-sizes) peer_batch=$2; shift ;;
    --peer-lengths) peer_lengths=$2; shift ;;
    --backend) backend=$2; shift ;;
    --gpu-memory-utilization) gpu_memory_utilization=$2; shift ;;
    --max-num-seqs) max_num_seqs=$2; shift ;;
    --server-arg) server_args+=("$2"); shift ;;
    --server-arg=*) server_args+=("${1#--server-arg=}") ;;
    --port) port=$2; shift ;;
    --metrics-port) metrics_port=$2; shift ;;
    --budget-s) budget_s=$2; shift ;;
    --quick) quick=1 ;;
    --report) shift; report_dirs=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_perf.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

py=${PYTHON:-$(command -v python3 || echo /usr/bin/python3)}
if [[ ${#report_dirs[@]} -gt 0 ]]; then
  mkdir -p "$out"
  exec "$py" "$here/scripts/roofline.py" --shape "$shape" --collect "${report_dirs[@]}" --json "$out/gpu_perf.json"
fi

if [[ $quick == 1 ]]; then
  concurrency=1,64; lengths=512/256; rates=2,8,16; duration=15; open_duration=20
  [[ -z $peer_batch ]] && peer_batch=1,64
fi
peer_batch=${peer_batch:-$concurrency}
peer_lengths=${peer_lengths:-$lengths}

start=$SECONDS
mkdir -p "$out/closed" "$out/open" "$out/logs"
bundle=$(cd "$bundle" && pwd) || { echo "gpu_perf.sh: no bundle folder (see --bundle)" >&2; exit 2; }
export LD_LIBRARY_PATH=$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
bin=$bundle/bin
log() { echo "[gpu_perf $(date +%T) +$((SECONDS - start))s] $*"; }
over_budget() { (( SECONDS - start >= budget_s )); }
has_part() { [[ ",$parts," == *",$1,"* ]]; }
skipped() { echo "{\"skipped\": \"$1\"}" >"$2"; log "skipped $(basename "$2"): $1"; }

cat >"$out/meta.json" <<EOF
{"shape": "$shape", "seed": $seed, "parts": "$parts", "backend": "$backend", "gpu_memory_utilization": $gpu_memory_utilization,
 "max_num_seqs": $max_num_seqs, "duration_s": $duration, "open_duration_s": $open_duration,
 "server_args": "$(printf '%s ' "${server_args[@]}")", "host": "$(hostname)", "date": "$(date -Is)"}
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >"$out/logs/nvidia-smi.txt" 2>&1

# ---- peak ----
if has_part peak; then
  log "gpu_peak_bench"
  peak_flags=(--json "$out/peaks.json")
  [[ $quick == 1 ]] && peak_flags+=(--quick --reps 10)
  "$bin/gpu_peak_bench" "${peak_flags[@]}" 2>&1 | tee "$out/logs/gpu_peak_bench.txt"
fi

# ---- the server (grid and open) ----
server_pid=""
sampler_pid=""
stop_server() {
  [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null && wait "$sampler_pid" 2>/dev/null
  sampler_pid=""
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=""
  fi
}
trap stop_server EXIT

# GetServerStatus over grpcio without generated code: the request is empty and every ServerStatus field
# is a varint, so a hand decoder suffices. One JSON line per sample to $1 every $2 seconds; "once" mode
# takes one sample, interval < 0 writes GetModelInfo instead.
sampler_code=$(cat <<'PY'
import json, sys, time
target, out, interval, metrics = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
try:
    import grpc
except ImportError:  # no grpcio: the same gauges from /metrics
    import urllib.request
    GAUGES = {"kvserve_requests_running": "num_running", "kvserve_requests_waiting": "num_waiting",
              "kvserve_kv_blocks_capacity": "kv_blocks_total", "kvserve_kv_blocks_free": "kv_blocks_free"}
    if interval < 0:
        sys.exit(1)
    with open(out, "a") as f:
        while True:
            s = {"t": time.time(), "source": "metrics"}
            try:
                for line in urllib.request.urlopen(metrics, timeout=2).read().decode().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] in GAUGES:
                        s[GAUGES[parts[0]]] = int(float(parts[1]))
            except OSError as e:
                s["error"] = str(e)
            f.write(json.dumps(s) + "\n"); f.flush()
            if interval <= 0:
                sys.exit(0)
            time.sleep(interval)
NAMES = {1: "num_running", 2: "num_waiting", 3: "kv_blocks_total", 4: "kv_blocks_free", 5: "kv_blocks_cached",
         6: "requests_served", 7: "draining", 8: "preemptions", 9: "kv_slots_unfilled"}
def decode(buf, defaults=True):
    # proto3 leaves zero fields out: a decoder of this schema reads them as 0 (an idle server's
    # num_running, a full last block's kv_slots_unfilled).
    fields, i = ({name: 0 for name in NAMES.values()} if defaults else {}), 0
    while i < len(buf):
        key, shift = 0, 0
        while True:
            b = buf[i]; i += 1; key |= (b & 0x7F) << shift; shift += 7
            if b < 0x80: break
        val, shift = 0, 0
        while True:
            b = buf[i]; i += 1; val |= (b & 0x7F) << shift; shift += 7
            if b < 0x80: break
        if key & 7 == 2:  # length-delimited: a string
            fields[NAMES.get(key >> 3, f"field_{key >> 3}")] = buf[i:i + val].decode(errors="replace")
            i += val
        elif key & 7 == 0:
            fields[NAMES.get(key >> 3, f"field_{key >> 3}")] = val
        else:
            return fields
    return fields
channel = grpc.insecure_channel(target)
if interval < 0:  # GetModelInfo once (every field a varint or a string)
    NAMES = {1: "model", 2: "architecture", 3: "vocab_size", 4: "hidden_size", 5: "num_layers", 6: "num_heads",
             7: "num_kv_heads", 8: "head_dim", 9: "max_model_len", 10: "block_size", 11: "num_kv_blocks",
             12: "dtype", 13: "backend", 14: "device", 15: "max_num_seqs", 16: "max_num_batched_tokens"}
    info = channel.unary_unary("/kvserve.v1.Generation/GetModelInfo", request_serializer=lambda _: b"",
                               response_deserializer=lambda b: b)
    with open(out, "w") as f:
        json.dump(decode(info(None, timeout=5), defaults=False), f)
    sys.exit(0)
call = channel.unary_unary("/kvserve.v1.Generation/GetServerStatus",
                           request_serializer=lambda _: b"", response_deserializer=lambda b: b)
with open(out, "a") as f:
    while True:
        try:
            s = decode(call(None, timeout=2))
            s["t"] = time.time()
            f.write(json.dumps(s) + "\n"); f.flush()
        except grpc.RpcError as e:
            f.write(json.dumps({"t": time.time(), "error": str(e.code())}) + "\n"); f.flush()
        if interval <= 0:
            break
        time.sleep(interval)
PY
)
status_sampler() { "$py" -c "$sampler_code" "$@"; }

wait_idle() {  # until nothing runs or waits (a cut run's calls are being aborted), at most 60 s
  local tmp; tmp=$(mktemp)
  for _ in $(seq 1 120); do
    : >"$tmp"
    status_sampler "127.0.0.1:$port" "$tmp" 0 "http://127.0.0.1:$metrics_port/metrics" >/dev/null 2>&1
    if [[ ! -s $tmp ]]; then sleep 2; break; fi  # cannot sample: just give the server a moment
    if grep -q '"t"' "$tmp" && ! grep -Eq '"num_(running|waiting)": [1-9]|"error"' "$tmp"; then break; fi
    sleep 0.5
  done
  rm -f "$tmp"
}

metrics_snapshot() {  # $1: file
  "$py" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics', timeout=5).read().decode())" \
    >"$1" 2>/dev/null || true
}

start_server() {
  local flags=(--model "${model:-random:$shape:$seed}" --host 127.0.0.1 --port "$port" --metrics-host 127.0.0.1
               --metrics-port "$metrics_port" --gpu-memory-utilization "$gpu_memory_utilization" --max-num-seqs "$max_num_seqs"
               --max-queue 4096 --log-level warn)
  [[ $backend != none ]] && flags+=(--backend "$backend")
  flags+=("${server_args[@]}")
  log "kvserve ${flags[*]}"
  local launched; launched=$(date +%s.%N)
  "$bin/kvserve" "${flags[@]}" >"$out/logs/kvserve.out" 2>"$out/logs/kvserve.err" &
  server_pid=$!
  # The CUDA backend generates random weights on the GPU (seconds); a real checkpoint loads from disk: allow minutes.
  for _ in $(seq 1 600); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      log "kvserve exited during start-up:"; tail -20 "$out/logs/kvserve.err"; server_pid=""; return 1
    fi
    if grep -q "serving kvserve.v1.Generation" "$out/logs/kvserve.out" &&
       "$py" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$metrics_port/health', timeout=2)" 2>/dev/null; then
      # Start-up, process start to healthy (weights on the GPU, KV pool sized), for the report.
      local ready_s; ready_s=$(awk -v a="$launched" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
      echo "{\"model\": \"${model:-random:$shape:$seed}\", \"healthy_after_s\": $ready_s}" >"$out/startup.json"
      log "kvserve healthy ${ready_s}s after launch"
      status_sampler "127.0.0.1:$port" "$out/model_info.json" -1 - 2>>"$out/logs/sampler.err"
      return 0
    fi
    sleep 0.5
  done
  log "kvserve not healthy after 300 s"; return 1
}

# One kvserve-bench run with status sampling and metrics before/after. $1: name, rest: bench flags.
bench_run() {
  local dir=$1 name=$2; shift 2
  local base="$out/$dir/$name"
  metrics_snapshot "$base.metrics.before"
  "$py" -c "$sampler_code" "127.0.0.1:$port" "$base.status.jsonl" 0.25 "http://127.0.0.1:$metrics_port/metrics" >/dev/null 2>>"$out/logs/sampler.err" &
  sampler_pid=$!
  # Python and grpcio take a second or more to start on a loaded machine: wait (at most 10 s) for the
  # first sample, or a short run would have none.
  for _ in $(seq 1 100); do [[ -s $base.status.jsonl ]] && break; sleep 0.1; done
  "$bin/kvserve-bench" --target "127.0.0.1:$port" --timeout 300 --max-inflight 4096 --json "$base.bench.json" "$@" \
    >"$base.txt" 2>&1
  local rc=$?
  kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; sampler_pid=""
  metrics_snapshot "$base.metrics.after"
  echo "{\"args\": \"$*\", \"rc\": $rc}" >"$base.args.json"
  tail -3 "$base.txt"
  wait_idle
}

if has_part grid || has_part open; then
  if ! start_server; then
    skipped "kvserve did not start (logs/kvserve.err)" "$out/closed/server_failed.json"
  else
    if has_part grid; then
      IFS=, read -ra cs <<<"$concurrency"; IFS=, read -ra ls <<<"$lengths"
      for io in "${ls[@]}"; do
        for c in "${cs[@]}"; do
          name="c${c}_${io/\//_}"
          if over_budget; then skipped "time budget" "$out/closed/$name.bench.json"; continue; fi
          log "closed loop: concurrency $c, in/out $io, ${duration}s"
          bench_run closed "$name" --concurrency "$c" --prompt-len "${io%/*}" --output-len "${io#*/}" \
            --duration "$duration" --warmup "$(( c < 8 ? 2 : c ))"
        done
      done
    fi
    if has_part open; then
      IFS=, read -ra rs <<<"$rates"
      for r in "${rs[@]}"; do
        name="rate${r}_${open_lengths/\//_}"
        if over_budget; then skipped "time budget" "$out/open/$name.bench.json"; break; fi
        log "open loop: $r requests/s, in/out $open_lengths, ${open_duration}s"
        bench_run open "$name" --rate "$r" --prompt-len "${open_lengths%/*}" --output-len "${open_lengths#*/}" \
          --duration "$open_duration" --seed "$r"
        # Past 1 s p99 TTFT the queue only grows: higher rates tell nothing new.
        p99=$("$py" -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['latency_ms']['ttft']['p99'] or 0)" \
              "$out/open/$name.bench.json" 2>/dev/null || echo 0)
        if "$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) > 1000 else 1)" "$p99"; then
          log "p99 TTFT ${p99} ms > 1 s at $r requests/s: sweep done"; break
        fi
      done
    fi
    stop_server
  fi
fi

# ---- peer ----
if has_part peer; then
  left=$(( budget_s - (SECONDS - start) ))
  if (( left < 60 )); then
    skipped "time budget" "$out/peer.json"
  else
    log "peer: transformers, batch $peer_batch, in/out $peer_lengths, ${left}s left"
    "$py" "$here/bench/peer_transformers.py" --self-check --device cuda 2>&1 | tee "$out/logs/peer_self_check.txt"
    "$py" "$here/bench/peer_transformers.py" --shape "$shape" --seed "$seed" --batch-sizes "$peer_batch" \
      --lengths "$peer_lengths" --time-budget-s "$(( left - 45 ))" --json "$out/peer.json" 2>&1 |
      tee "$out/logs/peer.txt" | grep -v "^\s*$" | tail -40
  fi
fi

log "done; results in $out"
"$py" "$here/scripts/roofline.py" --shape "$shape" --collect "$out" --json "$out/gpu_perf.json"
