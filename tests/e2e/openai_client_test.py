#!/usr/bin/python3
"""An independent client for kvserve's OpenAI-compatible HTTP API: Python's standard library
(http.client, json) talking to the real server binary on loopback, parsing the server-sent events
itself, as a client of OpenAI's API would.

Checks that the served model is listed; that a greedy completion streamed adds up to the same
completion unstreamed (text, finish reason, logprobs, usage) and that a prompt of token ids is
counted as such; that /v1/embeddings gives the float64 reference's hidden state, as floats and as
base64; that seeded sampling repeats, and that choice i of n equals the request alone with
seed + i; that chat replies constrained by response_format (json_schema, json_object, choice,
regex) are what they were told to be; that a streamed chat opens each choice with the assistant's
role, adds up to the unstreamed reply and ends with a usage chunk; that the Responses API and
Anthropic's Messages API give the chat endpoint's greedy reply in their own shapes, whole and
streamed; that bad requests get OpenAI's
error object with 400 or 404 and leave the server serving; and, on a second server holding a bearer
token, a short queue and a slowed engine, that a request without the token is 401 and one with it
200, that a request over the queue is 429, and that a draining server refuses new requests with
503 while it finishes the running and the queued one and then exits 0 by itself; and that a second
SIGTERM while draining stops the server at once, still exiting 0.
"""
import argparse
import base64
import http.client
import json
import math
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

TIMEOUT = 30  # seconds for any one HTTP exchange


# ---------------------------------------------------------------------------------------------
# The server process

class Server:
    """One kvserve process with both APIs on loopback; its output is drained by a thread."""

    def __init__(self, binary, model, extra_args=(), env=None):
        args = [binary, "--model", model, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
                "--openai-host", "127.0.0.1", "--openai-port", "0", *extra_args]
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, errors="replace")
        self.lines = []  # everything it printed, for failure reports
        lines = queue.Queue()

        def drain():
            for line in self.proc.stdout:
                self.lines.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        self.http_port = self.grpc_port = None
        deadline = time.time() + 30
        while self.http_port is None or self.grpc_port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                line = None
            if line is None or time.time() > deadline:
                self.proc.kill()
                self.proc.wait()
                sys.exit("kvserve did not start: " + " ".join(args) + "\n" + "".join(self.lines[-30:]))
            m = re.search(r"serving the OpenAI-compatible API on http://127\.0\.0\.1:(\d+)/v1", line)
            if m:
                self.http_port = int(m.group(1))
            m = re.search(r"serving kvserve\.v1\.Generation on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.grpc_port = int(m.group(1))

    def stop(self, timeout=30):
        """SIGTERM; the exit status (None when it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def tail(self, n=20):
        return "".join(self.lines[-n:])


# ---------------------------------------------------------------------------------------------
# HTTP and server-sent events

class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return loads(self.body)

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:600]!r}"


class JsonObject(dict):
    """A JSON object that also keeps its members in order, duplicates included (a completions
    top_logprobs object may name the same spelling twice)."""
    pairs = ()


def _object(pairs):
    obj = JsonObject(pairs)
    obj.pairs = pairs
    return obj


def loads(text):
    return json.loads(text, object_pairs_hook=_object)


def request(port, method, path, body=None, headers=None, raw=None):
    """One exchange on a fresh connection: `body` is sent as JSON, `raw` as is."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode("utf-8"))
    finally:
        conn.close()


def parse_sse(text):
    """The JSON payloads of a complete event stream; raises ValueError unless it is `data: {json}`
    events, each followed by a blank line, closed by `data: [DONE]` and nothing after."""
    if not text.endswith("\n\n"):
        raise ValueError("the stream does not end with a blank line")
    events = text[:-2].split("\n\n")
    if events[-1] != "data: [DONE]":
        raise ValueError(f"the stream does not end with data: [DONE] (last event {events[-1][:200]!r})")
    payloads = []
    for event in events[:-1]:
        if not event.startswith("data: ") or "\n" in event:
            raise ValueError(f"not a single data line: {event[:200]!r}")
        payloads.append(loads(event[len("data: "):]))
    return payloads


class Stream:
    """A streamed reply read event by event, for the checks that act while it runs."""

    def __init__(self, port, path, body, headers=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        self.conn.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def next_event(self):
        """The next event's payload: a dict, "[DONE]", or None at the end of the stream."""
        while True:
            line = self.resp.readline()
            if not line:
                return None
            line = line.decode("utf-8").rstrip("\n")
            if line.startswith("data: "):
                payload = line[len("data: "):]
                return payload if payload == "[DONE]" else loads(payload)

    def rest(self):
        events = []
        while True:
            e = self.next_event()
            if e is None:
                return events
            events.append(e)

    def close(self):
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# The checks

class Checker:
    def __init__(self):
        self.checks, self.failures = 0, []

    def __call__(self, cond, what, detail=None):
        self.checks += 1
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            self.failures.append(what)
            if detail is not None:
                text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, default=repr)
                print("     " + text[:3000].replace("\n", "\n     "), flush=True)
        return cond


def is_error(reply, status, code=None):
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}} with this status."""
    if reply.status != status or "application/json" not in reply.headers.get("content-type", ""):
        return False
    try:
        err = reply.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (isinstance(err.get("message"), str) and err["message"] != "" and isinstance(err.get("type"), str)
            and "param" in err and (code is None or err.get("code") == code))


def usage_ok(usage):
    return (isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in
                                             ("prompt_tokens", "completion_tokens", "total_tokens"))
            and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            and isinstance(usage.get("prompt_tokens_details", {}).get("cached_tokens"), int)
            and 0 <= usage["prompt_tokens_details"]["cached_tokens"] <= usage["prompt_tokens"])


def same_usage(a, b):
    """Equal counts; the cached count may differ (a repeated prompt finds its blocks cached)."""
    return all(a.get(k) == b.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)


def collect_completion_stream(chunks):
    """Per-index text, finish reasons and logprob arrays of streamed text_completion chunks, and
    the usage chunk (None when absent)."""
    texts, finishes, logprobs, usage, ids, shapes_ok = {}, {}, {}, None, set(), True
    for c in chunks:
        ids.add(c.get("id"))
        shapes_ok &= c.get("object") == "text_completion"
        if c.get("choices") == [] and c.get("usage") is not None:
            usage = c["usage"]
            continue
        shapes_ok &= len(c.get("choices", [])) == 1
        for ch in c.get("choices", []):
            i = ch["index"]
            texts[i] = texts.get(i, "") + ch["text"]
            if ch.get("finish_reason") is not None:
                finishes.setdefault(i, []).append(ch["finish_reason"])
            if ch.get("logprobs") is not None:
                lp = logprobs.setdefault(i, {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                            "text_offset": []})
                for k in lp:
                    lp[k] += ch["logprobs"][k] or []
    return texts, finishes, logprobs, usage, ids, shapes_ok


def collect_chat_stream(chunks):
    """Per-index content, the role of each choice's first chunk, roles seen later, finish reasons,
    logprob entries, and the usage chunk."""
    content, first_role, later_roles, finishes, logprobs, usage, ids, shapes_ok = {}, {}, {}, {}, {}, None, set(), True
    for c in chunks:
        ids.add(c.get("id"))
        shapes_ok &= c.get("object") == "chat.completion.chunk"
        if c.get("choices") == [] and c.get("usage") is not None:
            usage = c["usage"]
            continue
        shapes_ok &= len(c.get("choices", [])) == 1
        for ch in c.get("choices", []):
            i, delta = ch["index"], ch["delta"]
            if i not in first_role:
                first_role[i] = delta.get("role")
            elif "role" in delta:
                later_roles.setdefault(i, []).append(delta["role"])
            content[i] = content.get(i, "") + (delta.get("content") or "")
            if ch.get("finish_reason") is not None:
                finishes.setdefault(i, []).append(ch["finish_reason"])
            if ch.get("logprobs") is not None:
                logprobs.setdefault(i, []).extend(ch["logprobs"]["content"])
    return content, first_role, later_roles, finishes, logprobs, usage, ids, shapes_ok


def check_models(check, port, served):
    r = request(port, "GET", "/v1/models")
    body = r.json() if r.status == 200 else {}
    data = body.get("data") or [{}]
    m = data[0]
    check(r.status == 200 and body.get("object") == "list" and len(data) == 1, "GET /v1/models is a list of one", r)
    check(m.get("id") == served and m.get("object") == "model" and m.get("owned_by") == "kvserve"
          and isinstance(m.get("created"), int) and abs(m["created"] - time.time()) < 3600,
          "the model listed is the served name, owned by kvserve", {"want id": served, "got": m})
    check(isinstance(m.get("max_model_len"), int) and m["max_model_len"] > 0, "max_model_len is a positive count", m)
    return m.get("max_model_len")


def check_greedy_completion(check, port, served, model_dir):
    # (With this model "Hello" continues greedily with byte-fallback tokens, a lone UTF-8
    # continuation byte among them, which the text shows as U+FFFD.)
    prompt = "Hello"
    body = {"model": served, "prompt": prompt, "max_tokens": 16, "temperature": 0, "logprobs": 3}
    r = request(port, "POST", "/v1/completions", body, headers={"X-Request-Id": "py-greedy"})
    if not check(r.status == 200, "greedy completion: 200", {"request": body, "reply": repr(r)}):
        return
    c = r.json()
    ch = (c.get("choices") or [{}])[0]
    check(c.get("id") == "cmpl-py-greedy" and c.get("object") == "text_completion" and c.get("model") == served
          and isinstance(c.get("created"), int) and len(c.get("choices", [])) == 1 and ch.get("index") == 0,
          "completion: id from X-Request-Id, object, model, one choice at index 0", c)
    usage, lp = c.get("usage"), ch.get("logprobs") or {}
    check(usage_ok(usage), "completion usage: total = prompt + completion, cached within prompt", usage)
    n = len(lp.get("tokens", []))
    check(ch.get("finish_reason") in ("stop", "length") and (ch["finish_reason"] == "stop" or n == 16)
          and n == usage["completion_tokens"] and 1 <= n <= 16
          and len(lp.get("token_logprobs", [])) == n and len(lp.get("text_offset", [])) == n
          and len(lp.get("top_logprobs") or []) == n,
          "completion logprobs: one entry per completion token in each array", {"request": body, "reply": c})
    # Greedy: each chosen token is the likeliest of its alternatives (which include it). Three
    # each, fewer only where two share a spelling (byte tokens all read U+FFFD): the likelier is kept.
    tops = lp.get("top_logprobs") or []
    greedy = all(
        isinstance(t, JsonObject) and 1 <= len(t.pairs) <= 3 and len({k for k, _ in t.pairs}) == len(t.pairs)
        and all(v <= 0 for _, v in t.pairs)
        and close(max(v for _, v in t.pairs), lp["token_logprobs"][i])
        and any(k == lp["tokens"][i] and close(v, lp["token_logprobs"][i]) for k, v in t.pairs)
        for i, t in enumerate(tops))
    check(greedy and len(tops) == n, "completion top_logprobs: up to 3 distinct alternatives, the greedy pick the likeliest",
          {"request": body, "reply": c})
    # text_offset: where each token's text begins in the token texts written one after another (as
    # vLLM counts it); that is the text itself where no token holds part of a character.
    text, offs, toks = ch.get("text", ""), lp.get("text_offset", []), lp.get("tokens", [])
    check(offs[:1] == [0] and all(offs[i + 1] - offs[i] == len(toks[i]) for i in range(len(offs) - 1)),
          "text_offset: each token starts where the previous token's text ends", {"request": body, "reply": c})
    if not any("\ufffd" in t for t in toks):
        check("".join(toks) == text, "tokens: written one after another they are the text", {"text": text, "tokens": toks})

    # The same request streamed, with usage.
    sbody = dict(body, stream=True, stream_options={"include_usage": True})
    s = request(port, "POST", "/v1/completions", sbody, headers={"X-Request-Id": "py-greedy-s"})
    try:
        chunks = parse_sse(s.body)
    except ValueError as e:
        check(False, "streamed completion is an event stream", f"{e}; {s!r}")
        return
    check(s.status == 200 and s.headers.get("content-type", "").startswith("text/event-stream"),
          "streamed completion: 200, text/event-stream", s)
    texts, finishes, slp, susage, ids, shapes_ok = collect_completion_stream(chunks)
    check(shapes_ok and ids == {"cmpl-py-greedy-s"}, "streamed completion chunks: text_completion, one choice, one id",
          chunks)
    check(texts == {0: ch.get("text")}, "streamed text deltas add up to the unstreamed text",
          {"streamed": texts, "unstreamed": ch.get("text")})
    check(finishes == {0: [ch.get("finish_reason")]}, "streamed finish_reason: once, as unstreamed",
          {"streamed": finishes, "unstreamed": ch.get("finish_reason")})
    check(slp.get(0, {}).get("tokens") == lp.get("tokens") and slp[0]["text_offset"] == lp.get("text_offset")
          and all(close(a, b) for a, b in zip(slp[0]["token_logprobs"], lp["token_logprobs"]))
          and len(slp[0]["token_logprobs"]) == n,
          "streamed logprobs add up to the unstreamed ones", {"streamed": slp, "unstreamed": lp})
    check(susage is not None and usage_ok(susage) and same_usage(susage, usage)
          and susage["completion_tokens"] == len(slp.get(0, {}).get("tokens", [])),
          "include_usage: a last chunk with choices [] and the same usage", {"streamed": susage, "unstreamed": usage})
    check(all("usage" in c and c["usage"] is None for c in chunks[:-1]) and chunks[-1].get("choices") == [],
          "include_usage: the usage chunk comes last; the others say usage null", chunks)

    # Without include_usage the stream carries no usage at all.
    plain = request(port, "POST", "/v1/completions", dict(body, stream=True, logprobs=None))
    try:
        pchunks = parse_sse(plain.body)
    except ValueError as e:
        pchunks = [{"unparsable": str(e)}]
    check(all(c.get("usage") is None and len(c.get("choices", [])) == 1 and c["choices"][0].get("logprobs") is None
              for c in pchunks)
          and "".join(c["choices"][0]["text"] for c in pchunks) == ch.get("text"),
          "streamed without stream_options or logprobs: the same text, no usage, logprobs null", pchunks)

    # logprobs 0: the chosen tokens' logprobs, no alternatives: each top_logprobs entry holds only
    # the chosen token, as OpenAI's legacy API writes it.
    r = request(port, "POST", "/v1/completions", dict(body, logprobs=0))
    lp0 = r.json()["choices"][0]["logprobs"] if r.status == 200 else {}
    check(r.status == 200 and lp0.get("tokens") == lp.get("tokens")
          and [dict(t) for t in lp0.get("top_logprobs") or []]
          == [{tok: v} for tok, v in zip(lp0.get("tokens", []), lp0.get("token_logprobs", []))],
          "logprobs 0: the same tokens, each top_logprobs entry the chosen token alone", repr(r))

    # A stop string taken from the greedy text: the text ends just before it, finish_reason stop.
    full = request(port, "POST", "/v1/completions", {"prompt": prompt, "max_tokens": 16, "temperature": 0,
                                                     "ignore_eos": True})
    full_text = full.json()["choices"][0]["text"] if full.status == 200 else ""
    k = next((i for i in range(2, len(full_text) - 1) if "\ufffd" not in full_text[i:i + 2]), None)
    if check(k is not None, "the greedy text has two whole characters to stop at", full_text):
        stop = full_text[k:k + 2]
        want = full_text[:full_text.index(stop)]
        sb = {"prompt": prompt, "max_tokens": 16, "temperature": 0, "ignore_eos": True, "stop": ["\u2603\u2603", stop]}
        r = request(port, "POST", "/v1/completions", sb)
        got = r.json()["choices"][0] if r.status == 200 else {}
        check(got.get("text") == want and got.get("finish_reason") == "stop",
              "a stop string: the text ends before it, finish_reason stop",
              {"request": sb, "full text": full_text, "want": want, "reply": repr(r)})
        s2 = request(port, "POST", "/v1/completions", dict(sb, stream=True))
        try:
            st, sf = collect_completion_stream(parse_sse(s2.body))[:2]
        except ValueError as e:
            st, sf = str(e), {}
        check(st == {0: want} and sf == {0: ["stop"]}, "a stop string, streamed: the same text, finish_reason stop",
              {"request": sb, "want": want, "streamed": st, "finishes": sf})

    # A prompt of token ids: the model's own reference prompt, counted as sent (no BOS added).
    expected = json.loads((Path(model_dir) / "expected.json").read_text())
    ids_body = {"prompt": expected["prompt_ids"], "max_tokens": len(expected["greedy_ids"]), "temperature": 0,
                "ignore_eos": True}
    r = request(port, "POST", "/v1/completions", ids_body)
    c2 = r.json() if r.status == 200 else {}
    check(r.status == 200 and c2.get("usage", {}).get("prompt_tokens") == len(expected["prompt_ids"])
          and c2["usage"]["completion_tokens"] == len(expected["greedy_ids"])
          and c2["choices"][0]["finish_reason"] == "length",
          "prompt as token ids: its tokens counted as sent, ignore_eos runs to max_tokens", {"request": ids_body,
                                                                                            "reply": repr(r)})
    # The same prompt as text ("Once upon a time"): the tokenizer adds BOS, giving the same ids.
    text_body = dict(ids_body, prompt=expected["prompt"])
    r2 = request(port, "POST", "/v1/completions", text_body)
    c3 = r2.json() if r2.status == 200 else {}
    check(r2.status == 200 and c3.get("usage", {}).get("prompt_tokens") == len(expected["prompt_ids"])
          and c3["choices"][0]["text"] == c2.get("choices", [{}])[0].get("text"),
          "the prompt as text continues as its token ids do", {"ids": repr(r), "text": repr(r2)})


def check_embeddings(check, port, served, model_dir):
    """/v1/embeddings of the reference's prompt is the reference's final hidden state (float64 PyTorch,
    scripts/reference/llama_reference.py) at its last token: raw with normalize false, of unit length
    by default, and the same values as base64 of little-endian float32. 1e-3: float32 against
    float64 on values of order 1 (tests/engine/cpu_backend_test.cc states the bound)."""
    expected = json.loads((Path(model_dir) / "expected.json").read_text())
    want = expected["prompt_final_hidden"]
    norm = math.sqrt(sum(x * x for x in want))
    raw_body = {"model": served, "input": expected["prompt"], "normalize": False}
    r = request(port, "POST", "/v1/embeddings", raw_body)
    body = r.json() if r.status == 200 else {}
    data = body.get("data", [{}])
    got = data[0].get("embedding", []) if data else []
    check(r.status == 200 and body.get("object") == "list" and body.get("model") == served
          and data[0].get("object") == "embedding" and data[0].get("index") == 0
          and body.get("usage", {}).get("prompt_tokens") == len(expected["prompt_ids"])
          and body["usage"].get("total_tokens") == len(expected["prompt_ids"]),
          "embeddings reply: a list of one embedding, usage counts the prompt", repr(r))
    check(len(got) == len(want) and all(abs(a - b) < 1e-3 for a, b in zip(got, want)),
          "embedding, normalize false: the reference's final hidden state", {"got": got[:4], "want": want[:4]})
    b = request(port, "POST", "/v1/embeddings",
                {"input": [expected["prompt"], expected["prompt_ids"]], "encoding_format": "base64"})
    bdata = b.json().get("data", []) if b.status == 200 else []
    decoded = [list(struct.unpack(f"<{len(want)}f", base64.b64decode(d["embedding"]))) for d in bdata
               if isinstance(d.get("embedding"), str) and len(base64.b64decode(d["embedding"])) == 4 * len(want)]
    check(len(decoded) == 2 and all(abs(a - w / norm) < 1e-3 for v in decoded for a, w in zip(v, want)),
          "embeddings as base64 float32, by default of unit length; text and its token ids alike", repr(b))
    bad = request(port, "POST", "/v1/embeddings", {"input": []})
    check(is_error(bad, 400), "embeddings of no input: a 400 error object", repr(bad))


def check_seeds(check, port):
    base = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "ignore_eos": True}
    seed = 1234

    def texts(body):
        r = request(port, "POST", "/v1/completions", body)
        if r.status != 200:
            return None, r
        c = r.json()
        return [ch["text"] for ch in sorted(c["choices"], key=lambda ch: ch["index"])], c

    a, ra = texts(dict(base, seed=seed))
    b, rb = texts(dict(base, seed=seed))
    check(a is not None and a == b, f"seed {seed} twice: the same text", {"first": ra, "second": rb})
    other, ro = texts(dict(base, seed=seed + 100))
    check(other is not None and other != a, f"seeds {seed} and {seed + 100}: different texts (temperature 1)",
          {"first": a, "other": other})
    many, rm = texts(dict(base, seed=seed, n=3))
    alone = [texts(dict(base, seed=seed + i))[0] for i in range(3)]
    check(many is not None and len(many) == 3 and [ch["index"] for ch in rm["choices"]] == [0, 1, 2]
          and rm["usage"]["completion_tokens"] == 36,
          "n = 3: three choices at indices 0..2, usage counts all their tokens", rm)
    check(many is not None and all(alone[i] == [many[i]] for i in range(3)),
          f"n = 3 with seed {seed}: choice i equals the request alone with seed {seed} + i",
          {"n=3": many, "alone": alone})
    check(many is not None and len(set(many)) == 3, "n = 3: the three choices differ", many)
    # The same n = 3 request streamed: the choices interleave, each adds up to its text.
    s = request(port, "POST", "/v1/completions", dict(base, seed=seed, n=3, stream=True))
    try:
        stexts, finishes, _, _, _, shapes_ok = collect_completion_stream(parse_sse(s.body))
    except ValueError as e:
        stexts, finishes, shapes_ok = str(e), {}, False
    check(shapes_ok and many is not None and stexts == dict(enumerate(many))
          and finishes == {0: ["length"], 1: ["length"], 2: ["length"]},
          "n = 3 streamed: each index adds up to its unstreamed text and finishes once",
          {"streamed": stexts, "finishes": finishes, "unstreamed": many})
    # Chat too: a seed repeats.
    chat = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_completion_tokens": 10,
            "temperature": 0.8, "top_p": 0.9, "seed": 42}
    r1, r2 = request(port, "POST", "/v1/chat/completions", chat), request(port, "POST", "/v1/chat/completions", chat)
    check(r1.status == 200 and r2.status == 200 and r1.json()["choices"] == r2.json()["choices"],
          "chat with seed 42 twice (temperature 0.8, top_p 0.9): the same reply", {"request": chat, "a": r1, "b": r2})


# The name is bounded: the tiny model's random strings would otherwise run past max_tokens.
PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
          "required": ["name", "age"],
          "additionalProperties": False}


def check_structured(check, port):
    messages = [{"role": "user", "content": "Describe a person as JSON."}]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    finished, seen = 0, []
    for seed in (1, 2, 3):
        body = {"messages": messages, "response_format": fmt, "temperature": 1.0, "seed": seed, "n": 2,
                "max_tokens": 64}
        r = request(port, "POST", "/v1/chat/completions", body)
        if not check(r.status == 200, f"json_schema chat, seed {seed}: 200", {"request": body, "reply": repr(r)}):
            continue
        for ch in r.json()["choices"]:
            content, reason = ch["message"]["content"], ch["finish_reason"]
            seen.append((seed, ch["index"], reason, content))
            if reason != "stop":
                continue
            finished += 1
            try:
                obj = json.loads(content)
            except ValueError:
                obj = None
            check(isinstance(obj, dict) and set(obj) == {"name", "age"} and isinstance(obj["name"], str)
                  and isinstance(obj["age"], int) and not isinstance(obj["age"], bool),
                  f"json_schema chat, seed {seed} choice {ch['index']}: an object with a string name and an integer age",
                  {"request": body, "content": content})
    check(finished > 0, "json_schema chat: some choice finished (stop) within 64 tokens", seen)

    body = {"messages": messages, "response_format": {"type": "json_object"}, "temperature": 1.0, "seed": 7,
            "n": 3, "max_tokens": 48}
    r = request(port, "POST", "/v1/chat/completions", body)
    outs = [(ch["finish_reason"], ch["message"]["content"]) for ch in r.json()["choices"]] if r.status == 200 else []
    done = [c for reason, c in outs if reason == "stop"]

    def is_object(text):
        try:
            return isinstance(json.loads(text), dict)
        except ValueError:
            return False
    check(r.status == 200 and len(outs) == 3 and all(is_object(c) for c in done),
          "json_object chat: every finished choice is a JSON object", {"request": body, "replies": outs})
    # An unfinished one is still a prefix of some JSON object.
    check(all(c.lstrip().startswith("{") for _, c in outs), "json_object chat: every choice opens an object", outs)

    body = {"messages": [{"role": "user", "content": "Yes or no?"}],
            "response_format": {"type": "choice", "choice": ["yes", "no"]}, "temperature": 1.0, "seed": 11, "n": 6,
            "max_tokens": 8}
    r = request(port, "POST", "/v1/chat/completions", body)
    outs = [(ch["finish_reason"], ch["message"]["content"]) for ch in r.json()["choices"]] if r.status == 200 else []
    check(r.status == 200 and len(outs) == 6 and all(c in ("yes", "no") for reason, c in outs if reason == "stop")
          and any(reason == "stop" for reason, _ in outs),
          "choice [yes, no]: each finished reply is yes or no", {"request": body, "replies": outs})

    pattern = r"[0-9]{3}-[a-z]{2}"
    body = {"prompt": "A code:", "response_format": {"type": "regex", "regex": pattern}, "temperature": 1.0,
            "seed": 5, "n": 3, "max_tokens": 16}
    r = request(port, "POST", "/v1/completions", body)
    outs = [(ch["finish_reason"], ch["text"]) for ch in r.json()["choices"]] if r.status == 200 else []
    check(r.status == 200 and len(outs) == 3 and all(reason == "stop" and re.fullmatch(pattern, t) for reason, t in outs),
          f"regex {pattern} (completions): every choice matches it whole and stops", {"request": body, "replies": outs})

    # Streamed structured output adds up to the same instance.
    body = {"messages": messages, "response_format": fmt, "temperature": 1.0, "seed": 1, "max_tokens": 64}
    r = request(port, "POST", "/v1/chat/completions", body)
    s = request(port, "POST", "/v1/chat/completions", dict(body, stream=True))
    try:
        content = collect_chat_stream(parse_sse(s.body))[0]
    except ValueError as e:
        content = str(e)
    check(r.status == 200 and content == {0: r.json()["choices"][0]["message"]["content"]},
          "json_schema chat streamed: adds up to the unstreamed reply", {"streamed": content, "unstreamed": repr(r)})


def check_chat_stream(check, port, served):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"},
                {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Why is the sky blue?"}]
    body = {"model": served, "messages": messages, "temperature": 0, "max_completion_tokens": 16,
            "logprobs": True, "top_logprobs": 2}
    r = request(port, "POST", "/v1/chat/completions", body, headers={"X-Request-Id": "py-chat"})
    if not check(r.status == 200, "greedy chat: 200", {"request": body, "reply": repr(r)}):
        return
    c = r.json()
    ch = (c.get("choices") or [{}])[0]
    msg, lp = ch.get("message", {}), (ch.get("logprobs") or {}).get("content")
    check(c.get("id") == "chatcmpl-py-chat" and c.get("object") == "chat.completion" and c.get("model") == served
          and len(c.get("choices", [])) == 1 and ch.get("index") == 0
          and msg.get("role") == "assistant" and isinstance(msg.get("content"), str),
          "chat completion: id from X-Request-Id, object, model, an assistant message", c)
    check(usage_ok(c.get("usage")) and ch.get("finish_reason") in ("stop", "length")
          and (ch["finish_reason"] == "stop" or c["usage"]["completion_tokens"] == 16),
          "chat usage adds up; finish_reason stop, or length at max_completion_tokens", c)
    check(isinstance(lp, list) and len(lp) == c["usage"]["completion_tokens"]
          and all(isinstance(e.get("token"), str) and e.get("logprob", 1) <= 0 and isinstance(e.get("bytes"), list)
                  and len(e.get("top_logprobs", [])) == 2
                  and close(e["top_logprobs"][0]["logprob"], e["logprob"])
                  and e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"]
                  for e in lp),
          "chat logprobs: one entry per token, two alternatives each, the greedy pick the likeliest", ch)
    check(all(e["bytes"] == list(e["token"].encode("utf-8")) for e in lp or [] if "\ufffd" not in e["token"]),
          "chat logprobs: bytes are the token's UTF-8", lp)

    for n in (1, 2):
        sbody = dict(body, n=n, stream=True, stream_options={"include_usage": True})
        s = request(port, "POST", "/v1/chat/completions", sbody, headers={"X-Request-Id": f"py-chat-{n}"})
        try:
            chunks = parse_sse(s.body)
        except ValueError as e:
            check(False, f"streamed chat n={n} is an event stream", f"{e}; {s!r}")
            continue
        content, first_role, later_roles, finishes, slp, usage, ids, shapes_ok = collect_chat_stream(chunks)
        check(s.status == 200 and shapes_ok and ids == {f"chatcmpl-py-chat-{n}"},
              f"streamed chat n={n}: chat.completion.chunk events of one choice each, one id", chunks)
        check(first_role == {i: "assistant" for i in range(n)} and not later_roles,
              f"streamed chat n={n}: each choice's first chunk has role assistant, no later one a role",
              {"first": first_role, "later": later_roles})
        check(content == {i: msg.get("content") for i in range(n)},
              f"streamed chat n={n}: each choice's content adds up to the unstreamed (greedy) reply",
              {"streamed": content, "unstreamed": msg.get("content")})
        check(finishes == {i: [ch.get("finish_reason")] for i in range(n)},
              f"streamed chat n={n}: each choice finishes once, as unstreamed", finishes)
        check(all([e["token"] for e in slp.get(i, [])] == [e["token"] for e in lp] for i in range(n)),
              f"streamed chat n={n}: logprob tokens add up to the unstreamed ones", {"streamed": slp})
        check(usage is not None and usage_ok(usage) and usage["prompt_tokens"] == c["usage"]["prompt_tokens"]
              and usage["completion_tokens"] == n * c["usage"]["completion_tokens"]
              and chunks[-1].get("choices") == [] and chunks[-1].get("usage") == usage,
              f"streamed chat n={n}: the last chunk has choices [] and usage for all choices",
              {"usage": usage, "unstreamed": c.get("usage")})

    # Content as text parts, joined, and a null model = the served one.
    parts = [dict(m) for m in messages]
    parts[-1]["content"] = [{"type": "text", "text": "Why is the sky blue?"}]
    r2 = request(port, "POST", "/v1/chat/completions", dict(body, model=None, messages=parts))
    check(r2.status == 200 and r2.json()["choices"][0]["message"]["content"] == msg.get("content"),
          "chat with content as one text part (and model null): the same reply", repr(r2))


def parse_typed_sse(text):
    """The Responses API's stream: `event: TYPE` and `data: {json}` per event, each followed by a
    blank line, with no [DONE]; returns (type, payload) pairs, raising ValueError on any other shape."""
    if not text.endswith("\n\n"):
        raise ValueError("the stream does not end with a blank line")
    events = []
    for event in text[:-2].split("\n\n"):
        lines = event.split("\n")
        if len(lines) != 2 or not lines[0].startswith("event: ") or not lines[1].startswith("data: "):
            raise ValueError(f"not an event line and a data line: {event[:200]!r}")
        payload = loads(lines[1][len("data: "):])
        if payload.get("type") != lines[0][len("event: "):]:
            raise ValueError(f"the event's name is not its data's type: {event[:200]!r}")
        events.append((payload["type"], payload))
    return events


def check_responses(check, port, served):
    """POST /v1/responses: the conversation of check_chat_stream as instructions and input items
    gives the chat endpoint's greedy reply, as a response object and as the Responses stream."""
    chat = {"model": served, "temperature": 0, "max_completion_tokens": 16,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"},
                         {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Why is the sky blue?"}]}
    c = request(port, "POST", "/v1/chat/completions", chat)
    if not check(c.status == 200, "responses: the chat reference is 200", repr(c)):
        return
    want, want_usage = c.json()["choices"][0]["message"]["content"], c.json()["usage"]
    want_status = "incomplete" if c.json()["choices"][0]["finish_reason"] == "length" else "completed"
    body = {"model": served, "temperature": 0, "max_output_tokens": 16, "instructions": "Be brief.",
            "input": [{"role": "user", "content": "Hello?"},
                      {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
                      {"role": "user", "content": [{"type": "input_text", "text": "Why is the sky blue?"}]}]}
    r = request(port, "POST", "/v1/responses", dict(body, store=False), headers={"X-Request-Id": "py-resp"})
    if not check(r.status == 200, "responses: 200", {"request": body, "reply": repr(r)}):
        return
    resp = r.json()
    out = resp.get("output") or [{}]
    text = ((out[0].get("content") or [{}])[0]).get("text")
    check(resp.get("id") == "resp_py-resp" and resp.get("object") == "response" and resp.get("model") == served
          and resp.get("status") == want_status and len(out) == 1 and out[0].get("type") == "message"
          and out[0].get("role") == "assistant" and out[0].get("id", "").startswith("msg_"),
          "responses: a response object of one assistant message, its status as the chat reply's finish", resp)
    check(text == want, "responses: the message's output_text is the chat endpoint's greedy reply",
          {"responses": text, "chat": want})
    u = resp.get("usage") or {}
    check(u.get("input_tokens") == want_usage["prompt_tokens"] and u.get("output_tokens") == want_usage["completion_tokens"]
          and u.get("total_tokens") == want_usage["total_tokens"]
          and isinstance(u.get("input_tokens_details", {}).get("cached_tokens"), int),
          "responses: usage in input/output tokens, as the chat reply counts them", {"got": u, "chat": want_usage})
    check(resp.get("instructions") == "Be brief." and resp.get("max_output_tokens") == 16 and resp.get("store") is False,
          "responses: the request's settings repeated, store false as asked", resp)

    s = request(port, "POST", "/v1/responses", dict(body, stream=True))
    try:
        events = parse_typed_sse(s.body)
    except ValueError as e:
        check(False, "responses stream: typed server-sent events", f"{e}; {s!r}")
        return
    types = [t for t, _ in events]
    deltas = "".join(p["delta"] for t, p in events if t == "response.output_text.delta")
    final = events[-1][1].get("response", {}) if events else {}
    check(s.status == 200 and types[:2] == ["response.created", "response.in_progress"]
          and types[-1] == f"response.{want_status}"
          and [p.get("sequence_number") for _, p in events] == list(range(len(events))),
          "responses stream: created, in_progress, ..., then completed (or incomplete), numbered from 0", types)
    check(deltas == want and final.get("output", [{}])[0].get("content", [{}])[0].get("text") == want,
          "responses stream: the text deltas, and the final response's text, are the greedy reply",
          {"deltas": deltas, "want": want})

    # Stored (the default): read back by its random id, and continued by previous_response_id as the
    # chat endpoint runs the whole conversation (the instructions are each request's own).
    st = request(port, "POST", "/v1/responses", body)
    stored = st.json() if st.status == 200 else {}
    if not check(stored.get("store") is True and stored.get("id", "").startswith("resp_") and len(stored["id"]) == 37,
                 "responses: stored by default, under a random id", repr(st)):
        return
    g = request(port, "GET", "/v1/responses/" + stored["id"])
    check(g.status == 200 and g.json() == stored, "responses: a stored response reads back as it was returned", repr(g))
    said = stored["output"][0]["content"][0]["text"]
    nxt = request(port, "POST", "/v1/responses", {"model": served, "temperature": 0, "max_output_tokens": 4,
                                                  "instructions": "Be brief.", "previous_response_id": stored["id"],
                                                  "input": "Thanks."})
    ref = request(port, "POST", "/v1/chat/completions",
                  dict(chat, max_completion_tokens=4,
                       messages=chat["messages"] + [{"role": "assistant", "content": said},
                                                    {"role": "user", "content": "Thanks."}]))
    check(nxt.status == 200 and ref.status == 200
          and nxt.json()["usage"]["input_tokens"] == ref.json()["usage"]["prompt_tokens"]
          and nxt.json()["output"][0]["content"][0]["text"] == ref.json()["choices"][0]["message"]["content"]
          and nxt.json()["previous_response_id"] == stored["id"],
          "responses: previous_response_id continues the stored conversation as the chat endpoint runs it whole",
          {"responses": repr(nxt), "chat": repr(ref)})
    d = request(port, "DELETE", "/v1/responses/" + stored["id"])
    check(d.status == 200 and d.json() == {"id": stored["id"], "object": "response", "deleted": True},
          "responses: DELETE deletes a stored response", repr(d))
    e = request(port, "POST", "/v1/responses", dict(body, previous_response_id=stored["id"]))
    check(is_error(e, 400, "invalid_argument") and "previous_response_id" in e.json()["error"]["message"],
          "responses: a deleted response cannot be continued (400, naming the field)", repr(e))


def check_messages(check, port, served):
    """Anthropic's POST /v1/messages: the conversation of check_chat_stream as a system prompt and
    messages gives the chat endpoint's greedy reply, as a message and as the Messages stream; its
    count_tokens and errors have Anthropic's shapes."""
    chat = {"model": served, "temperature": 0, "max_completion_tokens": 16,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"},
                         {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Why is the sky blue?"}]}
    c = request(port, "POST", "/v1/chat/completions", chat)
    if not check(c.status == 200, "messages: the chat reference is 200", repr(c)):
        return
    want, want_usage = c.json()["choices"][0]["message"]["content"], c.json()["usage"]
    want_stop = "max_tokens" if c.json()["choices"][0]["finish_reason"] == "length" else "end_turn"
    body = {"model": served, "temperature": 0, "max_tokens": 16, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": "Hello?"},
                         {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
                         {"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}]}
    headers = {"x-api-key": "unused", "anthropic-version": "2023-06-01", "X-Request-Id": "py-msg"}
    r = request(port, "POST", "/v1/messages", body, headers=headers)
    if not check(r.status == 200, "messages: 200", {"request": body, "reply": repr(r)}):
        return
    m = r.json()
    content = m.get("content") or [{}]
    u = m.get("usage") or {}
    check(m.get("id") == "msg_py-msg" and m.get("type") == "message" and m.get("role") == "assistant"
          and m.get("model") == served and len(content) == 1 and content[0].get("type") == "text"
          and m.get("stop_reason") == want_stop and m.get("stop_sequence") is None,
          "messages: a message of one text block, its stop_reason as the chat reply's finish", m)
    check(content[0].get("text") == want, "messages: the text block is the chat endpoint's greedy reply",
          {"messages": content[0].get("text"), "chat": want})
    check(u.get("input_tokens", 0) + u.get("cache_read_input_tokens", 0) == want_usage["prompt_tokens"]
          and u.get("output_tokens") == want_usage["completion_tokens"] and u.get("cache_creation_input_tokens") == 0,
          "messages: usage in Anthropic's terms (cached prompt tokens apart), as the chat reply counts them",
          {"got": u, "chat": want_usage})

    s = request(port, "POST", "/v1/messages", dict(body, stream=True))
    try:
        events = parse_typed_sse(s.body)
    except ValueError as e:
        check(False, "messages stream: typed server-sent events", f"{e}; {s!r}")
        return
    types = [t for t, _ in events]
    deltas = "".join(p["delta"]["text"] for t, p in events if t == "content_block_delta")
    final = events[-2][1] if len(events) >= 2 else {}
    check(s.status == 200 and types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
          and types.count("content_block_start") == 1 and types.count("content_block_stop") == 1,
          "messages stream: message_start, one text block's start/deltas/stop, message_delta, message_stop", types)
    check(deltas == want and final.get("delta", {}).get("stop_reason") == want_stop
          and final.get("usage", {}).get("output_tokens") == want_usage["completion_tokens"],
          "messages stream: the text deltas are the greedy reply; message_delta has its stop_reason and usage",
          {"deltas": deltas, "want": want, "message_delta": final})

    n = request(port, "POST", "/v1/messages/count_tokens", {k: v for k, v in body.items() if k != "max_tokens"})
    check(n.status == 200 and n.json() == {"input_tokens": want_usage["prompt_tokens"]},
          "messages: count_tokens counts the prompt the chat endpoint ran", repr(n))
    e = request(port, "POST", "/v1/messages", {k: v for k, v in body.items() if k != "max_tokens"})
    check(e.status == 400 and e.json().get("type") == "error"
          and e.json().get("error", {}).get("type") == "invalid_request_error"
          and "max_tokens" in e.json()["error"].get("message", ""),
          "messages: a request without max_tokens is 400, an Anthropic invalid_request_error naming it", repr(e))


def check_errors(check, port, served):
    cases = [
        ("invalid JSON", "/v1/completions", b'{"prompt": "x", ', 400, None, "JSON"),
        ("a JSON array body", "/v1/completions", b"[]", 400, None, None),
        ("temperature -1", "/v1/completions", {"prompt": "x", "temperature": -1}, 400, None, "temperature"),
        ("temperature -1, streamed", "/v1/completions", {"prompt": "x", "temperature": -1, "stream": True}, 400, None,
         "temperature"),
        ("max_tokens 0", "/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, None, "max_tokens"),
        ("logprobs 21", "/v1/completions", {"prompt": "x", "logprobs": 21}, 400, None, "logprobs"),
        ("top_p 0", "/v1/completions", {"prompt": "x", "top_p": 0}, 400, None, "top_p"),
        ("n as a string", "/v1/completions", {"prompt": "x", "n": "2"}, 400, None, "n"),
        ("no prompt", "/v1/completions", {"max_tokens": 2}, 400, None, "prompt"),
        ("no messages", "/v1/chat/completions", {"messages": []}, 400, None, "messages"),
        ("top_logprobs without logprobs", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400, None, "top_logprobs"),
        ("an unknown response_format", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}, 400, None,
         "response_format"),
        ("a role the template refuses", "/v1/chat/completions",
         {"messages": [{"role": "robot", "content": "x"}], "max_tokens": 2}, 400, None, None),
        ("a prompt over max_model_len", "/v1/completions", {"prompt": list(range(3, 500)) * 3, "max_tokens": 2},
         400, None, None),
        ("an empty choice list", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "choice", "choice": []},
          "max_tokens": 2}, 400, None, "choice"),
        ("a token id outside the vocabulary", "/v1/completions", {"prompt": [1, 100000], "max_tokens": 2}, 400, None,
         "100000"),
        ("prompt + max_tokens over max_model_len", "/v1/completions", {"prompt": "x", "max_tokens": 5000}, 400, None,
         None),
        ("an unknown model", "/v1/completions", {"model": "gpt-4o", "prompt": "x"}, 404, "model_not_found", "gpt-4o"),
        ("an unknown model (chat)", "/v1/chat/completions",
         {"model": served + "-not", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found", None),
    ]
    for what, path, body, status, code, mention in cases:
        r = request(port, "POST", path, raw=body) if isinstance(body, bytes) else request(port, "POST", path, body)
        msg = r.json()["error"]["message"] if is_error(r, status) else ""
        check(is_error(r, status, code) and (mention is None or mention in msg),
              f"{what}: {status} with an error object" + (f" naming {mention!r}" if mention else ""),
              {"request": body if isinstance(body, dict) else repr(body), "reply": repr(r)})
    # An X-Request-Id that is not UTF-8 (HTTP allows such bytes; the id is a protobuf string):
    # refused as the client's mistake, or the id replaced; never a server error.
    body = {"prompt": "x", "max_tokens": 2}
    r = request(port, "POST", "/v1/completions", body, headers={"X-Request-Id": b"caf\xe9"})
    check(r.status == 200 or (is_error(r, 400) and "X-Request-Id" in r.json()["error"]["message"]),
          "an X-Request-Id that is not UTF-8: 400 naming the header (or served), not a server error",
          {"header": "X-Request-Id: caf\\xe9", "reply": repr(r)})
    r = request(port, "GET", "/v1/nothing")
    check(is_error(r, 404), "an unknown route: 404 with an error object", r)
    r = request(port, "GET", "/v1/completions")
    check(r.status in (404, 405) and is_error(r, r.status), "GET on a POST route: 404/405 with an error object", r)
    r = request(port, "GET", "/health")
    check(r.status == 200, "GET /health: 200", r)
    r = request(port, "POST", "/v1/completions", {"prompt": "Still there?", "max_tokens": 4, "temperature": 0})
    check(r.status == 200 and r.json()["usage"]["completion_tokens"] >= 1, "after the errors a request is served", r)


def check_concurrent(check, port):
    """Several requests at once, streamed and not, all answered in full."""
    results = [None] * 8

    def one(i):
        body = {"prompt": f"Request {i} says", "max_tokens": 24, "temperature": 1.0, "seed": i, "ignore_eos": True,
                "stream": i % 2 == 0}
        try:
            r = request(port, "POST", "/v1/completions", body)
            if body["stream"]:
                texts, fin, _, _, _, ok = collect_completion_stream(parse_sse(r.body))
                results[i] = (r.status, ok and fin == {0: ["length"]}, texts.get(0))
            else:
                c = r.json()
                results[i] = (r.status, c["choices"][0]["finish_reason"] == "length"
                              and c["usage"]["completion_tokens"] == 24, c["choices"][0]["text"])
        except Exception as e:  # noqa: BLE001 - reported as the check's detail
            results[i] = (None, False, repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check(all(r is not None and r[0] == 200 and r[1] for r in results),
          "8 requests at once (half streamed): all 200, each runs to max_tokens", results)
    # The same seeds one at a time give the same texts (a seed is the request's own).
    again = []
    for i in (0, 1):
        body = {"prompt": f"Request {i} says", "max_tokens": 24, "temperature": 1.0, "seed": i, "ignore_eos": True}
        r = request(port, "POST", "/v1/completions", body)
        again.append(r.json()["choices"][0]["text"] if r.status == 200 else repr(r))
    check([r[2] if r else None for r in results[:2]] == again,
          "a seeded request alone gives what it gave among others", {"together": results[:2], "alone": again})


def check_auth_queue_drain(check, binary, model):
    """A second server: bearer token, one running sequence, a queue of one, a slowed engine."""
    env = dict(os.environ, KVSERVE_AUTH_TOKEN="secret")
    srv = Server(binary, model, ["--max-num-seqs", "1", "--max-queue", "1", "--debug-step-delay-ms", "20"], env=env)
    auth = {"Authorization": "Bearer secret"}
    # ignore_eos: sampled at the default temperature 1, an early end-of-text would cut it short.
    small = {"prompt": "Hi", "max_tokens": 2, "ignore_eos": True}
    streams = []
    try:
        port = srv.http_port
        r = request(port, "POST", "/v1/completions", small)
        check(is_error(r, 401), "token server: a completion without Authorization is 401 with an error object", r)
        r = request(port, "POST", "/v1/completions", small, headers={"Authorization": "Bearer wrong"})
        check(is_error(r, 401), "token server: a wrong bearer token is 401", r)
        r = request(port, "POST", "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "stream": True})
        check(is_error(r, 401), "token server: a streamed chat without Authorization is 401 (before any event)", r)
        r = request(port, "GET", "/v1/models")
        check(is_error(r, 401), "token server: GET /v1/models without Authorization is 401", r)
        r = request(port, "POST", "/v1/completions", small, headers=auth)
        check(r.status == 200 and r.json()["usage"]["completion_tokens"] == 2,
              "token server: the same completion with Bearer secret is 200", r)
        r = request(port, "GET", "/v1/models", headers=auth)
        check(r.status == 200 and r.json()["data"][0]["id"] == model, "token server: GET /v1/models with the token", r)

        # Queue: one running (streaming, so we see it start), one waiting, the next refused.
        long = {"prompt": "Go on", "max_tokens": 150, "ignore_eos": True, "temperature": 0, "stream": True}
        running = Stream(port, "/v1/completions", long, headers=auth)
        streams.append(running)
        first = running.next_event()
        check(running.status == 200 and isinstance(first, dict), "queue: a long streamed request runs", first)
        # Two more at once: one waits in the queue, the other finds it full (whichever comes second).
        results = queue.Queue()

        def send(name):
            results.put((name, request(port, "POST", "/v1/completions", dict(small, max_tokens=3), headers=auth)))

        senders = [threading.Thread(target=send, args=(name,)) for name in ("b", "c")]
        for t in senders:
            t.start()
        try:
            refused = results.get(timeout=10)[1]  # the refusal comes back at once
        except queue.Empty:
            refused = "no reply within 10 s"
        check(isinstance(refused, Reply) and is_error(refused, 429) and refused.headers.get("retry-after") is not None,
              "queue full: 429 with an error object and Retry-After", refused)

        # Drain: SIGTERM while the long request runs; new requests get 503; it still finishes.
        srv.proc.send_signal(signal.SIGTERM)
        wait_draining(port)
        r = request(port, "POST", "/v1/completions", small, headers=auth)
        check(is_error(r, 503), "draining: a new request is 503 with an error object", r)
        r = request(port, "GET", "/health")
        check(r.status == 503, "draining: /health is 503", r)
        rest = running.rest()
        running.close()
        chunks = [first] + [e for e in rest if isinstance(e, dict)]
        texts, finishes, _, _, _, ok = collect_completion_stream(chunks)
        check(ok and rest[-1:] == ["[DONE]"] and finishes == {0: ["length"]},
              "draining: the running stream finishes (length) and ends with [DONE]",
              {"finishes": finishes, "last": rest[-3:]})
        for t in senders:
            t.join(30)
        w = results.get(timeout=1)[1] if not results.empty() else None
        check(w is not None and w.status == 200 and w.json()["usage"]["completion_tokens"] == 3,
              "draining: the request that waited in the queue is still served", w)
        try:
            code = srv.proc.wait(timeout=30)  # by itself: the SIGTERM above was the only signal
        except subprocess.TimeoutExpired:
            code = "still running 30 s after the drain"
        check(code == 0, "token server exits 0 by itself after draining", f"exit {code}; {srv.tail()}")
    finally:
        for s in streams:
            s.close()
        srv.stop(timeout=10)


def wait_draining(port, timeout=10):
    """Until /health says the server drains (503): the signal has been handled, not only sent. A
    fixed sleep is too short for a sanitizer build on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request(port, "GET", "/health").status == 503:
            return
        time.sleep(0.01)


def check_second_signal(check, binary, model):
    """A second SIGTERM while draining stops the server at once (main.cc: "second signal: stopping
    now"), still through its own shutdown: exit 0, and the cut stream ends."""
    srv = Server(binary, model, ["--debug-step-delay-ms", "20"])
    stream = None
    try:
        stream = Stream(srv.http_port, "/v1/completions",
                        {"prompt": "Go on", "max_tokens": 500, "ignore_eos": True, "temperature": 0, "stream": True})
        first = stream.next_event()
        srv.proc.send_signal(signal.SIGTERM)
        wait_draining(srv.http_port)  # two signals sent at once would merge into one
        srv.proc.send_signal(signal.SIGTERM)
        try:
            code = srv.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = "still running 20 s after the second SIGTERM"
        rest = stream.rest() if isinstance(first, dict) else []
        check(code == 0 and any("second signal" in line for line in srv.lines),
              "a second SIGTERM while draining: stops now, logs it, exits 0",
              f"exit {code} (-15: killed by the signal); events after the first: {len(rest)}; {srv.tail(6)}")
    finally:
        if stream:
            stream.close()
        srv.stop(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    start = time.time()

    check = Checker()
    srv = Server(args.server, args.model)
    served = args.model  # --model as given: the default served name
    try:
        print(f"kvserve OpenAI API on port {srv.http_port}, gRPC on {srv.grpc_port}", flush=True)
        check_models(check, srv.http_port, served)
        check_greedy_completion(check, srv.http_port, served, args.model)
        check_embeddings(check, srv.http_port, served, args.model)
        check_seeds(check, srv.http_port)
        check_structured(check, srv.http_port)
        check_chat_stream(check, srv.http_port, served)
        check_responses(check, srv.http_port, served)
        check_messages(check, srv.http_port, served)
        check_errors(check, srv.http_port, served)
        check_concurrent(check, srv.http_port)
    except Exception:
        print("server output, last lines:\n" + srv.tail(30), file=sys.stderr)
        raise
    finally:
        code = srv.stop()
        check(code == 0, "server exits 0 on SIGTERM", f"exit {code}; {srv.tail()}")
    check_auth_queue_drain(check, args.server, args.model)
    check_second_signal(check, args.server, args.model)

    print(f"{check.checks - len(check.failures)} passed, {len(check.failures)} failed "
          f"in {time.time() - start:.1f} s")
    if check.failures:
        print("first server output, last lines:\n" + srv.tail(15))
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
