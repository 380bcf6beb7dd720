#!/usr/bin/env bash
# gpu_perf_dry_run.sh KVSERVE KVSERVE_BENCH: scripts/gpu_perf.sh end to end without a GPU. It serves
# random:tiny on the CPU backend from a bundle of links to this build's binaries, runs a two-point
# closed-loop grid and a two-rate open loop, and checks that every figure roofline.py reports comes
# out: throughput, latencies, engine steps, KV use and exact waste, the open-loop table. Device time
# is scarce; a bug in the harness should cost a CI run, not a GPU call.
set -euo pipefail
kvserve=$1
bench=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3  # Debian's, with grpcio (the status sampler's GetServerStatus)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bundle/bin" "$tmp/bundle/lib"
ln -s "$kvserve" "$tmp/bundle/bin/kvserve"
ln -s "$bench" "$tmp/bundle/bin/kvserve-bench"
read -r port metrics_port < <("$py" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

# The open loop's top rate stays well under what 2 busy cores serve (~40 requests/s of 32/96): at
# 50/s, with CI's other tests beside it, a 2 s run could end before any request finished.
PYTHON=$py "$root/scripts/gpu_perf.sh" --bundle "$tmp/bundle" --out "$tmp/out" --backend cpu --shape tiny \
  --parts grid,open --concurrency 1,4 --lengths 32/96 --duration 2 --rates 2,20 --open-lengths 32/96 --open-duration 2 \
  --budget-s 240 --port "$port" --metrics-port "$metrics_port" --server-arg=--kv-cache-gib=0.01

"$py" - "$tmp/out/gpu_perf.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)
closed, opened = res["kvserve"]["closed"], res["kvserve"]["open"]
need(sorted(r.get("concurrency") for r in closed) == [1, 4], f"closed-loop points: {[r['name'] for r in closed]}")
for r in closed + opened:
    b, name = r.get("bench") or {}, r["name"]
    need(b.get("requests", {}).get("completed", 0) > 0, f"{name}: no completed request")
    need(b.get("errors") == {}, f"{name}: errors {b.get('errors')}")
    need((b.get("throughput") or {}).get("output_tokens_per_s", 0) > 0, f"{name}: no throughput")
    need((b.get("latency_ms") or {}).get("ttft", {}).get("p50") is not None, f"{name}: no TTFT")
    need((r.get("engine") or {}).get("steps", 0) > 0, f"{name}: no engine steps from /metrics")
    # The lengths asked for reach the server: every completed request has exactly 32 in, 96 out.
    done, tokens = b.get("requests", {}).get("completed", 0), b.get("tokens") or {}
    need(tokens.get("prompt") == 32 * done and tokens.get("output") == 96 * done, f"{name}: tokens {tokens} for {done}")
for r in closed:  # the open loop's low rates leave the engine idle at most samples
    kv, name = r.get("kv") or {}, r["name"]
    need(kv.get("samples", 0) > 0 and 0 < kv.get("usage_max", 0) <= 1, f"{name}: KV use {kv}")
    need(0 <= kv.get("waste_max", -1) <= 1, f"{name}: no exact KV waste (kv_slots_unfilled) {kv}")
    # The exact count never exceeds what the allocation rule allows (block_size - 1 per running request).
    need(kv.get("waste_max", 1) <= kv.get("waste_bound_max", 0) + 1e-12, f"{name}: waste over its bound {kv}")
need("gpu_idle_fraction" not in (closed[0].get("engine") or {}), "the CPU backend has no device time to report")
need([r.get("rate") for r in opened] in ([2, 20], [2.0, 20.0], [2]), f"open-loop rates: {[r.get('rate') for r in opened]}")
need("open_rate_at_p99_ttft_1s" in res["kvserve"], "no crossing rate entry")
need(res["kvserve"]["kv_waste_max_fraction"] is not None, "no KV waste over the runs")
need((res.get("model_info") or {}).get("block_size", 0) > 0, f"model_info: {res.get('model_info')}")
need([st.get("model") for st in res.get("startups", [])] == ["random:tiny:0"] and
     res["startups"][0].get("healthy_after_s", -1) > 0, f"start-up record: {res.get('startups')}")
if problems:
    print("gpu_perf dry run: " + "; ".join(problems))
    sys.exit(1)
print(f"gpu_perf dry run: OK ({len(closed)} closed-loop points, {len(opened)} open-loop rates)")
PY
