#!/usr/bin/env python3
"""Keeps the deployment recipes honest without Docker or a cluster.

    check_deploy.py --repo REPO --kvserve PATH/TO/kvserve [--self-test]

Checks deploy/Dockerfile, deploy/compose.yaml and deploy/k8s/*.yaml against the repository and
against the server itself (`kvserve --help`):
  - the image is built by exactly scripts/install_deps.sh then scripts/build.sh (both present and
    executable), from every source folder the build reads, with cmake options that exist;
  - every flag passed to the server exists and its value fits the flag's type and range;
  - gRPC and metrics ports agree across EXPOSE, HEALTHCHECK, compose, the k8s containers, probes
    and Services, and the server's defaults;
  - the OpenAI-compatible HTTP API (off by the server's default) is on in every recipe, on a fixed
    port of its own that the image's CMD sets and EXPOSE, compose, the k8s container and the
    Service all agree on, listening on all addresses;
  - grace periods exceed --drain-timeout (plus the preStop sleep), so a drain is never cut short;
  - the YAML files are well formed (a small parser of our own, cross-checked with PyYAML where it is
    installed), the k8s documents have apiVersion, kind and metadata.name, and hang together;
  - docs/operations.md mentions every server flag and every metric the server exports.
--self-test also breaks the recipes in memory in known ways and checks that each break is caught.
Only the standard library is needed. Prints one line per check and 'N passed, N failed'.
"""
import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys

# ----------------------------------------------------------------------------------------------
# A YAML subset parser: block mappings and sequences, plain/quoted scalars, flow [..] and {..},
# comments, several documents. Anything else (anchors, tags, block scalars, multi-line plain
# scalars) is an error, which keeps the recipes in a shape this check fully understands.
# ----------------------------------------------------------------------------------------------


class YamlError(Exception):
    pass


def _strip_comment(text):
    quote = None
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"" and (i == 0 or text[i - 1] in " \t[{,:-"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _split_top(text, sep):
    """Splits on sep outside quotes and brackets."""
    parts, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _key_split(text):
    """Returns (key, rest) if text is 'key: value' or 'key:', else None."""
    quote, depth = None, 0
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"" and i == 0:
            quote = c
        elif c in "[{" and i == 0:
            return None
        elif c == ":" and (i + 1 == len(text) or text[i + 1] == " "):
            return _scalar(text[:i].strip(), key=True), text[i + 1:].strip()
    return None


def _scalar(text, key=False):
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlError("unterminated double-quoted string: " + text)
        try:
            return json.loads(text)
        except ValueError as e:
            raise YamlError("bad double-quoted string %s: %s" % (text, e))
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError("unterminated single-quoted string: " + text)
        return text[1:-1].replace("''", "'")
    if key:
        return text
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlError("unterminated flow sequence: " + text)
        inner = text[1:-1].strip()
        return [] if not inner else [_scalar(p.strip()) for p in _split_top(inner, ",")]
    if text.startswith("{"):
        if not text.endswith("}"):
            raise YamlError("unterminated flow mapping: " + text)
        inner, out = text[1:-1].strip(), {}
        for part in _split_top(inner, ",") if inner else []:
            kv = _key_split(part.strip())
            if kv is None:
                raise YamlError("flow mapping entry without ': ': " + part)
            out[kv[0]] = _scalar(kv[1]) if kv[1] else None
        return out
    if text[:1] in ("|", ">", "&", "*", "!", "%", "@", "`"):
        raise YamlError("unsupported YAML here (block scalar, anchor, alias or tag): " + text)
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text in ("yes", "no", "on", "off", "Yes", "No", "On", "Off"):
        raise YamlError("ambiguous scalar %r (a boolean in YAML 1.1, a string in 1.2): quote it" % text)
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
        return float(text)
    return text


class _Parser:
    def __init__(self, lines, where):
        self.lines, self.i, self.where = lines, 0, where

    def err(self, msg):
        lineno = self.lines[min(self.i, len(self.lines) - 1)][2] if self.lines else 0
        raise YamlError("%s:%d: %s" % (self.where, lineno, msg))

    def node(self, indent):
        ind, text, _ = self.lines[self.i]
        if text == "-" or text.startswith("- "):
            return self.seq(ind)
        return self.mapping(ind)

    def seq(self, ind):
        out = []
        while self.i < len(self.lines):
            cur, text, lineno = self.lines[self.i]
            if cur < ind:
                break
            if cur > ind:
                self.err("unexpected indentation")
            if not (text == "-" or text.startswith("- ")):
                break
            rest = text[1:].lstrip()
            if not rest:
                self.i += 1
                if self.i < len(self.lines) and self.lines[self.i][0] > ind:
                    out.append(self.node(self.lines[self.i][0]))
                else:
                    out.append(None)
            else:
                self.lines[self.i] = (ind + len(text) - len(rest), rest, lineno)
                if _key_split(rest) is not None or rest.startswith("- "):
                    out.append(self.node(ind + len(text) - len(rest)))
                else:
                    out.append(_scalar(rest))
                    self.i += 1
                    if self.i < len(self.lines) and self.lines[self.i][0] > ind:
                        self.err("unexpected indentation (multi-line scalars are not supported)")
        return out

    def mapping(self, ind):
        out = {}
        while self.i < len(self.lines):
            cur, text, _ = self.lines[self.i]
            if cur < ind:
                break
            if cur > ind:
                self.err("unexpected indentation")
            if text == "-" or text.startswith("- "):
                break
            kv = _key_split(text)
            if kv is None:
                self.err("expected 'key: value', got %r" % text)
            key, rest = kv
            if key in out:
                self.err("duplicate key %r" % key)
            self.i += 1
            nxt = self.lines[self.i] if self.i < len(self.lines) else None
            if rest:
                out[key] = _scalar(rest)
                if nxt and nxt[0] > ind:
                    self.err("unexpected indentation (multi-line scalars are not supported)")
            elif nxt and nxt[0] > ind:
                out[key] = self.node(nxt[0])
            elif nxt and nxt[0] == ind and (nxt[1] == "-" or nxt[1].startswith("- ")):
                out[key] = self.seq(ind)
            else:
                out[key] = None
        return out


def parse_yaml(text, where="yaml"):
    """Returns the list of documents in text."""
    docs, cur = [], []
    for lineno, raw in enumerate(text.split("\n"), 1):
        if "\t" in raw:
            raise YamlError("%s:%d: tab character (YAML indents with spaces only)" % (where, lineno))
        if raw.rstrip() in ("---", "..."):
            docs.append(cur)
            cur = []
            continue
        if raw.startswith("%"):
            raise YamlError("%s:%d: directives are not supported" % (where, lineno))
        body = _strip_comment(raw)
        if body.strip():
            cur.append((len(body) - len(body.lstrip(" ")), body.strip(), lineno))
    docs.append(cur)
    out = []
    for lines in docs:
        if not lines:
            continue
        p = _Parser(lines, where)
        value = p.node(lines[0][0])
        if p.i != len(lines):
            p.err("unexpected content (indentation does not fit the structure above)")
        out.append(value)
    return out


# ----------------------------------------------------------------------------------------------
# The server's flags, from `kvserve --help` (CLI11's format: "  --name TYPE[:CHECK][=DEFAULT]").
# ----------------------------------------------------------------------------------------------


def parse_help(text):
    flags = {}
    for line in text.splitlines():
        m = re.match(r"^\s{2}(?:-\w,)?(--[A-Za-z0-9][\w-]*)(?: (\S(?:\S| (?! ))*))?", line)
        if not m:
            continue
        spec = m.group(2) or ""
        type_part, _, default = spec.partition("=")
        flags[m.group(1)] = {"type": type_part, "default": default if "=" in spec else None}
    return flags


def check_flag_value(name, value, spec):
    """Returns an error string or None."""
    t = spec["type"]
    if not t:
        return None if value is None else "%s takes no value" % name
    if value is None:
        return "%s needs a value" % name
    if "${" in value:
        return None  # filled in by compose from the environment
    base = t.split(":")[0].split(" ")[0]
    try:
        if base in ("INT", "UINT"):
            v = int(value)
        elif base == "FLOAT":
            v = float(value)
        else:
            return None
    except ValueError:
        return "%s=%s is not a %s" % (name, value, base)
    if base == "UINT" and v < 0:
        return "%s=%s must not be negative" % (name, value)
    if "POSITIVE" in t and v <= 0:
        return "%s=%s must be positive" % (name, value)
    if "NONNEGATIVE" in t and v < 0:
        return "%s=%s must not be negative" % (name, value)
    r = re.search(r"in \[(-?[\d.]+) - (-?[\d.]+)\]", t)
    if r and not float(r.group(1)) <= v <= float(r.group(2)):
        return "%s=%s is outside [%s, %s]" % (name, value, r.group(1), r.group(2))
    return None


def flags_in(args, known, where, fail):
    """Checks a server argument list; returns {flag: value}."""
    out, i = {}, 0
    args = [str(a) for a in args]
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("--"):
            fail("%s: argument %r is not a --flag (the server takes no positional arguments)" % (where, a))
            continue
        name, eq, value = a.partition("=")
        if not eq:
            value = None
            if i < len(args) and not args[i].startswith("--"):
                value = args[i]
                i += 1
        if name not in known:
            fail("%s: %s is not a flag of kvserve (see kvserve --help)" % (where, name))
            continue
        if name in out:
            fail("%s: %s given twice (the server rejects that)" % (where, name))
        err = check_flag_value(name, value, known[name])
        if err:
            fail("%s: %s" % (where, err))
        out[name] = value
    return out


def effective(flags, known, name):
    v = flags.get(name)
    return v if v is not None else known.get(name, {}).get("default")


def as_int(v):
    try:
        return int(str(v))
    except (TypeError, ValueError):
        return None


def as_float(v):
    try:
        return float(str(v))
    except (TypeError, ValueError):
        return None


def duration_s(text):
    """Compose durations: '45s', '1m30s', '1h', or a number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", str(text))
    if not parts or "".join(a + b for a, b in parts) != str(text):
        return None
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    return sum(float(a) * scale[b] for a, b in parts)


# ----------------------------------------------------------------------------------------------
# The Dockerfile.
# ----------------------------------------------------------------------------------------------


def parse_dockerfile(text):
    """Returns [(instruction, arguments, line number)], continuations joined, comments dropped."""
    out, buf, start = [], "", 0
    for lineno, raw in enumerate(text.split("\n"), 1):
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if not buf:
            start = lineno
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip(), start))
        buf = ""
    if buf.strip():
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip(), start))
    return out


def exec_form(rest):
    try:
        v = json.loads(rest)
        return v if isinstance(v, list) else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# The checks.
# ----------------------------------------------------------------------------------------------


class Report:
    def __init__(self, quiet=False):
        self.passed, self.failures, self.quiet = 0, [], quiet

    def check(self, ok, what):
        if ok:
            self.passed += 1
            if not self.quiet:
                print("ok:   " + what)
        else:
            self.failures.append(what)
            if not self.quiet:
                print("FAIL: " + what)
        return ok


def load_texts(repo):
    texts = {}
    for rel in ["deploy/Dockerfile", "deploy/compose.yaml", "docs/operations.md", "CMakeLists.txt",
                "CMakePresets.json", "server/metrics.cc", "scripts/build.sh"]:
        path = os.path.join(repo, rel)
        texts[rel] = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    for path in sorted(glob.glob(os.path.join(repo, "deploy/k8s/*.yaml")) +
                       glob.glob(os.path.join(repo, "deploy/k8s/*.yml"))):
        texts[os.path.relpath(path, repo)] = open(path, encoding="utf-8").read()
    return texts


def check_openai_flags(r, flags, known, where, image_port):
    """The OpenAI-compatible API as the image serves it: its port, on every address. Returns the port."""
    port = as_int(effective(flags, known, "--openai-port"))
    r.check(port == image_port,
            "%s serves the OpenAI-compatible API on the image's port (--openai-port %s, image %s)" %
            (where, port, image_port))
    r.check(effective(flags, known, "--openai-host") == "0.0.0.0",
            "%s serves the OpenAI-compatible API on --openai-host 0.0.0.0" % where)
    return port


def run_checks(repo, texts, help_text, r):
    known = parse_help(help_text)
    r.check("--port" in known and "--metrics-port" in known and "--drain-timeout" in known,
            "kvserve --help lists --port, --metrics-port and --drain-timeout (%d flags)" % len(known))
    r.check("--openai-port" in known and "--openai-host" in known,
            "kvserve --help lists --openai-port and --openai-host")
    grpc_default = as_int(known.get("--port", {}).get("default"))
    metrics_default = as_int(known.get("--metrics-port", {}).get("default"))
    fail = lambda msg: r.check(False, msg)

    # ---- Dockerfile ------------------------------------------------------------------------
    df = texts.get("deploy/Dockerfile")
    if not r.check(df is not None, "deploy/Dockerfile exists"):
        df = ""
    ins = parse_dockerfile(df)
    args = {}
    stages = []  # [(from line args, [instructions])]
    for word, rest, lineno in ins:
        if word == "ARG" and not stages:
            name, _, val = rest.partition("=")
            args[name.strip()] = val.strip().strip('"')
        elif word == "FROM":
            stages.append((rest, []))
        elif stages:
            stages[-1][1].append((word, rest, lineno))
            if word == "ARG":
                name, _, val = rest.partition("=")
                args.setdefault(name.strip(), val.strip().strip('"'))
    subst = lambda s: re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), s)
    r.check(len(stages) >= 2, "Dockerfile is multi-stage (%d stages)" % len(stages))
    if stages:
        first = subst(stages[0][0].split()[0])
        last = subst(stages[-1][0].split()[0])
        r.check(re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-devel-ubuntu24\.04", first) is not None,
                "build stage is FROM nvidia/cuda:13.x.y-devel-ubuntu24.04 (%s)" % first)
        r.check(re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-runtime-ubuntu24\.04", last) is not None,
                "runtime stage is FROM nvidia/cuda:13.x.y-runtime-ubuntu24.04 (%s)" % last)
    build_stage = stages[0][1] if stages else []
    runtime_stage = stages[-1][1] if stages else []

    # The build steps are the repository's scripts, in order, each present and executable.
    runs = [(rest, n) for w, rest, n in build_stage if w == "RUN"]
    step = {}
    for script in ("scripts/install_deps.sh", "scripts/build.sh"):
        path = os.path.join(repo, script)
        r.check(os.path.isfile(path) and os.access(path, os.X_OK), "%s exists and is executable" % script)
        hits = [k for k, (rest, _) in enumerate(runs) if re.match(r"(\./)?" + re.escape(script) + r"(\s|$)", rest)]
        if r.check(len(hits) == 1, "build stage runs %s as a RUN step of its own" % script):
            step[script] = hits[0]
    if len(step) == 2:
        r.check(step["scripts/install_deps.sh"] < step["scripts/build.sh"],
                "install_deps.sh runs before build.sh")
        others = [rest for k, (rest, _) in enumerate(runs) if k not in step.values()]
        r.check(all("cmake" not in o and "apt-get" not in o and "make " not in o for o in others),
                "no other RUN step of the build stage builds or installs on its own")
        build_args = shlex.split(runs[step["scripts/build.sh"]][0])[1:]
        presets = json.loads(texts.get("CMakePresets.json") or "{}").get("configurePresets", [])
        preset_dirs = {p["name"]: p.get("binaryDir", "").replace("${sourceDir}/", "") for p in presets}
        preset = build_args[0] if build_args and not build_args[0].startswith("-") else None
        r.check(preset == "cuda" and preset in preset_dirs,
                "build.sh is given the cuda preset of CMakePresets.json (%s)" % preset)
        if len(build_args) > 1:
            configure = [l for l in (texts.get("scripts/build.sh") or "").splitlines()
                         if re.search(r"cmake\s+--preset", l) and not l.lstrip().startswith("#")]
            r.check(any(re.search(r'"\$\{?@', l) for l in configure),
                    "scripts/build.sh passes the arguments after the preset on to cmake (the Dockerfile "
                    "gives it %s)" % " ".join(build_args[1:]))
        options = set(re.findall(r"option\((\w+)", texts.get("CMakeLists.txt") or ""))
        for a in build_args[1:]:
            m = re.match(r"-D(\w+)(?::\w+)?=", a)
            r.check(m is not None and (m.group(1) in options or m.group(1).startswith("CMAKE_")),
                    "build.sh argument %s is a cmake option of the project or a CMAKE_ variable" % a)
        if preset in preset_dirs:
            binary = preset_dirs[preset] + "/server/kvserve"
            r.check(any(binary in rest for w, rest, _ in build_stage),
                    "the build stage takes the binary from the preset's folder (%s)" % binary)
    # Every folder the top-level CMakeLists.txt adds, and what configuring reads, is copied in.
    copied = []
    for w, rest, _ in build_stage:
        if w == "COPY" and "--from" not in rest:
            copied += [p.rstrip("/") for p in rest.split()[:-1]]
    needed = ["CMakeLists.txt", "CMakePresets.json", "scripts"]
    needed += re.findall(r"add_subdirectory\((\w+)\)", texts.get("CMakeLists.txt") or "")
    for n in dict.fromkeys(needed):
        r.check(n in copied or "." in copied, "build stage copies %s" % n)

    # Runtime stage: non-root user, entrypoint, flags, ports, stop signal, health check.
    user = [rest for w, rest, _ in runtime_stage if w == "USER"]
    uid = user[-1].split(":")[0] if user else "0"
    r.check(uid not in ("0", "root"), "runtime stage runs as a non-root USER (%s)" % uid)
    stop = [rest for w, rest, _ in runtime_stage if w == "STOPSIGNAL"]
    r.check(stop[-1:] == ["SIGTERM"], "STOPSIGNAL SIGTERM")
    entry = [exec_form(rest) for w, rest, _ in runtime_stage if w == "ENTRYPOINT"]
    cmd = [exec_form(rest) for w, rest, _ in runtime_stage if w == "CMD"]
    entry = entry[-1] if entry else None
    cmd = cmd[-1] if cmd else []
    r.check(bool(entry) and os.path.basename(entry[0]) == "kvserve",
            "ENTRYPOINT is kvserve in exec form (%s)" % entry)
    r.check(cmd is not None, "CMD is in exec form")
    docker_flags = flags_in((entry or [])[1:] + (cmd or []), known, "Dockerfile ENTRYPOINT/CMD", fail)
    docker_grpc = as_int(effective(docker_flags, known, "--port"))
    docker_metrics = as_int(effective(docker_flags, known, "--metrics-port"))
    r.check(effective(docker_flags, known, "--host") == "0.0.0.0", "the image serves on --host 0.0.0.0")
    r.check((docker_grpc, docker_metrics) == (grpc_default, metrics_default),
            "the image's ports are the server's defaults (%s, %s)" % (docker_grpc, docker_metrics))
    # The OpenAI-compatible API is off by the server's default (-1), so the image's CMD turns it on and
    # its port is the one compose and k8s must repeat (their arguments replace CMD). A fixed port: 0
    # (any free port) could not be published, and it must not collide with gRPC or metrics.
    docker_openai = as_int(effective(docker_flags, known, "--openai-port"))
    r.check(docker_openai is not None and 0 < docker_openai <= 65535 and
            docker_openai not in (docker_grpc, docker_metrics),
            "the image serves the OpenAI-compatible API on a fixed port of its own (--openai-port %s)" %
            docker_openai)
    r.check(effective(docker_flags, known, "--openai-host") == "0.0.0.0",
            "the image serves the OpenAI-compatible API on --openai-host 0.0.0.0")
    exposed = set()
    for w, rest, _ in runtime_stage:
        if w == "EXPOSE":
            exposed |= {as_int(p.split("/")[0]) for p in rest.split()}
    r.check(exposed == {docker_grpc, docker_metrics, docker_openai},
            "EXPOSE %s matches the gRPC, metrics and OpenAI API ports (%s, %s, %s)" %
            (sorted(p for p in exposed if p is not None), docker_grpc, docker_metrics, docker_openai))
    hc = [rest for w, rest, _ in runtime_stage if w == "HEALTHCHECK"]
    if hc and hc[-1] != "NONE":
        m = re.search(r"/dev/tcp/[\w.]+/(\d+)|localhost:(\d+)|127\.0\.0\.1:(\d+)", hc[-1])
        port = as_int(next((g for g in m.groups() if g), None)) if m else None
        r.check(port == docker_metrics and "/health" in hc[-1],
                "HEALTHCHECK asks /health on the metrics port (%s)" % port)
        tool = exec_form(hc[-1].split("CMD", 1)[-1].strip())
        r.check(tool is not None and tool[0] in ("bash", "/bin/bash", "sh", "/bin/sh"),
                "HEALTHCHECK uses a tool the runtime image has (%s)" % (tool[0] if tool else None))
    volumes = " ".join(rest for w, rest, _ in runtime_stage if w == "VOLUME")
    r.check("/models" in volumes, "the image declares the /models volume")

    # ---- YAML files --------------------------------------------------------------------------
    yaml_docs = {}
    for name, text in sorted(texts.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        if text is None:
            r.check(False, "%s exists" % name)
            continue
        try:
            yaml_docs[name] = parse_yaml(text, name)
            r.check(True, "%s is well-formed YAML (%d documents)" % (name, len(yaml_docs[name])))
        except YamlError as e:
            r.check(False, "%s is well-formed YAML: %s" % (name, e))
            continue
        try:
            import yaml  # cross-check where PyYAML is installed; not needed otherwise
        except ImportError:
            continue
        try:
            theirs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            theirs = "PyYAML: %s" % e
        r.check(theirs == yaml_docs[name], "%s reads the same with PyYAML" % name)

    # ---- compose ----------------------------------------------------------------------------
    compose = (yaml_docs.get("deploy/compose.yaml") or [None])[0]
    svc = None
    if isinstance(compose, dict) and isinstance(compose.get("services"), dict):
        svc = next((s for s in compose["services"].values() if isinstance(s, dict) and (
            "kvserve" in str(s.get("image", "")) or "build" in s)), None)
    if r.check(isinstance(svc, dict), "compose.yaml has the kvserve service"):
        command = svc.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        cf = flags_in(command, known, "compose.yaml command", fail)
        c_grpc = as_int(effective(cf, known, "--port"))
        c_metrics = as_int(effective(cf, known, "--metrics-port"))
        r.check((c_grpc, c_metrics) == (grpc_default, metrics_default),
                "compose serves on the default ports (%s, %s)" % (c_grpc, c_metrics))
        c_openai = check_openai_flags(r, cf, known, "compose", docker_openai)
        targets = set()
        for p in svc.get("ports") or []:
            if isinstance(p, dict):
                targets.add(as_int(p.get("target")))
            else:
                targets.add(as_int(str(p).split("/")[0].split(":")[-1]))
        r.check({c_grpc, c_metrics, c_openai} <= targets,
                "compose publishes ports %s, which include %s" %
                (sorted(t for t in targets if t), sorted(p for p in {c_grpc, c_metrics, c_openai} if p)))
        drain = as_float(effective(cf, known, "--drain-timeout"))
        grace = duration_s(svc.get("stop_grace_period", "10s"))
        r.check(drain is not None and grace is not None and grace > drain,
                "compose stop_grace_period (%s s) exceeds --drain-timeout (%s s)" % (grace, drain))
        r.check(svc.get("stop_signal", "SIGTERM") == "SIGTERM", "compose stops with SIGTERM")
        devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        r.check(any(isinstance(d, dict) and d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or [])
                    and (d.get("count") == 1 or d.get("count") == "all" or d.get("device_ids"))
                    for d in devices or []), "compose reserves an NVIDIA GPU")
        mounts = []  # short syntax SOURCE:TARGET[:MODE], where SOURCE may be ${VAR:-default}
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                mounts.append(str(v.get("target")))
            elif ":" in re.sub(r"\$\{[^}]*\}", "X", str(v)):
                mounts.append(re.sub(r"\$\{[^}]*\}", "X", str(v)).split(":")[1])
        model = cf.get("--model")
        model_default = model and re.fullmatch(r"\$\{\w+:-([^}]*)\}", model)
        r.check(model is None or model.startswith("embedded:") or (model_default and model_default.group(1).startswith(
            ("embedded:", "/models"))) or any(model.startswith(m + "/") for m in mounts),
            "compose's --model (%s) is built in or under a mounted volume %s" % (model, mounts))
        r.check("/models" in mounts, "compose mounts the model volume at /models")

    # ---- Kubernetes -------------------------------------------------------------------------
    k8s = [(n, d) for n, docs in yaml_docs.items() if n.startswith("deploy/k8s/") for d in docs]
    r.check(len(k8s) > 0, "deploy/k8s holds manifests (%d documents)" % len(k8s))
    for n, d in k8s:
        r.check(isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and
                (d.get("metadata") or {}).get("name"),
                "%s: document %s has apiVersion, kind and metadata.name" %
                (n, (d.get("kind") if isinstance(d, dict) else d)))
    k8s = [(n, d) for n, d in k8s if isinstance(d, dict)]
    deployments = [d for _, d in k8s if d.get("kind") in ("Deployment", "StatefulSet")]
    services = [d for _, d in k8s if d.get("kind") == "Service"]
    claims = {(d.get("metadata") or {}).get("name") for _, d in k8s if d.get("kind") == "PersistentVolumeClaim"}
    r.check(len(deployments) == 1, "deploy/k8s has one Deployment")
    r.check(len(services) >= 1, "deploy/k8s has a Service")
    for dep in deployments:
        pod = ((dep.get("spec") or {}).get("template") or {})
        pod_spec = pod.get("spec") or {}
        labels = (pod.get("metadata") or {}).get("labels") or {}
        sel = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        r.check(sel and all(labels.get(k) == v for k, v in sel.items()),
                "the Deployment's selector matches its pod labels")
        containers = [c for c in pod_spec.get("containers") or [] if isinstance(c, dict)]
        c = next((c for c in containers if "kvserve" in str(c.get("image", "")) or c.get("name") == "kvserve"), None)
        if not r.check(c is not None, "the Deployment runs a kvserve container"):
            continue
        r.check(not c.get("command") or os.path.basename(str(c["command"][0])) == "kvserve",
                "the container keeps the image's kvserve entrypoint")
        kf = flags_in((c.get("command") or [])[1:] + (c.get("args") or []), known, "k8s container args", fail)
        k_grpc = as_int(effective(kf, known, "--port"))
        k_metrics = as_int(effective(kf, known, "--metrics-port"))
        r.check((k_grpc, k_metrics) == (grpc_default, metrics_default),
                "k8s serves on the default ports (%s, %s)" % (k_grpc, k_metrics))
        r.check(effective(kf, known, "--host") == "0.0.0.0", "k8s serves on --host 0.0.0.0")
        k_openai = check_openai_flags(r, kf, known, "k8s", docker_openai)
        named = {p.get("name"): as_int(p.get("containerPort")) for p in c.get("ports") or []}
        r.check(named.get("grpc") == k_grpc and named.get("metrics") == k_metrics and
                named.get("openai") == k_openai,
                "containerPorts grpc=%s metrics=%s openai=%s match the flags" %
                (named.get("grpc"), named.get("metrics"), named.get("openai")))
        resolve = lambda p: named.get(p) if isinstance(p, str) else as_int(p)
        drain = as_float(effective(kf, known, "--drain-timeout"))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            pr = c.get(probe) or {}
            g = pr.get("grpc")
            r.check(isinstance(g, dict) and resolve(g.get("port")) == k_grpc and not g.get("service"),
                    "%s is a gRPC health probe on port %s" % (probe, k_grpc))
        live = c.get("livenessProbe") or {}
        live_s = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
        r.check(drain is not None and live_s > drain,
                "livenessProbe tolerates NOT_SERVING (%s s) longer than the drain (%s s)" % (live_s, drain))
        start = c.get("startupProbe") or {}
        start_s = start.get("periodSeconds", 10) * start.get("failureThreshold", 3)
        r.check(start_s >= 300, "startupProbe allows %s s for loading the model (>= 300)" % start_s)
        pre = ((c.get("lifecycle") or {}).get("preStop") or {})
        pre_s = 0
        if "sleep" in pre:
            pre_s = as_float((pre.get("sleep") or {}).get("seconds")) or 0
        elif "exec" in pre:
            cmdline = [str(x) for x in (pre.get("exec") or {}).get("command") or []]
            if cmdline[:1] == ["sleep"] and len(cmdline) == 2:
                pre_s = as_float(cmdline[1]) or 0
        grace = pod_spec.get("terminationGracePeriodSeconds", 30)
        r.check(drain is not None and grace > drain + pre_s,
                "terminationGracePeriodSeconds (%s) exceeds preStop (%s s) + --drain-timeout (%s s)" %
                (grace, pre_s, drain))
        limits = ((c.get("resources") or {}).get("limits") or {})
        r.check(as_int(limits.get("nvidia.com/gpu")) == 1, "the container's limits ask for nvidia.com/gpu: 1")
        r.check(bool((c.get("resources") or {}).get("requests")), "the container has resource requests")
        psc, csc = pod_spec.get("securityContext") or {}, c.get("securityContext") or {}
        r.check((csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True),
                "the pod runs as non-root (runAsNonRoot: true)")
        k_uid = csc.get("runAsUser", psc.get("runAsUser"))
        r.check(k_uid is None or str(k_uid) == uid, "runAsUser (%s) is the image's USER (%s)" % (k_uid, uid))
        r.check(csc.get("readOnlyRootFilesystem") is True, "the root filesystem is read-only")
        vols = {v.get("name"): v for v in pod_spec.get("volumes") or [] if isinstance(v, dict)}
        mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
        r.check("emptyDir" in vols.get(mounts.get("/tmp"), {}), "/tmp is a writable emptyDir")
        model = kf.get("--model")
        holder = next((p for p in mounts if model and model.startswith(p.rstrip("/") + "/")), None)
        r.check(model is None or model.startswith("embedded:") or holder is not None,
                "--model %s lies under a mounted volume" % model)
        for v in vols.values():
            claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                r.check(claim in claims, "the claim %s is defined in deploy/k8s" % claim)
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        if "prometheus.io/port" in ann:
            r.check(as_int(ann["prometheus.io/port"]) == k_metrics,
                    "prometheus.io/port (%s) is the metrics port" % ann["prometheus.io/port"])
        for s in services:
            ss = s.get("spec") or {}
            name = (s.get("metadata") or {}).get("name")
            sel = ss.get("selector") or {}
            r.check(sel and all(labels.get(k) == v for k, v in sel.items()),
                    "Service %s selects the kvserve pods" % name)
            ports = {p.get("name"): p for p in ss.get("ports") or [] if isinstance(p, dict)}
            gp = ports.get("grpc")
            r.check(gp is not None and as_int(gp.get("port")) == k_grpc and
                    resolve(gp.get("targetPort", gp.get("port"))) == k_grpc and gp.get("appProtocol") == "grpc",
                    "Service %s has port grpc %s -> %s, appProtocol grpc" % (name, k_grpc, k_grpc))
            mp = ports.get("metrics")
            if mp is not None or ss.get("clusterIP") != "None":
                r.check(mp is not None and as_int(mp.get("port")) == k_metrics and
                        resolve(mp.get("targetPort", mp.get("port"))) == k_metrics,
                        "Service %s has port metrics %s" % (name, k_metrics))
            # Like metrics: required on the balanced Service, checked on the headless one if listed.
            op = ports.get("openai")
            if op is not None or ss.get("clusterIP") != "None":
                r.check(op is not None and as_int(op.get("port")) == k_openai and
                        resolve(op.get("targetPort", op.get("port"))) == k_openai,
                        "Service %s has port openai %s" % (name, k_openai))

    # ---- docs/operations.md covers every flag and metric -------------------------------------
    ops = texts.get("docs/operations.md")
    if r.check(ops is not None, "docs/operations.md exists"):
        missing = [f for f in known if f != "--help" and f not in ops]
        r.check(not missing, "docs/operations.md documents every server flag%s" %
                (" (missing: %s)" % ", ".join(missing) if missing else ""))
        metrics = sorted(set(re.findall(r'"(kvserve_[a-z0-9_]+)"', texts.get("server/metrics.cc") or "")))
        missing = [m for m in metrics if m not in ops]
        r.check(metrics and not missing, "docs/operations.md documents every metric of server/metrics.cc%s" %
                (" (missing: %s)" % ", ".join(missing) if missing else " (%d)" % len(metrics)))


# ----------------------------------------------------------------------------------------------
# Self-test: each break of the recipes must be caught.
# ----------------------------------------------------------------------------------------------

BREAKS = [
    ("a flag the server does not have", "deploy/k8s/deployment.yaml", "- --gpu-memory-utilization",
     "- --gpu-memory-fraction"),
    ("a value outside a flag's range", "deploy/compose.yaml", '"50051"\n', '"70000"\n'),
    ("a metrics port that differs from EXPOSE", "deploy/Dockerfile", '"--metrics-port", "9090"',
     '"--metrics-port", "9191"'),
    ("a grace period shorter than the drain", "deploy/compose.yaml", "stop_grace_period: 45s",
     "stop_grace_period: 20s"),
    ("a termination grace period shorter than preStop + drain", "deploy/k8s/deployment.yaml",
     "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 32"),
    ("a probe on the metrics port", "deploy/k8s/deployment.yaml", "readinessProbe:\n            grpc:\n"
     "              port: 50051", "readinessProbe:\n            grpc:\n              port: 9090"),
    ("a build step that bypasses the scripts", "deploy/Dockerfile", "RUN scripts/build.sh", "RUN cmake --preset"),
    ("a tab in YAML", "deploy/k8s/service.yaml", "  type: ClusterIP", "\ttype: ClusterIP"),
    ("a document without kind", "deploy/k8s/service.yaml", "kind: Service\nmetadata:\n  name: kvserve\n",
     "metadata:\n  name: kvserve\n"),
    ("bad indentation", "deploy/k8s/deployment.yaml", "      maxUnavailable: 0", "       maxUnavailable: 0"),
    ("a Service port that differs from the container", "deploy/k8s/service.yaml", "port: 9090", "port: 9091"),
    ("a root USER", "deploy/Dockerfile", "USER 10001:10001", "USER root"),
    ("a runtime stage on another base", "deploy/Dockerfile", "-runtime-${UBUNTU_TAG}", "-runtime-ubuntu22.04"),
    ("a source folder not copied", "deploy/Dockerfile", "COPY engine/ engine/\n", ""),
    ("an undocumented flag", "docs/operations.md", "--max-stop-strings", "--max-stop-string-count"),
    ("an OpenAI API port that differs from EXPOSE", "deploy/Dockerfile", '"--openai-port", "8000"',
     '"--openai-port", "8001"'),
    ("an OpenAI API port not exposed", "deploy/Dockerfile", "EXPOSE 50051 9090 8000", "EXPOSE 50051 9090"),
    ("the OpenAI API on the metrics port", "deploy/Dockerfile", '"--openai-port", "8000"',
     '"--openai-port", "9090"'),
    ("the OpenAI API on loopback only", "deploy/Dockerfile", '"--openai-port", "8000"',
     '"--openai-host", "127.0.0.1", "--openai-port", "8000"'),
    ("an OpenAI API port compose does not publish", "deploy/compose.yaml", '      - "8000:8000"', ""),
    ("the OpenAI API left off in k8s", "deploy/k8s/deployment.yaml", '            - --openai-port\n'
     '            - "8000"\n', ""),
    ("an OpenAI containerPort that differs from the flag", "deploy/k8s/deployment.yaml",
     "containerPort: 8000", "containerPort: 8080"),
    ("a Service OpenAI port that differs from the container", "deploy/k8s/service.yaml", "port: 8000",
     "port: 8001"),
]


def self_test(repo, texts, help_text):
    r = Report(quiet=True)
    run_checks(repo, texts, help_text, r)
    ok = True
    if r.failures:
        print("self-test: the recipes as they are fail: " + "; ".join(r.failures))
        ok = False
    for what, name, old, new in BREAKS:
        if texts.get(name) is None or old not in texts[name]:
            print("self-test: cannot apply '%s': %r not in %s" % (what, old, name))
            ok = False
            continue
        broken = dict(texts)
        broken[name] = texts[name].replace(old, new, 1)
        rb = Report(quiet=True)
        run_checks(repo, broken, help_text, rb)
        caught = bool(rb.failures)
        print("%s: %s -> %s" % ("ok  " if caught else "FAIL", what,
                                rb.failures[0] if caught else "not caught"))
        ok = ok and caught
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("--kvserve", required=True, help="the built kvserve binary")
    ap.add_argument("--self-test", action="store_true", help="check that broken recipes are caught")
    a = ap.parse_args()
    repo = os.path.abspath(a.repo)
    try:
        help_text = subprocess.run([a.kvserve, "--help"], capture_output=True, text=True, timeout=60,
                                   check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        print("FAIL: cannot run %s --help: %s" % (a.kvserve, e))
        print("0 passed, 1 failed")
        return 1
    texts = load_texts(repo)
    if a.self_test:
        ok = self_test(repo, texts, help_text)
        print("self-test %s" % ("passed" if ok else "failed"))
        return 0 if ok else 1
    r = Report()
    run_checks(repo, texts, help_text, r)
    print("%d passed, %d failed" % (r.passed, len(r.failures)))
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
