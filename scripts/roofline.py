#!/usr/bin/env python3
"""Roofline floors of issue 6 for a Llama-family shape on the GPU measured by bench/gpu_peak_bench,
and, given a scripts/gpu_perf.sh result, measured / floor for each goal. Pure Python, runs anywhere.

Model (docs/performance.md explains each term). bf16 weights and KV cache (2 bytes an element):
  decode step, batch b, every sequence at context c:
    bytes  = 2 * (matrix parameters: every layer's projections + lm_head; norms)      weights once
           + b * c * kv_bytes_per_token      kv_bytes_per_token = 2 (K, V) * layers * kv_heads * head_dim * 2
    FLOPs  = 2 * matrix_params * b + b * 4 * layers * heads * head_dim * c           (QK^T and PV)
    floor  = max(bytes / copy bandwidth, FLOPs / bf16 matrix rate)
  prefill of n prompt tokens on an idle server (time to first token):
    FLOPs  = 2 * layer_matrix_params * n + 2 * lm_head_params (last token only)
           + 4 * layers * heads * head_dim * n (n + 1) / 2                          (causal attention)
    bytes  = weights once + n * kv_bytes_per_token (written)
  closed-loop throughput, C requests of in/out tokens:
    time   = C * prefill_FLOPs(in) / rate  +  out * decode floor(b = C, c = in + out / 2)
    bound  = C * out / time   (prefill and decode added, not overlapped: the issue's "prefill FLOPs
                               plus decode bytes")

  python3 scripts/roofline.py --peaks peaks.json [--shape llama3-8b] [--results gpu_perf.json] [--json out.json]
  python3 scripts/roofline.py --copy-gbps 2600 --tflops 700      # without a measurement
  python3 scripts/roofline.py --self-test
"""

import argparse
import json
import math
import os
import sys

SHAPES = {
    # layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, tied
    "llama3-8b": dict(layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, inter=14336, vocab=128256,
                      tied=False),
    "llama3.2-1b": dict(layers=16, hidden=2048, heads=32, kv_heads=8, head_dim=64, inter=8192, vocab=128256,
                        tied=True),
    "tiny": dict(layers=2, hidden=64, heads=4, kv_heads=4, head_dim=16, inter=128, vocab=512, tied=True),
}
BF16 = 2

# Issue 6's goals, as ratios.
DECODE_GOAL = 1.4       # measured step / floor at batch 64 and 256
THROUGHPUT_GOAL = 0.70  # measured tokens/s / bound, 512/256 at concurrency 256
PREFILL_GOAL = 1.5      # measured TTFT / floor, 2048-token prompt, idle server
KV_WASTE_GOAL = 0.04    # of the pool
GPU_IDLE_GOAL = 0.05    # share of a busy engine's time the GPU waits for the host, at batch 256
PEER_GOAL = 1.0         # kvserve / transformers output tokens/s at every batch: faster
PEER_WIDE_GOAL = 2.0    # ... and at 64 and above by a wide margin, which we take to mean 2x


class Model:
    def __init__(self, s):
        self.__dict__.update(s)
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        self.layer_matrix = self.hidden * q * 2 + self.hidden * kv * 2 + 3 * self.hidden * self.inter
        self.lm_head = self.vocab * self.hidden
        self.embed = self.vocab * self.hidden
        self.norms = (2 * self.layers + 1) * self.hidden
        self.matrix = self.layers * self.layer_matrix + self.lm_head
        # Parameters as published (tied embeddings counted once).
        self.params = self.layers * self.layer_matrix + self.norms + self.embed + (0 if self.tied else self.lm_head)
        self.kv_bytes_per_token = 2 * self.layers * self.kv_heads * self.head_dim * BF16
        # Bytes of weights a forward pass reads: every matrix once (a tied lm_head is the embedding table,
        # read once as lm_head) and the norms; the embedding gather reads only the batch's rows.
        self.weight_bytes = (self.matrix + self.norms) * BF16

    def attn_flops_per_token(self, context):
        return 4 * self.layers * self.heads * self.head_dim * context


def decode_floor(m, peaks, batch, context):
    bytes_ = m.weight_bytes + batch * context * m.kv_bytes_per_token
    flops = 2 * m.matrix * batch + batch * m.attn_flops_per_token(context)
    t_mem, t_flop = bytes_ / peaks["copy_bytes_per_s"], flops / peaks["bf16_flops_per_s"]
    return dict(batch=batch, context=context, bytes=bytes_, flops=flops, mem_s=t_mem, flop_s=t_flop,
                floor_s=max(t_mem, t_flop), bound="memory" if t_mem >= t_flop else "compute")


def prefill_flops(m, n):
    return 2 * m.layers * m.layer_matrix * n + 2 * m.lm_head + m.attn_flops_per_token(1) * n * (n + 1) / 2


def prefill_floor(m, peaks, n):
    flops = prefill_flops(m, n)
    bytes_ = m.weight_bytes + n * m.kv_bytes_per_token
    t_mem, t_flop = bytes_ / peaks["copy_bytes_per_s"], flops / peaks["bf16_flops_per_s"]
    return dict(tokens=n, flops=flops, bytes=bytes_, mem_s=t_mem, flop_s=t_flop, floor_s=max(t_mem, t_flop))


def throughput_bound(m, peaks, concurrency, in_len, out_len):
    prefill_s = concurrency * prefill_flops(m, in_len) / peaks["bf16_flops_per_s"]
    step = decode_floor(m, peaks, concurrency, in_len + out_len / 2)
    total = prefill_s + out_len * step["floor_s"]
    return dict(concurrency=concurrency, input_len=in_len, output_len=out_len, prefill_s=prefill_s,
                decode_s=out_len * step["floor_s"], tokens_per_s=concurrency * out_len / total)


def floors(m, peaks):
    return dict(
        decode=[decode_floor(m, peaks, b, c) for b in (1, 16, 64, 256) for c in (192, 640, 2112)],
        prefill_2048=prefill_floor(m, peaks, 2048),
        throughput_512_256_at_256=throughput_bound(m, peaks, 256, 512, 256),
    )


def find_run(results, concurrency, in_len, out_len):
    for r in results.get("kvserve", {}).get("closed", []):
        if (r.get("concurrency"), r.get("input_len"), r.get("output_len")) == (concurrency, in_len, out_len):
            return r
    return None


def latency(run, key, stat="p50"):
    try:
        return run["bench"]["latency_ms"][key][stat]
    except (KeyError, TypeError):
        return None


def compare(m, peaks, results):
    """measured / floor for each goal that the results cover; None where not measured."""
    rows = []

    def add(goal, measured, floor, unit, target, better="lower"):
        ratio = None if measured is None else (measured / floor if better == "lower" else measured / floor)
        ok = None if ratio is None else (ratio <= target if better == "lower" else ratio >= target)
        rows.append(dict(goal=goal, measured=measured, floor=floor, unit=unit, ratio=ratio, target=target, met=ok))

    for c in (64, 256):
        for in_len, out_len in ((128, 128), (512, 256), (2048, 128)):
            run = find_run(results, c, in_len, out_len)
            tpot = latency(run, "tpot") if run else None
            fl = decode_floor(m, peaks, c, in_len + out_len / 2)
            add(f"decode step, batch {c}, {in_len}/{out_len} (TPOT p50)", tpot,
                fl["floor_s"] * 1e3, "ms", DECODE_GOAL)
    run = find_run(results, 256, 512, 256)
    tps = run["bench"]["throughput"]["output_tokens_per_s"] if run and run.get("bench") else None
    add("throughput 512/256 at 256 (output tokens/s)", tps,
        throughput_bound(m, peaks, 256, 512, 256)["tokens_per_s"], "tok/s", THROUGHPUT_GOAL, better="higher")
    run = find_run(results, 1, 2048, 128)
    add("TTFT, 2048-token prompt, idle (p50)", latency(run, "ttft") if run else None,
        prefill_floor(m, peaks, 2048)["floor_s"] * 1e3, "ms", PREFILL_GOAL)
    waste = results.get("kvserve", {}).get("kv_waste_max_fraction")
    rows.append(dict(goal="KV waste at steady state (fraction of pool)", measured=waste, floor=None, unit="",
                     ratio=waste, target=KV_WASTE_GOAL, met=None if waste is None else waste < KV_WASTE_GOAL))
    idle = gpu_idle_at(results, 256)
    rows.append(dict(goal="GPU idle between steps at batch 256 (fraction of busy time)", measured=idle,
                     floor=None, unit="", ratio=idle, target=GPU_IDLE_GOAL,
                     met=None if idle is None else idle < GPU_IDLE_GOAL))
    for r in sorted(results.get("kvserve", {}).get("closed", []),
                    key=lambda r: (r.get("input_len") or 0, r.get("concurrency") or 0)):
        c, i, o = r.get("concurrency"), r.get("input_len"), r.get("output_len")
        p = peer_row(results, c, i, o)
        if not r.get("bench") or not p or not p.get("output_tokens_per_s"):
            continue
        target = PEER_WIDE_GOAL if c >= 64 else PEER_GOAL
        ratio = r["bench"]["throughput"]["output_tokens_per_s"] / p["output_tokens_per_s"]
        rows.append(dict(goal=f"vs transformers, batch {c}, {i}/{o} (kvserve / peer tok/s)", measured=ratio,
                         floor=None, unit="x", ratio=ratio, target=target,
                         met=ratio >= target if c >= 64 else ratio > target))
    return rows


def gpu_idle_at(results, concurrency):
    """The largest GPU idle share over the closed-loop runs at this concurrency (None: not measured)."""
    idles = [(r.get("engine") or {}).get("gpu_idle_fraction") for r in results.get("kvserve", {}).get("closed", [])
             if r.get("concurrency") == concurrency]
    idles = [x for x in idles if x is not None]
    return max(idles) if idles else None


def fmt(x, digits=2):
    if x is None:
        return "not measured"
    if isinstance(x, float) and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def print_report(shape, m, peaks, fl, rows):
    print(f"shape {shape}: {m.params:,} parameters, {m.weight_bytes / 1e9:.2f} GB of bf16 weights read per step, "
          f"KV {m.kv_bytes_per_token} bytes/token")
    print(f"peaks: copy {peaks['copy_bytes_per_s'] / 1e9:.0f} GB/s, bf16 {peaks['bf16_flops_per_s'] / 1e12:.0f} TFLOP/s\n")
    print("| batch | context | bytes (GB) | TFLOP | memory ms | compute ms | floor ms | bound |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for d in fl["decode"]:
        print(f"| {d['batch']} | {d['context']} | {d['bytes'] / 1e9:.2f} | {d['flops'] / 1e12:.3f} | "
              f"{d['mem_s'] * 1e3:.2f} | {d['flop_s'] * 1e3:.2f} | {d['floor_s'] * 1e3:.2f} | {d['bound']} |")
    p = fl["prefill_2048"]
    t = fl["throughput_512_256_at_256"]
    print(f"\nprefill 2048 tokens: {p['flops'] / 1e12:.1f} TFLOP -> floor {p['floor_s'] * 1e3:.1f} ms")
    print(f"512/256 at 256: prefill {t['prefill_s']:.2f} s + decode {t['decode_s']:.2f} s -> "
          f"bound {t['tokens_per_s']:,.0f} output tokens/s\n")
    if rows:
        print("| goal | measured | floor / bound | measured / floor | target | met |")
        print("|---|---:|---:|---:|---:|---|")
        for r in rows:
            met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
            print(f"| {r['goal']} | {fmt(r['measured'])} {r['unit']} | {fmt(r['floor'])} | {fmt(r['ratio'])} | "
                  f"{r['target']} | {met} |")


# ---- merging scripts/gpu_perf.sh result folders ----

def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _prom(path):
    """name -> value of a Prometheus text file's unlabelled samples (histogram _sum/_count included)."""
    values = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("#") or "{" in line:
                    continue
                parts = line.split()
                if len(parts) == 2:
                    values[parts[0]] = float(parts[1])
    except (OSError, ValueError):
        pass
    return values


def kv_summary(samples, block_size):
    """KV use over the middle 60% of a run's samples that had requests running (steady state).
    waste = allocated slots not holding a token, over the pool's slots. Exact when the server
    reports kv_slots_unfilled (ServerStatus field 9); otherwise `waste_bound` assumes what the
    design promises, that a sequence's blocks are allocated only as its tokens arrive, so each running
    sequence wastes at most block_size - 1 slots of its last block."""
    running = [s for s in samples if s.get("num_running", 0) > 0 and "error" not in s]
    if not running:
        return None
    lo, hi = int(len(running) * 0.2), max(int(len(running) * 0.8), int(len(running) * 0.2) + 1)
    steady = running[lo:hi]
    out = dict(samples=len(steady), block_size=block_size)
    usage, bound, exact = [], [], []
    for s in steady:
        total = s.get("kv_blocks_total", 0)
        if not total:
            continue
        pool = total * block_size
        allocated = (total - s.get("kv_blocks_free", 0)) * block_size
        usage.append(allocated / pool)
        bound.append(min(allocated, s.get("num_running", 0) * (block_size - 1)) / pool)
        if "kv_slots_unfilled" in s:
            exact.append(s["kv_slots_unfilled"] / pool)
    if usage:
        out.update(usage_mean=sum(usage) / len(usage), usage_max=max(usage), waste_bound_max=max(bound),
                   running_max=max(s.get("num_running", 0) for s in steady),
                   waiting_max=max(s.get("num_waiting", 0) for s in steady),
                   preemptions=steady[-1].get("preemptions", 0) - steady[0].get("preemptions", 0))
    if exact:
        out.update(waste_max=max(exact), waste_mean=sum(exact) / len(exact))
    return out


def engine_summary(before, after, duration_s):
    """Engine steps over a run, from the server's /metrics before and after: count, mean step time,
    and, where the backend reports device time (CUDA), the share of a busy engine's time the GPU sat
    idle: 1 - device / (step time + host gaps between steps while requests were unfinished)."""
    b, a = _prom(before), _prom(after)

    def delta(name):
        return a.get(name, 0) - b.get(name, 0)

    key = "kvserve_engine_step_seconds"
    steps = delta(key + "_count")
    busy = delta(key + "_sum")
    if steps <= 0:
        return None
    out = dict(steps=steps, mean_step_ms=busy / steps * 1e3,
               busy_fraction=busy / duration_s if duration_s else None)
    device = delta("kvserve_engine_device_seconds_total")
    gap = delta("kvserve_engine_gap_seconds_total")
    out.update(device_s=device, gap_s=gap)
    if device > 0 and busy > 0:
        out.update(gpu_idle_fraction=max(0.0, 1 - device / (busy + gap)),
                   gpu_idle_in_steps_fraction=max(0.0, 1 - device / busy))
    return out


def _run_records(folder, kind, block_size):
    records = []
    d = os.path.join(folder, kind)
    if not os.path.isdir(d):
        return records
    for name in sorted(os.listdir(d)):
        if not name.endswith(".bench.json"):
            continue
        base = os.path.join(d, name[: -len(".bench.json")])
        bench = _load(base + ".bench.json") or {}
        rec = dict(name=os.path.basename(base), bench=bench if "skipped" not in bench else None)
        if "skipped" in bench:
            rec["skipped"] = bench["skipped"]
        wl = bench.get("workload") or {}
        load = bench.get("load") or {}
        try:
            rec.update(input_len=int(wl.get("prompt_len")), output_len=int(wl.get("output_len")))
        except (TypeError, ValueError):
            pass
        if kind == "closed":
            rec["concurrency"] = load.get("concurrency")
        else:
            rec["rate"] = load.get("rate")
        samples = []
        try:
            with open(base + ".status.jsonl") as f:
                samples = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError):
            pass
        rec["kv"] = kv_summary(samples, block_size)
        rec["engine"] = engine_summary(base + ".metrics.before", base + ".metrics.after",
                                       bench.get("duration_s") or 0)
        records.append(rec)
    return records


def collect(folders):
    """One results object from gpu_perf.sh output folders (later folders add to earlier ones)."""
    res = dict(folders=list(folders), peaks=None, model_info=None, meta=[], startups=[],
               kvserve=dict(closed=[], open=[]), peer=None)
    for folder in folders:
        peaks = _load(os.path.join(folder, "peaks.json"))
        if peaks and peaks.get("peak") and res["peaks"] is None:
            res["peaks"] = peaks
        info = _load(os.path.join(folder, "model_info.json"))
        if info:
            res["model_info"] = info
        startup = _load(os.path.join(folder, "startup.json"))
        if startup:
            res["startups"].append(startup)
        meta = _load(os.path.join(folder, "meta.json"))
        if meta:
            res["meta"].append(meta)
        block_size = (info or {}).get("block_size", 16)
        res["kvserve"]["closed"] += [r for r in _run_records(folder, "closed", block_size)
                                     if r.get("concurrency") or r.get("skipped")]
        res["kvserve"]["open"] += _run_records(folder, "open", block_size)
        peer = _load(os.path.join(folder, "peer.json"))
        if peer and peer.get("results"):
            if res["peer"] is None:
                res["peer"] = peer
            else:
                res["peer"]["results"] += peer["results"]
    kv = res["kvserve"]
    wastes = [r["kv"]["waste_max"] for r in kv["closed"] + kv["open"] if r.get("kv") and "waste_max" in r["kv"]]
    bounds = [r["kv"]["waste_bound_max"] for r in kv["closed"] + kv["open"]
              if r.get("kv") and "waste_bound_max" in r["kv"]]
    kv["kv_waste_max_fraction"] = max(wastes) if wastes else None
    kv["kv_waste_bound_max_fraction"] = max(bounds) if bounds else None
    kv["open"].sort(key=lambda r: r.get("rate") or 0)
    kv["open_rate_at_p99_ttft_1s"] = crossing_rate(kv["open"])
    return res


def crossing_rate(open_runs, limit_ms=1000.0):
    """The request rate where p99 TTFT passes limit_ms, interpolated between the last rate under it and
    the first over it; None if no run passed it (then the sweep's top rate is a lower bound)."""
    prev = None
    for r in open_runs:
        p99 = latency(r, "ttft", "p99")
        if p99 is None or r.get("rate") is None:
            continue
        if p99 > limit_ms:
            if prev is None:
                return dict(rate=r["rate"], note="already past at the lowest rate measured")
            (r0, t0), (r1, t1) = prev, (r["rate"], p99)
            return dict(rate=r0 + (r1 - r0) * (limit_ms - t0) / (t1 - t0), between=[r0, r1])
        prev = (r["rate"], p99)
    return None if prev is None else dict(rate=None, note=f"p99 TTFT stayed under 1 s up to {prev[0]} requests/s")


def peer_row(res, batch, in_len, out_len):
    for r in (res.get("peer") or {}).get("results", []):
        if (r.get("batch"), r.get("input_len"), r.get("output_len")) == (batch, in_len, out_len):
            return r
    return None


def print_collected(m, peaks, res):
    print("| concurrency | in/out | kvserve out tok/s | TTFT p50 / p99 ms | TPOT p50 ms | step floor ms | "
          "TPOT / floor | engine step ms | GPU idle | KV use max | KV waste max | peer tok/s | peer TTFT ms | "
          "kvserve / peer |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(res["kvserve"]["closed"], key=lambda r: (r.get("input_len") or 0, r.get("concurrency") or 0)):
        c, i, o = r.get("concurrency"), r.get("input_len"), r.get("output_len")
        if r.get("skipped") or not r.get("bench"):
            print(f"| {c or '?'} | {r['name']} | skipped: {r.get('skipped')} |" + " |" * 11)
            continue
        tps = r["bench"]["throughput"]["output_tokens_per_s"]
        tpot = latency(r, "tpot")
        floor = decode_floor(m, peaks, c, i + o / 2)["floor_s"] * 1e3 if peaks else None
        kv, eng = r.get("kv") or {}, r.get("engine") or {}
        p = peer_row(res, c, i, o) or {}
        ptps = p.get("output_tokens_per_s")
        print(f"| {c} | {i}/{o} | {fmt(tps, 0)} | {fmt(latency(r, 'ttft'), 1)} / {fmt(latency(r, 'ttft', 'p99'), 1)} | "
              f"{fmt(tpot)} | {fmt(floor)} | {fmt(tpot / floor if tpot and floor else None)} | "
              f"{fmt(eng.get('mean_step_ms'))} | {fmt(eng.get('gpu_idle_fraction'), 3)} | {fmt(kv.get('usage_max'))} | "
              f"{fmt(kv.get('waste_max', kv.get('waste_bound_max')), 4)} | "
              f"{fmt(ptps, 0) if ptps else p.get('error', '-')} | {fmt(p.get('ttft_ms'), 1) if p else '-'} | "
              f"{fmt(tps / ptps) if ptps else '-'} |")
    if res["kvserve"]["open"]:
        print("\n| open loop rate (req/s) | achieved req/s | TTFT p50 / p99 ms | TPOT p50 ms | delayed by cap |")
        print("|---:|---:|---:|---:|---:|")
        for r in res["kvserve"]["open"]:
            if not r.get("bench"):
                print(f"| {r['name']} | skipped: {r.get('skipped')} | | | |")
                continue
            b = r["bench"]
            print(f"| {r.get('rate')} | {fmt(b['throughput']['requests_per_s'])} | "
                  f"{fmt(latency(r, 'ttft'), 1)} / {fmt(latency(r, 'ttft', 'p99'), 1)} | {fmt(latency(r, 'tpot'))} | "
                  f"{b['requests'].get('delayed_by_cap')} |")
        print(f"\nrate where p99 TTFT passes 1 s: {res['kvserve']['open_rate_at_p99_ttft_1s']}")
    for st in res["startups"]:
        print(f"\nkvserve start-up ({st.get('model')}): healthy {fmt(st.get('healthy_after_s'))} s after launch")
    if res["kvserve"]["kv_waste_max_fraction"] is None:
        print("\nKV waste: no exact figure (the server sent no kv_slots_unfilled in GetServerStatus). "
              "Bound under the design's allocation rule: "
              f"{fmt(res['kvserve']['kv_waste_bound_max_fraction'], 4)} of the pool.")


def self_test():
    m8, m1 = Model(SHAPES["llama3-8b"]), Model(SHAPES["llama3.2-1b"])
    # Published parameter counts (the same figures tests/engine/random_model_test.cc checks).
    assert m8.params == 8_030_261_248, m8.params
    assert m1.params == 1_235_814_400, m1.params
    assert m8.kv_bytes_per_token == 131072  # 128 KiB: 2 * 32 layers * 8 heads * 128 * 2 bytes
    assert m1.kv_bytes_per_token == 32768
    peaks = dict(copy_bytes_per_s=2.0e12, bf16_flops_per_s=500e12)
    # Batch 1, context 0: weights only. 8B: 32 layers * 218,103,808 + lm_head 525,336,576 matrix
    # parameters + norms 266,240 -> 15.01 GB over 2 TB/s.
    d = decode_floor(m8, peaks, 1, 0)
    assert m8.matrix == 32 * 218_103_808 + 525_336_576, m8.matrix
    assert math.isclose(d["floor_s"], (7_504_658_432 + 266_240) * 2 / 2.0e12), d
    assert d["bound"] == "memory"
    # Batch 256, context 640: + 256 * 640 * 128 KiB = 21.47 GB of K/V.
    d = decode_floor(m8, peaks, 256, 640)
    assert math.isclose(d["bytes"], m8.weight_bytes + 256 * 640 * 131072)
    assert d["bound"] == "memory" and 18e-3 < d["floor_s"] < 19e-3, d
    # Compute-bound once the batch is large enough: 2 * 7.5e9 * 4096 = 61 TFLOP vs 15 GB.
    assert decode_floor(m8, peaks, 4096, 1)["bound"] == "compute"
    # Prefill 2048: 2 * 6.979e9 * 2048 + 2 * 525e6 + 4 * 32 * 32 * 128 * 2048 * 2049 / 2 = 29.69 TFLOP.
    p = prefill_floor(m8, peaks, 2048)
    want = 2 * 6_979_321_856 * 2048 + 2 * 525_336_576 + 4 * 32 * 32 * 128 * 2048 * 2049 / 2
    assert math.isclose(p["flops"], want) and 29.6e12 < p["flops"] < 29.8e12, p
    # Throughput bound is monotone in both peaks and lies between the pure-prefill and pure-decode bounds.
    t = throughput_bound(m8, peaks, 256, 512, 256)
    faster = throughput_bound(m8, dict(copy_bytes_per_s=4e12, bf16_flops_per_s=1e15), 256, 512, 256)
    assert faster["tokens_per_s"] > t["tokens_per_s"]
    assert t["tokens_per_s"] < 256 * 256 / t["prefill_s"] and t["tokens_per_s"] < 256 * 256 / t["decode_s"]
    # Comparison against a fake result: TPOT 20 ms at batch 64, 128/128 against its floor.
    fake = dict(kvserve=dict(closed=[dict(concurrency=64, input_len=128, output_len=128,
                                          bench=dict(latency_ms=dict(tpot=dict(p50=20.0))))],
                             kv_waste_max_fraction=0.01))
    rows = compare(m8, peaks, fake)
    r = rows[0]
    assert r["goal"].startswith("decode step, batch 64, 128/128")
    assert math.isclose(r["ratio"], 20.0 / (decode_floor(m8, peaks, 64, 192)["floor_s"] * 1e3))
    assert r["met"] == (r["ratio"] <= DECODE_GOAL)
    by_goal = {x["goal"].split(" (")[0]: x for x in rows}
    assert by_goal["KV waste at steady state"]["met"] is True
    assert by_goal["GPU idle between steps at batch 256"]["measured"] is None
    assert all(x["measured"] is None for x in rows[1:] if not x["goal"].startswith("KV waste"))
    # GPU idle from /metrics before and after a run: 9 s of steps, 1 s of gaps, 9.5 s on the device
    # -> idle 1 - 9.5 / 10 = 5%, of which 1 - 9.5 / 9 < 0 (clamped to 0) inside the steps.
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        before, after = os.path.join(tmp, "b"), os.path.join(tmp, "a")
        with open(before, "w") as f:
            f.write("# TYPE x counter\nkvserve_engine_step_seconds_sum 1\nkvserve_engine_step_seconds_count 10\n"
                    "kvserve_engine_device_seconds_total 0.5\nkvserve_engine_gap_seconds_total 0\n")
        with open(after, "w") as f:
            f.write("kvserve_engine_step_seconds_sum 10\nkvserve_engine_step_seconds_count 910\n"
                    "kvserve_engine_device_seconds_total 10\nkvserve_engine_gap_seconds_total 1\n"
                    'kvserve_requests_total{finish_reason="length"} 7\n')
        e = engine_summary(before, after, 20)
        assert e["steps"] == 900 and math.isclose(e["mean_step_ms"], 10.0), e
        assert math.isclose(e["gpu_idle_fraction"], 0.05) and e["gpu_idle_in_steps_fraction"] == 0.0, e
        assert engine_summary(before, before, 20) is None  # no step in between
        with open(after, "w") as f:  # the CPU backend reports no device time: idle is not measured
            f.write("kvserve_engine_step_seconds_sum 10\nkvserve_engine_step_seconds_count 910\n")
        assert "gpu_idle_fraction" not in engine_summary(before, after, 20)
    # The peer rows: kvserve / transformers output tokens/s, faster at batch 1, 2x at 64.
    run = lambda c, tps: dict(concurrency=c, input_len=512, output_len=256,
                              engine=dict(gpu_idle_fraction=0.02 if c == 256 else None),
                              bench=dict(throughput=dict(output_tokens_per_s=tps), latency_ms={}))
    res = dict(kvserve=dict(closed=[run(1, 90.0), run(64, 3000.0), run(256, 8000.0)]),
               peer=dict(results=[dict(batch=1, input_len=512, output_len=256, output_tokens_per_s=60.0),
                                  dict(batch=64, input_len=512, output_len=256, output_tokens_per_s=2000.0)]))
    by_goal = {x["goal"]: x for x in compare(m8, peaks, res)}
    assert by_goal["vs transformers, batch 1, 512/256 (kvserve / peer tok/s)"]["met"] is True
    wide = by_goal["vs transformers, batch 64, 512/256 (kvserve / peer tok/s)"]
    assert math.isclose(wide["ratio"], 1.5) and wide["met"] is False  # faster, but not by 2x
    assert not any("batch 256" in g and "transformers" in g for g in by_goal)  # no peer figure there
    idle = by_goal["GPU idle between steps at batch 256 (fraction of busy time)"]
    assert idle["measured"] == 0.02 and idle["met"] is True
    print("roofline self-test: OK")
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    ap.add_argument("--peaks", help="gpu_peak_bench --json output (or gpu_perf.sh's JSON, which holds it)")
    ap.add_argument("--copy-gbps", type=float, help="copy bandwidth (read + write), GB/s; overrides --peaks")
    ap.add_argument("--tflops", type=float, help="bf16 matrix rate, TFLOP/s; overrides --peaks")
    ap.add_argument("--results", help="scripts/gpu_perf.sh JSON: adds measured / floor per goal")
    ap.add_argument("--collect", nargs="+", metavar="DIR",
                    help="scripts/gpu_perf.sh output folders: merge them, take the peaks from them, print the table")
    ap.add_argument("--json", help="write floors and comparisons (with --collect: everything) here")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args(argv)
    if a.self_test:
        return self_test()
    peaks = {}
    collected = collect(a.collect) if a.collect else None
    if collected and collected["peaks"]:
        peaks = dict(collected["peaks"]["peak"])
    if a.peaks:
        with open(a.peaks) as f:
            data = json.load(f)
        data = data.get("peaks", data)  # gpu_perf.sh nests gpu_peak_bench's output under "peaks"
        peaks = dict(data.get("peak") or {})
    if a.copy_gbps:
        peaks["copy_bytes_per_s"] = a.copy_gbps * 1e9
    if a.tflops:
        peaks["bf16_flops_per_s"] = a.tflops * 1e12
    if not {"copy_bytes_per_s", "bf16_flops_per_s"} <= peaks.keys():
        if collected:  # no peaks measured: the measured table alone
            print_collected(Model(SHAPES[a.shape]), None, collected)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(dict(shape=a.shape, results=collected), f, indent=2)
            return 0
        ap.error("need measured peaks: --peaks FILE with a \"peak\" object (gpu_peak_bench on a GPU), "
                 "or --copy-gbps and --tflops")
    m = Model(SHAPES[a.shape])
    fl = floors(m, peaks)
    rows = []
    results = collected
    if a.results:
        with open(a.results) as f:
            results = json.load(f)
        results = results.get("results", results)  # a --collect --json file holds them under "results"
    if results:
        rows = compare(m, peaks, results)
    print_report(a.shape, m, peaks, fl, rows)
    if collected:
        print()
        print_collected(m, peaks, collected)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(shape=a.shape, peaks=peaks, floors=fl, goals=rows, results=collected), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
