#!/usr/bin/python3
"""make_chat_fixtures.py: writes tests/data/chat_templates/cases.json, the reference fixtures for the
C++ chat-template (Jinja subset) interpreter, by rendering with the real Python jinja2.

Run from anywhere (needs jinja2; Debian's python3-jinja2 3.1.2 for /usr/bin/python3 was used):

    /usr/bin/python3 scripts/make_chat_fixtures.py

The output is committed; the C++ tests and CI only read cases.json and the *.jinja files next to
it, so they do not need Python or jinja2. The script is deterministic (fixed seeds, no clock): run
it twice and the file is byte-identical.

The environment mirrors how Hugging Face transformers renders chat templates (this is our own code):
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, the loopcontrols extension and a
{% generation %} block that renders its body unchanged; globals raise_exception(msg) and
strftime_now(fmt) (a fixed time, FIXED_NOW); and a tojson filter that is plain json.dumps with
ensure_ascii=False (no HTML escaping).

Two kinds of case:
  Part A: each *.jinja chat template in tests/data/chat_templates rendered with ~25 seeded-random
          conversations (some with invalid role orders, which the templates refuse).
  Part B: about 670 small inline templates, one Jinja feature each, grouped by name prefix; the
          "error-" group records that jinja2 raised (class name and message).

A second file, continue_final_message.json, holds Part C: conversations that end with a partial
assistant message, rendered without a generation prompt and cut after that message's content as
transformers' apply_chat_template(continue_final_message=True) documents it (continue_final below
is our own code for that rule), so that the model continues the message instead of a new turn.
"""

import datetime
import json
import random
import sys
from collections import Counter, OrderedDict
from pathlib import Path

import jinja2
import jinja2.exceptions
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "chat_templates"
OUT = DATA / "cases.json"
CONTINUE_OUT = DATA / "continue_final_message.json"
SEED = 20260704
FIXED_NOW = datetime.datetime(2026, 7, 4, 9, 5, 3)
CASES_PER_TEMPLATE = 25


# ---------------------------------------------------------------------------------------------
# The reference environment
# ---------------------------------------------------------------------------------------------

class GenerationBlock(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: renders the body unchanged.

    The body becomes a call block (like {% call %}), so, as in transformers, it runs in a scope of
    its own: a {% set %} inside it does not change the variable outside.
    """

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_body", [])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(fmt):
    return FIXED_NOW.strftime(fmt)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def make_env():
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, GenerationBlock])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.filters["tojson"] = tojson
    return env


def render(env, source, context):
    """Returns ("output", text) or ("error", (class name, message))."""
    try:
        return "output", env.from_string(source).render(**context)
    except Exception as e:  # parse and render errors alike
        return "error", (type(e).__name__, str(e))


# ---------------------------------------------------------------------------------------------
# Part A: random conversations for the chat templates
# ---------------------------------------------------------------------------------------------

WORDS = ("the quick brown fox jumps over lazy dog please explain how kv cache paging works "
         "in a serving engine with batching and why attention needs it today").split()

CONTENT_POOL = [
    "Hello!",
    "What is the capital of France?",
    "Paris is the capital of France.",
    "",
    "   leading and trailing spaces   ",
    "\n\nnewlines around\n\n",
    "\ttabbed\tcontent\t",
    "line one\nline two\nline three",
    "windows\r\nline endings\r\n",
    "Café, naïve, résumé, Ærøskøbing",
    "你好，世界。今天天气怎么样？",
    "日本語のテキストです",
    "Emoji: 👋🏽 🎉 👨‍👩‍👧 ❤️",
    "مرحبا بالعالم",
    "שלום עולם",
    "combining: e\u0301 a\u0308 n\u0303",
    "\u00a0non-breaking and ideographic spaces\u3000",
    "It's a 'quoted' \"string\"",
    "back\\slash \\n not a newline",
    "Template-looking text: {{ x }} and {% if %} and {# not a comment",
    "{{ messages[0]['content'] }}",
    "end of sequence </s> inside",
    "an <|eot_id|> token and <|im_end|> too",
    "<start_of_turn>user fake turn<end_of_turn>",
    "[INST] fake instruction [/INST]",
    "x",
    " ",
    "Numbers: 1, 2.5, -3, 1e10",
]


def random_content(rng):
    r = rng.random()
    if r < 0.6:
        return rng.choice(CONTENT_POOL)
    if r < 0.85:
        parts = [rng.choice(CONTENT_POOL) for _ in range(rng.randint(2, 3))]
        return rng.choice([" ", "\n", "\n\n", ""]).join(parts)
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))


def valid_roles(rng, allow_system):
    n = rng.randint(0, 8)
    roles = []
    if allow_system and n > 0 and rng.random() < 0.45:
        roles.append("system")
    offset = len(roles)
    while len(roles) < n:
        roles.append("user" if (len(roles) - offset) % 2 == 0 else "assistant")
    return roles


def invalid_roles(rng, allow_system):
    """A role order that a strict template refuses."""
    roles = valid_roles(rng, allow_system)
    while len([r for r in roles if r != "system"]) < 2:
        roles.append("user" if not roles or roles[-1] != "user" else "assistant")
    kind = rng.choice(["double", "assistant-first", "system-late", "unknown-role"])
    body_start = 1 if roles[0] == "system" else 0
    if kind == "double":
        i = rng.randrange(body_start, len(roles))
        roles.insert(i, roles[i])
    elif kind == "assistant-first":
        roles.insert(body_start, "assistant")
    elif kind == "system-late":
        roles.insert(rng.randrange(body_start + 1, len(roles) + 1), "system")
    else:
        roles[rng.randrange(body_start, len(roles))] = rng.choice(["narrator", "tool"])
    return roles


def random_conversation(rng, allow_system=True):
    invalid = rng.random() < 0.15
    roles = invalid_roles(rng, allow_system) if invalid else valid_roles(rng, allow_system)
    return [{"role": r, "content": random_content(rng)} for r in roles]


TOOL_SPECS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather for a city — température, 天気, ☀️",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Zürich\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                         "description": "Temperature unit"},
                "days": {"type": "integer", "description": "Forecast length", "default": 1},
            },
            "required": ["city"],
        },
    }},
    {"type": "function", "function": {
        "name": "search_documents",
        "description": "Full-text search over the knowledge base.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "filters": {
                    "type": "object",
                    "description": "Optional filters",
                    "properties": {
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "after": {"type": "string", "description": "ISO date"},
                        "min_score": {"type": "number", "default": 0.5},
                    },
                },
                "limit": {"type": "integer", "default": 10},
            },
            "required": ["query", "limit"],
        },
    }},
    {"name": "calculator",
     "description": "Evaluates an arithmetic expression like '2 * (3 + 4)'.",
     "parameters": {"type": "object",
                    "properties": {"expression": {"type": "string"},
                                   "precision": {"description": "digits after the point"}},
                    "required": ["expression"]}},
    {"type": "function", "function": {"name": "get_time", "parameters": {}}},
    {"type": "function", "function": {
        "name": "translate",
        "description": "Translate text. Handles \\n escapes and <html> & entities.",
        "parameters": {"type": "object", "properties": {
            "text": {"type": "string", "description": "Texte à traduire"},
            "target": {"type": "string", "enum": ["fr", "de", "ja", "ar"]}}},
    }},
]

TOOL_ARGUMENTS = {
    "get_weather": [{"city": "Zürich"}, {"city": "東京", "unit": "celsius", "days": 3},
                    {"city": "New \"York\"", "unit": "fahrenheit"}],
    "search_documents": [{"query": "kv cache", "limit": 5},
                         {"query": "paging", "limit": 2,
                          "filters": {"tags": ["gpu", "memory"], "min_score": 0.75,
                                      "after": None}}],
    "calculator": [{"expression": "2 * (3 + 4)", "precision": 2},
                   '{"expression": "1/3"}'],
    "get_time": [{}],
    "translate": [{"text": "Hello, world\n", "target": "ja"}, {"text": "déjà vu", "target": "de"}],
}

TOOL_RESULTS = [
    "Sunny, 24 °C",
    {"temperature": 21.5, "unit": "celsius", "conditions": ["cloudy", "windy"], "rain": None},
    {"results": [{"id": 3, "title": "Paged attention", "score": 0.91}], "total": 1},
    "14",
    {"ok": True, "value": 0.3333333333333333},
    "",
    "こんにちは、世界",
]


def tool_name(spec):
    return spec["function"]["name"] if "function" in spec else spec["name"]


def random_tool_conversation(rng, tools):
    names = [tool_name(t) for t in tools] or ["get_weather"]
    msgs = []
    if rng.random() < 0.4:
        msgs.append({"role": "system", "content": random_content(rng)})
    for _ in range(rng.randint(0, 3)):
        msgs.append({"role": "user", "content": random_content(rng)})
        if rng.random() < 0.6:
            calls = []
            for _ in range(rng.randint(1, 2)):
                name = rng.choice(names)
                args = rng.choice(TOOL_ARGUMENTS.get(name, [{}]))
                calls.append({"type": "function", "function": {"name": name, "arguments": args}})
            content = rng.choice([None, "", "Let me check.", "  I'll look that up.\n"])
            call_msg = {"role": "assistant", "content": content, "tool_calls": calls}
            if content is None and rng.random() < 0.5:
                del call_msg["content"]
            msgs.append(call_msg)
            for call in calls:
                result = {"role": "tool", "content": rng.choice(TOOL_RESULTS)}
                if rng.random() < 0.8:
                    result["name"] = call["function"]["name"]
                msgs.append(result)
        if rng.random() < 0.8:
            msgs.append({"role": "assistant", "content": random_content(rng)})
    if rng.random() < 0.1:  # invalid: a tool result with no call before it
        pos = 1 if msgs and msgs[0]["role"] == "system" else 0
        msgs.insert(pos, {"role": "tool", "name": "get_time", "content": "09:05"})
    return msgs


TEMPLATES = [
    # file, bos, eos, whether a leading system message is valid
    ("llama2.jinja", "<s>", "</s>", True),
    ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>", True),
    ("llama31.jinja", "<|begin_of_text|>", "<|eot_id|>", True),
    ("chatml.jinja", "", "<|im_end|>", True),
    ("mistral.jinja", "<s>", "</s>", True),
    ("gemma.jinja", "<bos>", "<eos>", False),
    ("phi3.jinja", "<s>", "<|endoftext|>", True),
    ("tools.jinja", "", "<|im_end|>", True),
    ("generation.jinja", "<s>", "<|endoftext|>", True),
]


def part_a_cases():
    cases = []
    for index, (file, bos, eos, allow_system) in enumerate(TEMPLATES):
        rng = random.Random(SEED * 100 + index)
        stem = file[:-len(".jinja")]
        for i in range(CASES_PER_TEMPLATE):
            ctx = OrderedDict()
            if stem == "tools":
                choice = rng.random()
                tools = rng.sample(TOOL_SPECS, rng.randint(1, 3)) if choice < 0.75 else []
                ctx["messages"] = random_tool_conversation(rng, tools)
                if choice < 0.88:  # else tools is not passed at all
                    ctx["tools"] = tools
            else:
                ctx["messages"] = random_conversation(rng, allow_system)
            ctx["add_generation_prompt"] = rng.random() < 0.5
            ctx["bos_token"] = bos
            ctx["eos_token"] = eos
            if stem == "llama31" and rng.random() < 0.5:
                ctx["date_string"] = rng.choice(["26 Jul 2024", "01 Jan 2025", "29 Feb 2028"])
            cases.append({"name": f"{stem}-{i:02d}", "template_file": file, "context": ctx})
    return cases


# ---------------------------------------------------------------------------------------------
# Part B: small inline templates, one feature each
# ---------------------------------------------------------------------------------------------

USERS = [{"name": "ann", "age": 31, "role": "admin", "score": 2.5},
         {"name": "Bob", "age": 25, "role": "user"},
         {"name": "cy", "age": 40, "role": "user", "score": 1.0, "email": None}]
MSGS = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]


def part_b_cases():
    out = []

    def c(name, template, /, **ctx):
        out.append({"name": name, "template": template, "context": ctx})

    # --- output of values -------------------------------------------------------------------
    c("out-str", "{{ s }}", s="hello world")
    c("out-str-literal-text", "before {{ s }} after", s="x")
    c("out-int", "{{ n }}", n=42)
    c("out-int-negative", "{{ n }}", n=-7)
    c("out-int-zero", "{{ 0 }}")
    c("out-float-one", "{{ x }}", x=1.0)
    c("out-float-tenth", "{{ x }}", x=0.1)
    c("out-float-small-exponent", "{{ x }}", x=1e-05)
    c("out-float-0.0001", "{{ x }}", x=0.0001)
    c("out-float-1e15", "{{ x }}", x=1e15)
    c("out-float-1e16", "{{ x }}", x=1e16)
    c("out-float-negative-zero", "{{ x }}", x=-0.0)
    c("out-float-2.5", "{{ x }}", x=2.5)
    c("out-float-third", "{{ 1 / 3 }}")
    c("out-float-sum-tenths", "{{ 0.1 + 0.2 }}")
    c("out-float-big-mantissa", "{{ x }}", x=123456.789)
    c("out-float-1.5e300", "{{ x }}", x=1.5e300)
    c("out-float-negative-tiny", "{{ x }}", x=-2.5e-10)
    c("out-none", "{{ none }}")
    c("out-none-ctx", "{{ v }}", v=None)
    c("out-true", "{{ true }}")
    c("out-false-ctx", "{{ b }}", b=False)
    c("out-list-mixed", "{{ ['a', 1, none] }}")
    c("out-list-ctx", "{{ xs }}", xs=["a", 1, 2.0, True, None, [1, [2]], {"k": "v"}])
    c("out-list-empty", "{{ [] }}|{{ {} }}")
    c("out-dict", "{{ {'a': 1} }}")
    c("out-dict-ctx-nested", "{{ d }}", d={"b": [1, 2.5], "a": {"x": None, "y": False}, "c": "s"})
    c("out-list-quote-choice", """{{ ["it's", 'say "hi"', 'plain'] }}""")
    c("out-list-both-quotes", """{{ ['both \\' and "'] }}""")
    c("out-list-escapes", "{{ xs }}", xs=["a\nb", "tab\there", "back\\slash", "cr\r"])
    c("out-list-unicode", "{{ xs }}", xs=["é", "日本", "👋", "\u05e9"])
    c("out-list-control-chars", "{{ xs }}", xs=["\u0001", "\u007f", "\u00a0"])
    c("out-dict-quote-keys", "{{ d }}", d={"it's": "a\"b", "k": "'"})
    c("out-tuple", "{{ (1, 'a') }}")
    c("out-tuple-single", "{{ (1,) }}")
    c("out-bools-in-list", "{{ [true, false, none, 1.0] }}")
    c("out-undefined", "[{{ nope }}]")
    c("out-undefined-attr-of-dict", "[{{ d.missing }}]", d={"a": 1})
    c("out-string-of-digits", "{{ s }}", s="007")
    c("out-adjacent", "{{ a }}{{ b }}{{ c }}", a=1, b="two", c=3.0)

    # --- literals -----------------------------------------------------------------------------
    c("lit-str-single", "{{ 'abc' }}")
    c("lit-str-double", '{{ "abc" }}')
    c("lit-str-apostrophe-in-double", '{{ "it\'s" }}')
    c("lit-str-escaped-single", "{{ 'it\\'s' }}")
    c("lit-str-escaped-double", '{{ "say \\"hi\\"" }}')
    c("lit-str-newline-escape", "{{ 'a\\nb' }}")
    c("lit-str-tab-escape", "{{ 'a\\tb' }}")
    c("lit-str-backslash-escape", "{{ 'a\\\\b' }}")
    c("lit-str-unicode-escape", "{{ 'caf\\u00e9' }}")
    c("lit-str-raw-unicode", "{{ '日本 é 👋' }}")
    c("lit-str-literal-newline", "{{ 'a\nb' }}")
    c("lit-str-empty", "[{{ '' }}]")
    c("lit-int", "{{ 12345 }}")
    c("lit-int-negative", "{{ -5 }}")
    c("lit-float", "{{ 1.5 }}")
    c("lit-float-trailing-zero", "{{ 2.50 }}")
    c("lit-float-exponent", "{{ 1e3 }}")
    c("lit-float-negative", "{{ -0.25 }}")
    c("lit-true-false", "{{ true }} {{ false }}")
    c("lit-True-False", "{{ True }} {{ False }}")
    c("lit-none-None", "{{ none }} {{ None }}")
    c("lit-list", "{{ [1, 'two', 3.0] }}")
    c("lit-list-trailing-comma", "{{ [1, 2,] }}")
    c("lit-list-nested", "{{ [[1, 2], [], ['x']] }}")
    c("lit-tuple", "{{ (1, 2, 3) }}")
    c("lit-dict", "{{ {'b': 1, 'a': 2} }}")
    c("lit-dict-double-quoted-keys", '{{ {"k": "v", "n": none} }}')
    c("lit-dict-nested", "{{ {'a': {'b': [1, {'c': true}]}} }}")
    c("lit-dict-int-key", "{{ {1: 'one', 2: 'two'}[2] }}")
    c("lit-dict-trailing-comma", "{{ {'a': 1,} }}")
    c("lit-dict-key-from-var", "{{ {k: 1} }}", k="dyn")

    # --- operators ----------------------------------------------------------------------------
    c("op-add-int", "{{ 2 + 3 }}")
    c("op-add-int-float", "{{ 1 + 1.5 }}")
    c("op-add-floats-whole", "{{ 1.5 + 1.5 }}")
    c("op-sub", "{{ 10 - 15 }}")
    c("op-sub-float", "{{ 5.5 - 0.5 }}")
    c("op-mul", "{{ 6 * 7 }}")
    c("op-mul-float", "{{ 2 * 3.0 }}")
    c("op-div", "{{ 7 / 2 }}")
    c("op-div-exact", "{{ 4 / 2 }}")
    c("op-div-negative", "{{ -1 / 4 }}")
    c("op-floordiv", "{{ 7 // 2 }}")
    c("op-floordiv-negative", "{{ -7 // 2 }}")
    c("op-floordiv-negative-divisor", "{{ 7 // -2 }}")
    c("op-floordiv-float", "{{ 7.5 // 2 }}")
    c("op-mod", "{{ 7 % 3 }}")
    c("op-mod-negative", "{{ -7 % 3 }}")
    c("op-mod-negative-divisor", "{{ 7 % -3 }}")
    c("op-mod-float", "{{ 7.5 % 2 }}")
    c("op-mod-float-negative", "{{ -7.5 % 2 }}")
    c("op-pow", "{{ 2 ** 10 }}")
    c("op-pow-negative-exponent", "{{ 2 ** -1 }}")
    c("op-pow-float", "{{ 2 ** 0.5 }}")
    c("op-pow-float-base", "{{ 1.5 ** 2 }}")
    c("op-pow-unary-minus", "{{ -2 ** 2 }}")
    c("op-pow-left-assoc", "{{ 2 ** 3 ** 2 }}")
    c("op-unary-minus-var", "{{ -n }}", n=5)
    c("op-unary-minus-float", "{{ -x }}", x=1.5)
    c("op-unary-plus", "{{ +3 }}")
    c("op-str-plus-str", "{{ 'ab' + 'cd' }}")
    c("op-concat-number-none", "{{ 'a' ~ 1 ~ none ~ true }}")
    c("op-concat-float", "{{ 'v' ~ 1.0 ~ '/' ~ 2.5 }}")
    c("op-concat-list", "{{ 'x' ~ [1, 'y'] }}")
    c("op-concat-undefined", "{{ 'a' ~ nope ~ 'b' }}")
    c("op-concat-two-numbers", "{{ 1 ~ 2 }}")
    c("op-str-times-int", "{{ 'ab' * 3 }}")
    c("op-int-times-str", "{{ 3 * '-' }}")
    c("op-str-times-zero", "[{{ 'ab' * 0 }}]")
    c("op-list-plus-list", "{{ [1, 2] + [3] }}")
    c("op-list-times-int", "{{ [0] * 3 }}")
    c("op-lt", "{{ 1 < 2 }} {{ 2 < 1 }}")
    c("op-le-ge", "{{ 2 <= 2 }} {{ 2 >= 3 }}")
    c("op-gt-float", "{{ 2.5 > 2 }}")
    c("op-str-compare", "{{ 'apple' < 'banana' }} {{ 'B' < 'a' }}")
    c("op-eq-int-float", "{{ 1 == 1.0 }}")
    c("op-ne-int-float", "{{ 1 != 1.0 }}")
    c("op-eq-str-int", "{{ '1' == 1 }}")
    c("op-eq-lists", "{{ [1, 2] == [1, 2] }} {{ [1] == [1, 2] }}")
    c("op-eq-dicts", "{{ {'a': 1} == d }}", d={"a": 1})
    c("op-eq-none", "{{ none == none }} {{ v == none }}", v=None)
    c("op-eq-true-one", "{{ true == 1 }}")
    c("op-in-substring", "{{ 'ell' in 'hello' }} {{ 'xyz' in 'hello' }}")
    c("op-in-list", "{{ 2 in [1, 2] }} {{ 5 in xs }}", xs=[1, 2])
    c("op-in-dict-keys", "{{ 'a' in d }} {{ 1 in d }}", d={"a": 1})
    c("op-not-in", "{{ 'x' not in ['a'] }} {{ 'a' not in ['a'] }}")
    c("op-not-prefix-in", "{{ not 'x' in ['a'] }}")
    c("op-in-int-float", "{{ 1 in [1.0] }}")
    c("op-in-empty-string", "{{ '' in 'abc' }}")
    c("op-or-returns-operand", "{{ 0 or 'x' }}")
    c("op-or-both-falsy", "{{ '' or none }}")
    c("op-or-first-truthy", "{{ 'a' or 'b' }}")
    c("op-and-returns-operand", "{{ 1 and 'y' }}")
    c("op-and-falsy-left", "{{ 0 and 'y' }}")
    c("op-and-empty-list", "{{ [] and 'y' }}")
    c("op-or-empty-list", "{{ [] or 'empty' }}")
    c("op-or-undefined", "{{ nope or 'd' }}")
    c("op-and-undefined", "[{{ nope and 'd' }}]")
    c("op-not", "{{ not 0 }} {{ not 'a' }} {{ not [] }} {{ not nope }}")
    c("op-not-not", "{{ not not 'x' }}")
    c("op-ternary", "{{ 'y' if true else 'n' }}")
    c("op-ternary-falsy", "{{ 'y' if 0 else 'n' }}")
    c("op-ternary-no-else", "[{{ 'y' if false }}]")
    c("op-ternary-no-else-true", "[{{ 'y' if x }}]", x=1)
    c("op-ternary-nested", "{{ 'a' if n < 0 else 'b' if n == 0 else 'c' }}", n=0)
    c("op-ternary-paren-concat", "{{ ('a' if x else 'b') ~ '!' }}", x="")
    c("op-ternary-binds-loosest", "{{ 1 if 1 > 2 else 2 + 3 }}")
    c("op-precedence-mul-add", "{{ 1 + 2 * 3 }}")
    c("op-precedence-parens", "{{ (1 + 2) * 3 }}")
    c("op-precedence-pow-mul", "{{ 2 * 3 ** 2 }}")
    c("op-sub-left-assoc", "{{ 10 - 2 - 3 }}")
    c("op-div-left-assoc", "{{ 100 / 10 / 2 }}")
    c("op-not-vs-eq", "{{ not 1 == 2 }}")
    c("op-mul-binds-tighter-than-concat", "{{ 2 * 3 ~ 4 }} {{ 'ab' ~ 'c' * 2 }}")
    c("op-concat-parenthesised-sum", "{{ 'a' ~ (1 + 2) }} {{ (1 + 2) ~ 'a' }}")
    c("op-concat-with-add-strings", "{{ 'a' + 'b' ~ 'c' + 'd' }}")
    c("op-and-or-precedence", "{{ true or false and false }}")
    c("op-comparisons-and", "{{ 1 < 2 and 2 < 3 }}")
    c("op-unary-minus-then-filter", "{{ -1|abs }} {{ -n|abs }}", n=4)
    c("op-filter-on-parenthesised-negative", "{{ (-1)|abs }}")
    c("op-filter-before-concat", "{{ 'a' ~ 'b'|upper }}")
    c("op-filter-then-mul", "{{ [1, 2, 3]|length * 2 }}")
    c("op-in-and", "{{ 'x' in 'xy' and 1 }}")
    c("op-nested-parens", "{{ ((2 + 3) * (4 - 1)) // 2 }}")

    # --- attributes and subscripts ----------------------------------------------------------
    d = {"k": "v", "n": {"deep": [10, 20, 30]}, "e": ""}
    c("attr-dict-subscript", "{{ d['k'] }}", d=d)
    c("attr-dict-dot", "{{ d.k }}", d=d)
    c("attr-nested-dot", "{{ d.n.deep[1] }}", d=d)
    c("attr-nested-subscript", "{{ d['n']['deep'][-1] }}", d=d)
    c("attr-list-index", "{{ xs[0] }}", xs=["a", "b", "c"])
    c("attr-list-negative-index", "{{ xs[-1] }}", xs=["a", "b", "c"])
    c("attr-list-index-var", "{{ xs[i] }}", xs=["a", "b", "c"], i=1)
    c("attr-list-out-of-range", "[{{ xs[10] }}]", xs=["a"])
    c("attr-string-index", "{{ s[0] }}{{ s[-1] }}", s="hello")
    c("attr-dict-key-var", "{{ d[k] }}", d={"x": 1, "y": 2}, k="y")
    c("attr-slice-from", "{{ xs[1:] }}", xs=[1, 2, 3, 4])
    c("attr-slice-to-negative", "{{ xs[:-1] }}", xs=[1, 2, 3, 4])
    c("attr-slice-reverse", "{{ xs[::-1] }}", xs=[1, 2, 3, 4])
    c("attr-slice-range", "{{ xs[1:3] }}", xs=[1, 2, 3, 4])
    c("attr-slice-step", "{{ xs[::2] }}", xs=[1, 2, 3, 4, 5])
    c("attr-slice-negative-step-bounds", "{{ xs[3:0:-1] }}", xs=[1, 2, 3, 4, 5])
    c("attr-slice-out-of-range", "{{ xs[5:] }} {{ xs[-10:2] }}", xs=[1, 2, 3])
    c("attr-slice-string", "{{ s[1:3] }}|{{ s[::-1] }}|{{ s[:-2] }}", s="hello")
    c("attr-slice-string-unicode", "{{ s[1:] }}|{{ s[::-1] }}", s="日本語")
    c("attr-slice-copy", "{{ xs[:] }}", xs=[1, 2])
    c("attr-missing-key", "[{{ d.nope }}][{{ d['nope'] }}]", d=d)
    c("attr-missing-is-defined", "{{ d.nope is defined }} {{ d.k is defined }}", d=d)
    c("attr-get", "{{ d.get('k') }}", d=d)
    c("attr-get-missing", "{{ d.get('nope') }}", d=d)
    c("attr-get-default", "{{ d.get('nope', 'dflt') }}", d=d)
    c("attr-get-present-empty", "[{{ d.get('e', 'dflt') }}]", d=d)
    c("attr-message-fields", "{{ messages[1].role }}:{{ messages[1]['content'] }}", messages=MSGS)
    c("attr-dict-null-value", "{{ d.v }} {{ d.v is none }} {{ d.v is defined }}", d={"v": None})

    # --- filters ----------------------------------------------------------------------------
    c("filter-abs-int", "{{ n|abs }}", n=-3)
    c("filter-abs-float", "{{ x|abs }}", x=-2.5)
    c("filter-capitalize", "{{ 'hELLO wORLD'|capitalize }}")
    c("filter-count", "{{ xs|count }}", xs=[1, 2, 3])
    c("filter-default-undefined", "{{ nope|default('x') }}")
    c("filter-default-defined", "{{ v|default('x') }}", v="set")
    c("filter-default-empty-string", "[{{ ''|default('x') }}]")
    c("filter-default-empty-string-boolean", "{{ ''|default('x', true) }}")
    c("filter-default-none-is-defined", "{{ v|default('x') }}", v=None)
    c("filter-default-none-boolean", "{{ v|default('x', true) }}", v=None)
    c("filter-default-no-args", "[{{ nope|default }}]")
    c("filter-d-alias", "{{ nope|d('alias') }}")
    c("filter-default-keyword", "{{ ''|default('k', boolean=true) }}")
    c("filter-first", "{{ xs|first }}", xs=["a", "b"])
    c("filter-first-string", "{{ 'xyz'|first }}")
    c("filter-first-empty", "[{{ []|first }}]")
    c("filter-last", "{{ xs|last }}", xs=["a", "b"])
    c("filter-last-string", "{{ 'xyz'|last }}")
    c("filter-float-from-string", "{{ '3'|float }}")
    c("filter-float-from-int", "{{ 3|float }}")
    c("filter-float-bad", "{{ 'x'|float }}")
    c("filter-float-default", "{{ 'x'|float(1.5) }}")
    c("filter-int-from-string", "{{ '42'|int }}")
    c("filter-int-from-float-string", "{{ '3.7'|int }}")
    c("filter-int-from-float", "{{ 3.7|int }} {{ -3.7|int }} {{ (-3.7)|int }}")
    c("filter-int-bad-string", "{{ 'x'|int }}")
    c("filter-int-default", "{{ 'x'|int(7) }}")
    c("filter-int-padded-string", "{{ ' 12 '|int }}")
    c("filter-int-none", "{{ none|int }}")
    c("filter-int-bool", "{{ true|int }}")
    c("filter-items", "{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}",
      d={"b": 1, "a": [2], "c": None})
    c("filter-join", "{{ xs|join }}", xs=["a", "b", "c"])
    c("filter-join-separator", "{{ xs|join(', ') }}", xs=["a", "b", "c"])
    c("filter-join-ints", "{{ [1, 2.5, none]|join('-') }}")
    c("filter-join-attribute", "{{ users|join(', ', attribute='name') }}", users=USERS)
    c("filter-join-empty", "[{{ []|join(',') }}]")
    c("filter-length-list", "{{ xs|length }}", xs=[1, 2, 3])
    c("filter-length-string", "{{ s|length }}", s="héllo👋")
    c("filter-length-dict", "{{ d|length }}", d={"a": 1, "b": 2})
    c("filter-length-undefined", "{{ nope|length }}")
    c("filter-list-string", "{{ 'abc'|list }}")
    c("filter-list-dict", "{{ d|list }}", d={"b": 1, "a": 2})
    c("filter-list-tuple", "{{ (1, 2)|list }}")
    c("filter-lower", "{{ 'HeLLo'|lower }}")
    c("filter-lower-unicode", "{{ 'ÉCOLE ÀÉ'|lower }}")
    c("filter-upper", "{{ 'hello'|upper }}")
    c("filter-upper-unicode", "{{ 'café'|upper }}")
    c("filter-upper-sharp-s", "{{ 'straße'|upper }}")
    c("filter-map-attribute", "{{ users|map(attribute='name')|list }}", users=USERS)
    c("filter-map-attribute-missing", "{{ users|map(attribute='score')|list }}", users=USERS)
    c("filter-map-attribute-default", "{{ users|map(attribute='score', default=0)|join(',') }}",
      users=USERS)
    c("filter-map-filter", "{{ xs|map('upper')|join(' ') }}", xs=["a", "b"])
    c("filter-map-filter-args", "{{ xs|map('default', 'z')|list }}", xs=["a", None])
    c("filter-map-int", "{{ xs|map('int')|sum }}", xs=["1", "2", "3"])
    c("filter-max", "{{ [3, 1, 2]|max }}")
    c("filter-min", "{{ [3, 1, 2]|min }}")
    c("filter-max-strings-case-insensitive", "{{ ['B', 'a', 'C']|max }} {{ ['B', 'a', 'C']|min }}")
    c("filter-max-attribute", "{{ (users|max(attribute='age')).name }}", users=USERS)
    c("filter-max-floats", "{{ [1, 2.5, 2]|max }}")
    c("filter-min-empty", "[{{ []|min }}]")
    c("filter-select-odd", "{{ xs|select('odd')|list }}", xs=[1, 2, 3, 4, 5])
    c("filter-select-truthy", "{{ xs|select|list }}", xs=[0, 1, "", "a", None, [], [0]])
    c("filter-select-defined", "{{ [1, nope, 2]|select('defined')|list }}")
    c("filter-reject-none", "{{ xs|reject('none')|list }}", xs=[1, None, "a", None])
    c("filter-reject-even", "{{ xs|reject('even')|join(',') }}", xs=[1, 2, 3, 4])
    c("filter-select-test-arg", "{{ xs|select('divisibleby', 3)|list }}", xs=list(range(1, 10)))
    c("filter-select-gt", "{{ xs|select('gt', 2)|list }}", xs=[1, 2, 3, 4])
    c("filter-select-string", "{{ xs|select('string')|list }}", xs=[1, "a", None, "b"])
    c("filter-selectattr-truthy", "{{ users|selectattr('score')|map(attribute='name')|list }}",
      users=USERS)
    c("filter-selectattr-equalto", "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }}",
      msgs=MSGS)
    c("filter-selectattr-eq", "{{ msgs|selectattr('role', 'eq', 'assistant')|list|length }}", msgs=MSGS)
    c("filter-selectattr-eq-symbol", "{{ (msgs|selectattr('role', '==', 'system')|first).content }}",
      msgs=MSGS)
    c("filter-selectattr-defined", "{{ users|selectattr('email', 'defined')|map(attribute='name')|list }}",
      users=USERS)
    c("filter-selectattr-undefined", "{{ users|selectattr('score', 'undefined')|map(attribute='name')|list }}",
      users=USERS)
    c("filter-selectattr-ne", "{{ users|selectattr('role', 'ne', 'user')|map(attribute='name')|first }}",
      users=USERS)
    c("filter-rejectattr-equalto", "{{ msgs|rejectattr('role', 'equalto', 'system')|map(attribute='role')|list }}",
      msgs=MSGS)
    c("filter-rejectattr-truthy", "{{ users|rejectattr('score')|map(attribute='name')|list }}", users=USERS)
    c("filter-rejectattr-none", "{{ users|rejectattr('email', 'none')|map(attribute='name')|list }}",
      users=USERS)
    c("filter-selectattr-nested", "{{ xs|selectattr('f.on')|map(attribute='id')|list }}",
      xs=[{"id": 1, "f": {"on": True}}, {"id": 2, "f": {"on": False}}, {"id": 3, "f": {}}])
    c("filter-replace", "{{ 'a-b-c'|replace('-', '+') }}")
    c("filter-replace-count", "{{ 'aaaa'|replace('a', 'b', 2) }}")
    c("filter-replace-empty-old", "{{ 'abc'|replace('', '.') }}")
    c("filter-replace-multichar", "{{ 'hello world'|replace('o w', '0_W') }}")
    c("filter-reverse-string", "{{ 'abc'|reverse }}")
    c("filter-reverse-list", "{{ [1, 2, 3]|reverse|list }}")
    c("filter-reverse-in-loop", "{% for x in xs|reverse %}{{ x }}{% endfor %}", xs=["a", "b", "c"])
    c("filter-round-default", "{{ 2.7|round }} {{ 2.5|round }} {{ 3.5|round }}")
    c("filter-round-int", "{{ 3|round }}")
    c("filter-round-precision", "{{ 3.14159|round(2) }}")
    c("filter-round-precision-binary", "{{ 2.675|round(2) }}")
    c("filter-round-floor", "{{ 2.7|round(method='floor') }} {{ -2.5|round(method='floor') }}")
    c("filter-round-ceil", "{{ 2.1|round(method='ceil') }} {{ 2.11|round(1, 'ceil') }}")
    c("filter-round-floor-int", "{{ 3|round(method='floor') }}")
    c("filter-safe", "{{ '<b>&amp;</b>'|safe }}")
    c("filter-no-autoescape", "{{ s }}", s="<b>&\"'</b>")
    c("filter-sort", "{{ [3, 1, 2]|sort }}")
    c("filter-sort-reverse", "{{ [3, 1, 2]|sort(reverse=true) }}")
    c("filter-sort-strings-case-insensitive", "{{ ['b', 'A', 'C', 'a']|sort }}")
    c("filter-sort-case-sensitive", "{{ ['b', 'A', 'C', 'a']|sort(case_sensitive=true) }}")
    c("filter-sort-attribute", "{{ users|sort(attribute='age')|map(attribute='name')|join(',') }}",
      users=USERS)
    c("filter-sort-attribute-string", "{{ users|sort(attribute='name')|map(attribute='name')|join(',') }}",
      users=USERS)
    c("filter-sort-stable", "{{ xs|sort(attribute='k')|map(attribute='v')|join }}",
      xs=[{"k": 2, "v": "a"}, {"k": 1, "v": "b"}, {"k": 2, "v": "c"}, {"k": 1, "v": "d"}])
    c("filter-sort-mixed-numbers", "{{ [2, 1.5, 1, 3.0]|sort }}")
    c("filter-string-int", "{{ (1|string) ~ '|' ~ ((1|string) + 'x') }}")
    c("filter-string-none", "{{ none|string }}")
    c("filter-string-list", "{{ ['a', 1]|string }}")
    c("filter-string-float", "{{ 1.0|string }}")
    c("filter-sum", "{{ [1, 2, 3]|sum }}")
    c("filter-sum-float", "{{ [1, 2.5]|sum }}")
    c("filter-sum-attribute", "{{ users|sum(attribute='age') }}", users=USERS)
    c("filter-sum-start", "{{ [1, 2]|sum(start=10) }}")
    c("filter-sum-empty", "{{ []|sum }}")
    c("filter-title", "{{ 'hello wORLD foo-bar (baz)'|title }}")
    c("filter-title-apostrophe", "{{ \"o'neil's dog\"|title }}")
    c("filter-trim", "[{{ '  x y  '|trim }}]")
    c("filter-trim-newlines-tabs", "[{{ s|trim }}]", s="\n\t x \r\n")
    c("filter-trim-unicode-spaces", "[{{ s|trim }}]", s="\u00a0\u3000x\u2003")
    c("filter-trim-chars", "[{{ 'xxhixx'|trim('x') }}]")
    c("filter-unique", "{{ [1, 2, 1, 3, 2]|unique|list }}")
    c("filter-unique-case-insensitive", "{{ ['a', 'A', 'b']|unique|list }}")
    c("filter-unique-attribute", "{{ users|unique(attribute='role')|map(attribute='name')|list }}",
      users=USERS)
    c("filter-indent", "{{ s|indent(2) }}", s="a\nb\n\nc")
    c("filter-indent-default", "{{ s|indent }}", s="a\nb")
    c("filter-indent-first", "{{ s|indent(2, true) }}", s="a\nb")
    c("filter-indent-first-keyword", "{{ s|indent(width=3, first=true) }}", s="a\n\nb")
    c("filter-indent-blank", "{{ s|indent(2, blank=true) }}", s="a\n\nb")
    c("filter-indent-trailing-newline", "[{{ s|indent(2) }}]", s="a\nb\n")
    c("filter-no-parens", "{{ 'abc'|upper }}")
    c("filter-empty-parens", "{{ 'abc'|upper() }}")
    c("filter-chained", "{{ '  Hi There  '|trim|lower|replace('h', 'j') }}")
    c("filter-on-parenthesised-expr", "{{ ('a' ~ 'b')|upper }}")
    c("filter-on-literal-list", "{{ [3, 1, 2]|sort|join(',') }}")
    c("filter-on-subscript", "{{ d['k']|upper }}", d={"k": "v"})
    c("filter-in-condition", "{% if xs|length > 1 %}many{% endif %}", xs=[1, 2])
    c("filter-arg-expression", "{{ xs|join(sep ~ ' ') }}", xs=[1, 2], sep=";")
    c("filter-first-last-concat", "{{ (xs|first) ~ (xs|last) }}", xs="hello")
    c("filter-length-of-split", "{{ s.split()|length }}", s="a b  c")

    # --- tojson -------------------------------------------------------------------------------
    c("tojson-string", "{{ s|tojson }}", s="plain")
    c("tojson-string-unicode", "{{ s|tojson }}", s="café 日本 👋")
    c("tojson-string-quotes-newlines", "{{ s|tojson }}", s="a \"q\" 'b'\n\t\\ end")
    c("tojson-string-html", "{{ s|tojson }}", s="<script>&</script>")
    c("tojson-string-control", "{{ s|tojson }}", s="\u0001\u001f\u007f\u2028/")
    c("tojson-ensure-ascii", "{{ s|tojson(ensure_ascii=true) }}", s="é👋")
    c("tojson-int-float", "{{ [1, 1.0, 0.1, 1e-05, 1e16, -0.0, 2.5]|tojson }}")
    c("tojson-none-bools", "{{ [none, true, false]|tojson }}")
    c("tojson-dict-insertion-order", "{{ d|tojson }}", d={"z": 1, "a": {"y": [], "b": {}}, "m": "x"})
    c("tojson-indent-2", "{{ d|tojson(indent=2) }}", d={"a": [1, {"b": None}], "c": {}, "d": [], "e": "é"})
    c("tojson-indent-4", "{{ d|tojson(indent=4) }}", d={"a": [1, 2], "b": {"c": True}})
    c("tojson-sort-keys", "{{ d|tojson(sort_keys=true) }}", d={"b": 1, "a": {"d": 2, "c": 3}})
    c("tojson-indent-sort-keys", "{{ d|tojson(indent=2, sort_keys=true) }}", d={"b": [1], "a": 2})
    c("tojson-empty-containers", "{{ [[], {}, '']|tojson }} {{ []|tojson(indent=2) }}")
    c("tojson-tuple", "{{ (1, 'a')|tojson }}")
    c("tojson-literal-dict", "{{ {'name': n, 'args': {'x': 1}}|tojson }}", n="f")
    c("tojson-positional-arg-is-ensure-ascii", "{{ s|tojson(2) }}", s="é")
    c("tojson-separators", "{{ d|tojson(separators=(',', ':')) }}", d={"a": [1, 2]})
    c("tojson-nested-unicode-keys", "{{ d|tojson }}", d={"clé": {"日本": "値"}})
    c("tojson-big-float", "{{ [1.5e300, 123456.789, 0.0001]|tojson }}")

    # --- tests --------------------------------------------------------------------------------
    c("test-defined", "{{ v is defined }} {{ nope is defined }}", v=0)
    c("test-undefined", "{{ v is undefined }} {{ nope is undefined }}", v=0)
    c("test-none", "{{ v is none }} {{ 0 is none }} {{ nope is none }}", v=None)
    c("test-boolean", "{{ true is boolean }} {{ 1 is boolean }} {{ v is boolean }}", v=False)
    c("test-false-true", "{{ false is false }} {{ 0 is false }} {{ true is true }} {{ 1 is true }}")
    c("test-integer", "{{ 1 is integer }} {{ 1.0 is integer }} {{ true is integer }}")
    c("test-float", "{{ 1.0 is float }} {{ 1 is float }} {{ x is float }}", x=2.0)
    c("test-number", "{{ 1 is number }} {{ 1.5 is number }} {{ '1' is number }} {{ true is number }}")
    c("test-string", "{{ 'a' is string }} {{ 1 is string }} {{ nope is string }} {{ none is string }}")
    c("test-mapping", "{{ d is mapping }} {{ xs is mapping }}", d={}, xs=[])
    c("test-iterable", "{{ xs is iterable }} {{ 's' is iterable }} {{ d is iterable }} {{ 1 is iterable }}",
      xs=[], d={})
    c("test-sequence", "{{ xs is sequence }} {{ 's' is sequence }} {{ d is sequence }} {{ 1 is sequence }}",
      xs=[], d={})
    c("test-odd-even", "{{ 3 is odd }} {{ 3 is even }} {{ 0 is even }} {{ -1 is odd }}")
    c("test-divisibleby", "{{ 9 is divisibleby(3) }} {{ 10 is divisibleby(3) }}")
    c("test-eq-equalto", "{{ 1 is eq 1 }} {{ 'a' is equalto('a') }} {{ 1 is eq(1.0) }}")
    c("test-ne", "{{ 1 is ne(2) }} {{ 'a' is ne('a') }}")
    c("test-lt-gt-le-ge", "{{ 1 is lt(2) }} {{ 1 is gt(2) }} {{ 2 is le(2) }} {{ 2 is ge(3) }}")
    c("test-in", "{{ 2 is in([1, 2]) }} {{ 'b' is in('abc') }} {{ 'z' is in(d) }}", d={"z": 0})
    c("test-lower-upper", "{{ 'abc' is lower }} {{ 'aBc' is lower }} {{ 'ABC' is upper }} {{ 'A1' is upper }}")
    c("test-is-not", "{{ nope is not defined }} {{ 1 is not string }} {{ none is not none }}")
    c("test-in-if", "{% if content is string %}str{% elif content is mapping %}map{% else %}other{% endif %}",
      content={"a": 1})
    c("test-not-is-defined", "{{ not nope is defined }}")
    c("test-defined-and-attr", "{% if m.tool_calls is defined and m.tool_calls %}calls{% else %}none{% endif %}",
      m={"role": "assistant", "tool_calls": []})
    c("test-none-from-json-null", "{{ m.content is none }} {{ m.content is string }}",
      m={"content": None})
    c("test-string-on-undefined-attr", "{{ m.content is string }} {{ m.content is defined }}", m={})
    c("test-float-vs-integer-json", "{{ a is integer }} {{ b is integer }} {{ b is float }}", a=1, b=1.0)

    # --- string methods -----------------------------------------------------------------------
    c("strm-strip", "[{{ s.strip() }}]", s="  a b \n")
    c("strm-strip-chars", "[{{ s.strip('x.') }}]", s="x.axbx.")
    c("strm-lstrip", "[{{ s.lstrip() }}]", s="  a  ")
    c("strm-lstrip-chars", "[{{ s.lstrip('ab') }}]", s="abbaXab")
    c("strm-rstrip", "[{{ s.rstrip() }}]", s="  a \n\n")
    c("strm-rstrip-chars", "[{{ s.rstrip('\\n') }}]", s="line\n\n")
    c("strm-strip-unicode-space", "[{{ s.strip() }}]", s="\u3000x\u00a0")
    c("strm-split-whitespace", "{{ s.split() }}", s="  a b\t\nc  ")
    c("strm-split-sep", "{{ s.split(',') }}", s="a,b,,c,")
    c("strm-split-maxsplit", "{{ s.split(',', 1) }}", s="a,b,c")
    c("strm-split-multichar-sep", "{{ s.split('--') }}", s="a--b---c")
    c("strm-split-none-maxsplit", "{{ s.split(none, 1) }}", s=" a b c ")
    c("strm-split-empty", "{{ ''.split() }} {{ ''.split(',') }}")
    c("strm-startswith", "{{ s.startswith('<|') }} {{ s.startswith('x') }}", s="<|im_start|>")
    c("strm-endswith", "{{ s.endswith('.jinja') }} {{ s.endswith('') }}", s="a.jinja")
    c("strm-startswith-tuple", "{{ s.startswith(('a', 'b')) }} {{ s.startswith(('x', 'y')) }}", s="banana")
    c("strm-endswith-tuple", "{{ s.endswith(('!', '?')) }}", s="what?")
    c("strm-upper-lower", "{{ s.upper() }} {{ s.lower() }}", s="MiXeD é")
    c("strm-title", "{{ s.title() }}", s="hello o'neil foo-bar")
    c("strm-capitalize", "{{ s.capitalize() }}", s="hELLO World")
    c("strm-replace", "{{ s.replace('a', 'o') }}", s="banana")
    c("strm-replace-count", "{{ s.replace('a', 'o', 2) }}", s="banana")
    c("strm-find", "{{ s.find('na') }} {{ s.find('x') }}", s="banana")
    c("strm-count", "{{ s.count('a') }} {{ s.count('an') }}", s="banana")
    c("strm-splitlines", "{{ s.splitlines() }}", s="a\nb\r\nc\n")
    c("strm-splitlines-empty-lines", "{{ s.splitlines() }}", s="\n\nx\n")
    c("strm-join", "{{ ', '.join(xs) }}", xs=["a", "b", "c"])
    c("strm-join-empty-sep", "{{ ''.join(['x', 'y']) }}")
    c("strm-method-on-literal", "{{ 'a-b'.split('-')[1] }}")
    c("strm-chained-methods", "{{ s.strip().lower().replace(' ', '_') }}", s="  Hello World ")
    c("strm-method-then-filter", "{{ s.split(',')|map('trim')|join('|') }}", s=" a , b ")
    c("strm-startswith-in-if", "{% if m.content.startswith('/') %}cmd{% else %}text{% endif %}",
      m={"content": "/help"})

    # --- dict methods -------------------------------------------------------------------------
    dd = {"b": 1, "a": "x", "c": [1, 2]}
    c("dictm-items-loop", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", d=dd)
    c("dictm-keys", "{{ d.keys()|list }}", d=dd)
    c("dictm-values", "{{ d.values()|list }}", d=dd)
    c("dictm-keys-loop", "{% for k in d.keys() %}{{ k }}{% endfor %}", d=dd)
    c("dictm-get", "{{ d.get('a') }}|{{ d.get('z') }}|{{ d.get('z', 0) }}", d=dd)
    c("dictm-items-list", "{{ d.items()|list }}", d={"a": 1})
    c("dictm-key-named-like-method", "{{ d['items'] }} {{ d['values'] }}",
      d={"items": [1], "values": "v"})
    c("dictm-length-of-items", "{{ d.items()|list|length }}", d=dd)
    c("dictm-nested-get", "{{ d.get('c', [])[0] }}", d=dd)

    # --- if -----------------------------------------------------------------------------------
    c("if-true", "{% if x %}yes{% endif %}", x=True)
    c("if-false-else", "{% if x %}yes{% else %}no{% endif %}", x=False)
    c("if-elif", "{% if n < 0 %}neg{% elif n == 0 %}zero{% elif n < 10 %}small{% else %}big{% endif %}", n=5)
    c("if-elif-else", "{% if n < 0 %}neg{% elif n == 0 %}zero{% else %}pos{% endif %}", n=99)
    c("if-nested", "{% if a %}{% if b %}ab{% else %}a{% endif %}{% else %}-{% endif %}", a=1, b=0)
    c("if-empty-list-false", "{% if xs %}t{% else %}f{% endif %}", xs=[])
    c("if-empty-dict-false", "{% if d %}t{% else %}f{% endif %}", d={})
    c("if-zero-string-true", "{% if s %}t{% else %}f{% endif %}", s="0")
    c("if-zero-float-false", "{% if x %}t{% else %}f{% endif %}", x=0.0)
    c("if-space-string-true", "{% if s %}t{% else %}f{% endif %}", s=" ")
    c("if-undefined-false", "{% if nope %}t{% else %}f{% endif %}")
    c("if-none-false", "{% if v %}t{% else %}f{% endif %}", v=None)
    c("if-not", "{% if not xs %}empty{% endif %}", xs=[])
    c("if-defined-and", "{% if v is defined and v %}yes{% else %}no{% endif %}")
    c("if-undefined-attr-chain-guard", "{% if d.a is defined and d.a.b %}y{% else %}n{% endif %}", d={})
    c("if-compare-strings", "{% if role == 'user' %}U{% elif role == 'assistant' %}A{% endif %}",
      role="assistant")
    c("if-multiline", "{% if x %}\nline\n{% else %}\nother\n{% endif %}\nend", x=True)

    # --- for ----------------------------------------------------------------------------------
    c("for-list", "{% for x in xs %}[{{ x }}]{% endfor %}", xs=[1, "a", None])
    c("for-string", "{% for ch in s %}{{ ch }}.{% endfor %}", s="héy")
    c("for-dict-keys", "{% for k in d %}{{ k }},{% endfor %}", d={"z": 1, "a": 2, "m": 3})
    c("for-items-unpack", "{% for k, v in d.items() %}{{ k }}:{{ v }} {% endfor %}", d={"z": 1, "a": [2]})
    c("for-list-of-pairs-unpack", "{% for a, b in pairs %}{{ a }}-{{ b }};{% endfor %}",
      pairs=[[1, 2], ["x", "y"]])
    c("for-filter", "{% for x in xs if x is odd %}{{ x }}{% endfor %}", xs=[1, 2, 3, 4, 5])
    c("for-filter-loop-index", "{% for x in xs if x > 2 %}{{ loop.index }}/{{ loop.length }}:{{ x }} {% endfor %}",
      xs=[1, 5, 2, 7, 3])
    c("for-filter-last", "{% for m in msgs if m.role != 'system' %}{{ m.role }}{{ '|' if not loop.last }}{% endfor %}",
      msgs=MSGS)
    c("for-else-empty", "{% for x in xs %}{{ x }}{% else %}none{% endfor %}", xs=[])
    c("for-else-nonempty", "{% for x in xs %}{{ x }}{% else %}none{% endfor %}", xs=[1])
    c("for-else-all-filtered", "{% for x in xs if x > 10 %}{{ x }}{% else %}no match{% endfor %}", xs=[1, 2])
    c("for-else-undefined", "{% for x in nope %}{{ x }}{% else %}undef{% endfor %}")
    c("for-range", "{% for i in range(3) %}{{ i }}{% endfor %}")
    c("for-var-does-not-leak", "{% for i in [1, 2] %}{% endfor %}[{{ i }}]")
    c("for-shadows-outer", "{% set x = 'outer' %}{% for x in [1, 2] %}{{ x }}{% endfor %}{{ x }}")
    c("for-over-filter-result", "{% for n in users|map(attribute='name')|sort %}{{ n }} {% endfor %}",
      users=USERS)
    c("for-nested-lists", "{% for row in m %}{% for c in row %}{{ c }}{% endfor %};{% endfor %}",
      m=[[1, 2], [], [3]])
    c("for-multiline-body", "{% for x in xs %}\n- {{ x }}\n{% endfor %}\n", xs=["a", "b"])

    # --- loop variable --------------------------------------------------------------------------
    xs4 = ["a", "b", "c", "d"]
    c("loop-index", "{% for x in xs %}{{ loop.index }}{% endfor %}", xs=xs4)
    c("loop-index0", "{% for x in xs %}{{ loop.index0 }}{% endfor %}", xs=xs4)
    c("loop-revindex", "{% for x in xs %}{{ loop.revindex }}{% endfor %}", xs=xs4)
    c("loop-revindex0", "{% for x in xs %}{{ loop.revindex0 }}{% endfor %}", xs=xs4)
    c("loop-first-last", "{% for x in xs %}{{ loop.first }}/{{ loop.last }} {% endfor %}", xs=xs4)
    c("loop-length", "{% for x in xs %}{{ loop.length }}{% endfor %}", xs=xs4)
    c("loop-previtem-nextitem", "{% for x in xs %}({{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}){% endfor %}",
      xs=xs4)
    c("loop-previtem-defined", "{% for x in xs %}{{ loop.previtem is defined }}{% endfor %}", xs=[1, 2])
    c("loop-first-separator", "{% for x in xs %}{% if not loop.first %}, {% endif %}{{ x }}{% endfor %}", xs=xs4)
    c("loop-index-even-odd", "{% for x in xs %}{{ x if loop.index is odd else x|upper }}{% endfor %}", xs=xs4)
    c("loop-nested-outer-captured", "{% for a in xs %}{% set outer = loop %}{% for b in ys %}{{ outer.index }}.{{ loop.index }} {% endfor %}{% endfor %}",
      xs=[1, 2], ys=[1, 2, 3])
    c("loop-nested-inner-shadows", "{% for a in [1, 2] %}{% for b in [1] %}{{ loop.length }}{% endfor %}{{ loop.length }}{% endfor %}")
    c("loop-break", "{% for x in xs %}{% if x == 'c' %}{% break %}{% endif %}{{ x }}{% endfor %}", xs=xs4)
    c("loop-continue", "{% for x in xs %}{% if loop.index is even %}{% continue %}{% endif %}{{ x }}{% endfor %}",
      xs=xs4)
    c("loop-break-else", "{% for x in xs %}{% break %}{% else %}else{% endfor %}done", xs=[1])
    c("loop-break-first-iteration-else", "{% for x in xs %}{{ x }}{% break %}{% else %}else{% endfor %}done",
      xs=[1, 2])
    c("loop-break-second-iteration-else",
      "{% for x in xs %}{{ x }}{% if x == 2 %}{% break %}{% endif %}{% else %}else{% endfor %}done", xs=[1, 2, 3])
    c("loop-continue-every-iteration-else", "{% for x in xs %}{% continue %}{% else %}else{% endfor %}done",
      xs=[1, 2])
    c("loop-continue-first-iteration-else",
      "{% for x in xs %}{% if loop.first %}{% continue %}{% endif %}{{ x }}{% else %}else{% endfor %}done",
      xs=[1, 2])
    c("loop-undefined-outside", "[{{ loop }}]")
    c("loop-messages-role-check", "{% for m in msgs %}{{ (m.role == 'user') == (loop.index0 % 2 == 1) }} {% endfor %}",
      msgs=MSGS)

    # --- set, namespace, scoping --------------------------------------------------------------
    c("set-simple", "{% set x = 5 %}{{ x }}")
    c("set-expression", "{% set x = n * 2 + 1 %}{{ x }}", n=3)
    c("set-overrides-context", "{% set n = n + 1 %}{{ n }}", n=1)
    c("set-tuple-unpack", "{% set a, b = 1, 2 %}{{ a }}-{{ b }}")
    c("set-tuple-unpack-list", "{% set a, b = xs %}{{ b }}{{ a }}", xs=["x", "y"])
    c("set-tuple-value", "{% set t = 1, 2 %}{{ t }}")
    c("set-block", "{% set x %}hello {{ name }}{% endset %}[{{ x }}]", name="you")
    c("set-block-multiline", "{% set x %}\nline1\n  line2\n{% endset %}[{{ x }}]")
    c("set-block-then-filter", "{% set x %}  padded  {% endset %}[{{ x|trim }}]")
    c("set-in-for-does-not-leak", "{% set x = 1 %}{% for i in [1, 2] %}{% set x = i %}{% endfor %}{{ x }}")
    c("set-in-for-visible-in-iteration", "{% for i in [1, 2] %}{% set y = i * 10 %}{{ y }},{% endfor %}[{{ y }}]")
    c("set-in-if-leaks", "{% if true %}{% set x = 'inside' %}{% endif %}{{ x }}")
    c("set-in-for-if", "{% for i in [1, 2, 3] %}{% if i == 2 %}{% set found = i %}{% endif %}{% endfor %}[{{ found }}]")
    c("set-in-for-carries-across-iterations", "{% for i in [1, 2, 3] %}{% if i == 1 %}{% set s = 'a' %}{% endif %}[{{ s }}]{% endfor %}")
    c("namespace-basic", "{% set ns = namespace(a=1) %}{% set ns.a = 2 %}{{ ns.a }}")
    c("namespace-in-loop", "{% set ns = namespace(total=0) %}{% for x in xs %}{% set ns.total = ns.total + x %}{% endfor %}{{ ns.total }}",
      xs=[1, 2, 3.5])
    c("namespace-flag", "{% set ns = namespace(found=false) %}{% for m in msgs %}{% if m.role == 'system' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.found }}",
      msgs=MSGS)
    c("namespace-multiple-attrs", "{% set ns = namespace(a=1, b='x', c=none) %}{{ ns.a }}{{ ns.b }}{{ ns.c }}")
    c("namespace-new-attr", "{% set ns = namespace() %}{% set ns.z = 'new' %}{{ ns.z }}")
    c("namespace-missing-attr", "{% set ns = namespace(a=1) %}[{{ ns.b }}]")
    c("namespace-list-value", "{% set ns = namespace(items=[]) %}{% for x in xs %}{% set ns.items = ns.items + [x * 2] %}{% endfor %}{{ ns.items }}",
      xs=[1, 2])
    c("namespace-string-accumulate", "{% set ns = namespace(s='') %}{% for x in xs %}{% set ns.s = ns.s ~ x ~ ';' %}{% endfor %}{{ ns.s }}",
      xs=["a", 1])
    c("namespace-last-index", "{% set ns = namespace(last=-1) %}{% for m in msgs %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{{ ns.last }}",
      msgs=MSGS)
    c("set-and-namespace-mixed", "{% set ns = namespace(n=0) %}{% set n = 0 %}{% for i in [1, 2] %}{% set ns.n = ns.n + 1 %}{% set n = n + 1 %}{% endfor %}{{ ns.n }} {{ n }}")

    # --- macros -------------------------------------------------------------------------------
    c("macro-simple", "{% macro hi() %}hi!{% endmacro %}{{ hi() }}{{ hi() }}")
    c("macro-positional-default", "{% macro tag(name, cls='x') %}<{{ name }} {{ cls }}>{% endmacro %}{{ tag('a') }}{{ tag('b', 'y') }}")
    c("macro-keyword-args", "{% macro f(a, b=2, c=3) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ f(1, c=9) }} {{ f(b=0, a=5) }}")
    c("macro-missing-arg-undefined", "{% macro f(a, b) %}[{{ a }}|{{ b }}]{% endmacro %}{{ f(1) }}")
    c("macro-calls-macro", "{% macro inner(x) %}({{ x }}){% endmacro %}{% macro outer(xs) %}{% for x in xs %}{{ inner(x) }}{% endfor %}{% endmacro %}{{ outer([1, 2]) }}")
    c("macro-in-expression", "{% macro m(x) %}{{ x * 2 }}{% endmacro %}{{ m(2) ~ '!' }} {{ m(3)|length }}")
    c("macro-whitespace", "{% macro m(x) %}\n  value: {{ x }}\n{% endmacro %}[{{ m(1) }}]")
    c("macro-whitespace-dash", "{%- macro m(x) -%}\n  value: {{ x }}\n{%- endmacro -%}\n[{{ m(1) }}]")
    c("macro-reads-context", "{% macro m() %}{{ g }}{% endmacro %}{{ m() }}", g="from context")
    c("macro-reads-top-level-set", "{% set g = 'G' %}{% macro m() %}{{ g }}{% endmacro %}{{ m() }}")
    c("macro-param-shadows", "{% macro m(g) %}{{ g }}{% endmacro %}{{ m('param') }} {{ g }}", g="ctx")
    c("macro-set-inside-does-not-leak", "{% set x = 1 %}{% macro m() %}{% set x = 2 %}{{ x }}{% endmacro %}{{ m() }}{{ x }}")
    c("macro-default-uses-expression", "{% macro m(x=1 + 2) %}{{ x }}{% endmacro %}{{ m() }}")
    c("macro-with-loop", "{% macro render(ms) %}{% for m in ms %}{{ m.role[0] }}{% endfor %}{% endmacro %}{{ render(msgs) }}",
      msgs=MSGS)
    c("macro-recursive", "{% macro cnt(n) %}{{ n }}{% if n > 0 %}{{ cnt(n - 1) }}{% endif %}{% endmacro %}{{ cnt(3) }}")
    c("macro-returns-string-type", "{% macro m() %}5{% endmacro %}{{ m() is string }}")

    # --- globals: range, dict, namespace --------------------------------------------------------
    c("range-n", "{{ range(4)|list }}")
    c("range-a-b", "{{ range(2, 5)|list }}")
    c("range-step", "{{ range(0, 10, 3)|list }}")
    c("range-negative-step", "{{ range(5, 0, -2)|list }}")
    c("range-empty", "{{ range(0)|list }} {{ range(3, 1)|list }}")
    c("range-length", "{{ range(7)|length }}")
    c("range-loop-sum", "{% set ns = namespace(s=0) %}{% for i in range(1, 5) %}{% set ns.s = ns.s + i %}{% endfor %}{{ ns.s }}")
    c("dict-global", "{{ dict(a=1) }}")
    c("dict-global-multiple", "{{ dict(b=1, a='x')|tojson }}")
    c("dict-global-empty", "{{ dict() }}")

    # --- comments -----------------------------------------------------------------------------
    c("comment-inline", "a{# hidden #}b")
    c("comment-multiline", "a{# line1\nline2 #}b")
    c("comment-contains-tags", "a{# {{ x }} {% if %} #}b")
    c("comment-own-line", "a\n{# note #}\nb")
    c("comment-indented-own-line", "a\n    {# note #}\nb")
    c("comment-dash", "a  {#- c -#}  b")
    c("comment-dash-newlines", "a\n\n{#- c -#}\n\nb")

    # --- whitespace control, trim_blocks, lstrip_blocks ------------------------------------------
    c("ws-trim-blocks", "{% if true %}\nyes\n{% endif %}\nafter")
    c("ws-trim-blocks-one-newline-only", "{% if true %}\n\nyes{% endif %}")
    c("ws-lstrip-blocks", "  {% if true %}\n  x\n  {% endif %}\ny")
    c("ws-lstrip-blocks-tabs", "\t\t{% if true %}\nx\n\t{% endif %}\ny")
    c("ws-lstrip-not-expression", "  {{ 'x' }}\n  {{ 'y' }}")
    c("ws-lstrip-mid-line", "a  {% if true %}b{% endif %}  c")
    c("ws-lstrip-only-at-line-start", "text {% if true %}\n  {% endif %}end")
    c("ws-lstrip-plus-disables", "  {%+ if true %}x{% endif %}")
    c("ws-trim-plus-disables", "{% if true +%}\nx{% endif %}")
    c("ws-dash-block-left", "a   \n  {%- if true %}b{% endif %}")
    c("ws-dash-block-right", "{% if true -%}   \n\n  b{% endif %}")
    c("ws-dash-block-both", "a \n {%- if true -%} \n b {%- endif -%} \n c")
    c("ws-dash-expr-left", "a  \n  {{- 'x' }}  b")
    c("ws-dash-expr-right", "a  {{ 'x' -}}  \n  b")
    c("ws-dash-expr-both", "a  {{- 'x' -}}  b")
    c("ws-dash-multiple-newlines", "a\n\n\n{%- if true -%}\n\n\nb{% endif %}")
    c("ws-expr-newline-kept", "{{ 'a' }}\n{{ 'b' }}\n")
    c("ws-expr-then-dash", "{{ 'a' }}\n{{- 'b' }}")
    c("ws-for-lines", "<ul>\n{% for x in xs %}\n  <li>{{ x }}</li>\n{% endfor %}\n</ul>", xs=[1, 2])
    c("ws-for-indented-tags", "<ul>\n    {% for x in xs %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>", xs=[1, 2])
    c("ws-set-own-line", "a\n{% set x = 1 %}\nb{{ x }}")
    c("ws-set-indented", "a\n    {% set x = 1 %}\n    b{{ x }}")
    c("ws-only-newlines", "\n\n\n")
    c("ws-single-newline", "\n")
    c("ws-trailing-newline-dropped", "hello\n")
    c("ws-two-trailing-newlines", "hello\n\n")
    c("ws-no-trailing-newline", "hello")
    c("ws-trailing-newline-after-tag", "x{% if true %}y{% endif %}\n")
    c("ws-trailing-spaces-kept", "hello  ")
    c("ws-crlf-text", "a\r\nb\r\n{{ 'c' }}\r\nd")
    c("ws-crlf-trim-blocks", "{% if true %}\r\nx\r\n{% endif %}\r\ny")
    c("ws-crlf-lstrip-blocks", "a\r\n  {% if true %}\r\n  b\r\n  {% endif %}\r\nc")
    c("ws-cr-only", "a\rb")
    c("ws-crlf-in-string-literal", "{{ 'x\r\ny' }}")
    c("ws-crlf-in-context-kept", "{{ s }}", s="a\r\nb")
    c("ws-raw", "{% raw %}{{ x }} {% if %}{% endraw %}")
    c("ws-raw-multiline", "{% raw %}\n  {{ a }}\n{% endraw %}\nb")
    c("ws-raw-dash", "a  {%- raw -%}  {{ x }}  {%- endraw -%}  b")
    c("ws-empty-template", "")
    c("ws-lstrip-blocks-comment-and-block", "a\n  {# c #}\n  {% if true %}\n  b\n  {% endif %}\nc")
    c("ws-trim-blocks-endfor-text", "{% for x in xs %}{{ x }}\n{% endfor %}end", xs=[1, 2])
    c("ws-dash-in-loop-join", "{%- for x in xs -%}\n  {{ x }}\n{%- endfor -%}", xs=[1, 2, 3])
    c("ws-expression-spacing-inside-tags", "{{x}}{{  x  }}{%if x%}!{%endif%}", x=1)
    c("ws-lstrip-keeps-newline-before", "a\n  {% if true %}b{% endif %}")

    # --- generation block -----------------------------------------------------------------------
    c("genblock-basic", "A:{% generation %}text{% endgeneration %}.")
    c("genblock-expr", "{% generation %}{{ m.content }}{% endgeneration %}", m={"content": "hi"})
    c("genblock-dash", "x  {%- generation -%}  y  {%- endgeneration -%}  z")
    c("genblock-in-loop", "{% for m in msgs %}{% if m.role == 'assistant' %}{% generation %}[{{ m.content }}|{{ loop.index }}]{% endgeneration %}{% else %}{{ m.content }}{% endif %};{% endfor %}",
      msgs=MSGS)
    c("genblock-trim-blocks", "{% generation %}\nbody\n{% endgeneration %}\nafter")
    c("genblock-set-does-not-leak", "{% set x = 1 %}{% generation %}{% set x = 2 %}{{ x }}{% endgeneration %}{{ x }}")
    c("genblock-namespace-update", "{% set ns = namespace(n=0) %}{% generation %}{% set ns.n = 5 %}{% endgeneration %}{{ ns.n }}")

    # --- strftime_now ---------------------------------------------------------------------------
    c("time-date-short", "{{ strftime_now('%d %b %Y') }}")
    c("time-iso-date", "{{ strftime_now('%Y-%m-%d') }}")
    c("time-clock", "{{ strftime_now('%H:%M:%S') }}")
    c("time-long", "{{ strftime_now('%A, %B %d') }}")
    c("time-in-expression", "Today Date: {{ strftime_now('%d %b %Y') ~ '.' }}")
    c("time-default-date-string", "{% if date_string is not defined %}{% set date_string = strftime_now('%d %B %Y') %}{% endif %}{{ date_string }}")
    c("time-date-string-given", "{% if date_string is not defined %}{% set date_string = strftime_now('%d %B %Y') %}{% endif %}{{ date_string }}",
      date_string="01 Jan 2000")

    # --- misc --------------------------------------------------------------------------------
    c("misc-raise-exception-untaken", "{% if false %}{{ raise_exception('never') }}{% endif %}ok")
    c("misc-unknown-filter-in-untaken-branch", "{% if false %}{{ x|no_such_filter }}{% endif %}ok")
    c("misc-int-filter-bad-is-not-error", "{{ 'x'|int + 1 }}")
    c("misc-undefined-in-for-is-empty", "{% for x in nope %}{{ x }}{% endfor %}ok")
    c("misc-undefined-compare", "{{ nope == none }} {{ nope == '' }}")
    c("misc-undefined-length-iter", "{{ nope|list }}")
    c("misc-bos-concat", "{{ bos_token + '[INST] ' + content|trim + ' [/INST]' }}",
      bos_token="<s>", content="  hi  ")
    c("misc-messages-slice-loop", "{% for m in msgs[1:] %}{{ m.role }};{% endfor %}", msgs=MSGS)
    c("misc-system-extraction",
      "{% if msgs[0].role == 'system' %}{% set sys = msgs[0].content %}{% set rest = msgs[1:] %}{% else %}{% set rest = msgs %}{% endif %}{{ sys }}|{{ rest|length }}",
      msgs=MSGS)
    c("misc-alternation-expression", "{% for m in msgs[1:] %}{{ (m.role == 'user') != (loop.index0 % 2 == 0) }}{% endfor %}",
      msgs=MSGS)
    c("misc-literal-braces-in-data", "{{ s }}", s="{{ x }} {% if %} {# c")
    c("misc-string-with-braces-literal", "{{ '{{ not parsed }}' }}")
    c("misc-subscript-of-int-is-undefined", "[{{ n[0] }}]", n=5)
    c("misc-tag-like-text", "a } b %} c #} d")
    c("misc-unicode-text", "héllo 世界 👋🏽 {{ s }}", s="مرحبا")

    # --- errors ------------------------------------------------------------------------------
    c("error-undefined-attr", "{{ nope.attr }}")
    c("error-undefined-subscript", "{{ nope['k'] }}")
    c("error-undefined-plus-int", "{{ nope + 1 }}")
    c("error-undefined-in-msgs-empty", "{{ msgs[0]['role'] }}", msgs=[])
    c("error-div-zero", "{{ 1 / 0 }}")
    c("error-floordiv-zero", "{{ 1 // 0 }}")
    c("error-mod-zero", "{{ 1 % 0 }}")
    c("error-raise-exception", "{{ raise_exception('Conversation roles must alternate: got user twice at 3') }}")
    c("error-raise-exception-in-loop", "{% for m in msgs %}{% if m.role == 'system' and not loop.first %}{{ raise_exception('System message at position ' ~ loop.index ~ ' is not allowed') }}{% endif %}{% endfor %}",
      msgs=[{"role": "user"}, {"role": "system"}])
    c("error-raise-exception-unicode", "{{ raise_exception('Rôle inconnu: ' ~ r) }}", r="叙述者")
    c("error-unknown-filter", "{{ 'x'|no_such_filter }}")
    c("error-unknown-test", "{{ 'x' is no_such_test }}")
    c("error-unclosed-expression", "{{ 'x' ")
    c("error-unclosed-block-tag", "{% if true ")
    c("error-endif-without-if", "{% endif %}")
    c("error-for-without-endfor", "{% for x in xs %}{{ x }}", xs=[1])
    c("error-if-without-endif", "{% if true %}x")
    c("error-unterminated-string", "{{ 'abc }}")
    c("error-unknown-tag", "{% frobnicate %}")
    c("error-unbalanced-parens", "{{ (1 + 2 }}")
    c("error-call-non-callable", "{{ s() }}", s="str")
    c("error-call-undefined", "{{ nope() }}")
    c("error-missing-string-method", "{{ s.no_such_method() }}", s="abc")
    c("error-include", "{% include 'other.jinja' %}")
    c("error-str-plus-int", "{{ 'a' + 1 }}")
    c("error-int-plus-none", "{{ 1 + none }}")
    c("error-compare-str-int", "{{ 'a' < 1 }}")
    c("error-list-append-sandbox", "{{ xs.append(1) }}", xs=[1])
    c("error-dict-update-sandbox", "{{ d.update({'a': 1}) }}", d={})
    c("error-macro-too-many-args", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}")
    c("error-macro-unknown-keyword", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=1) }}")
    c("error-tojson-undefined", "{{ nope|tojson }}")
    c("error-sort-mixed-types", "{{ [1, 'a']|sort }}")
    c("error-set-attr-non-namespace", "{% set d = {} %}{% set d.x = 1 %}")
    c("error-concat-binds-tighter-than-add", "{{ 1 + 2 ~ 3 }}")
    c("error-concat-then-add", "{{ 'a' ~ 1 + 2 }}")
    c("error-break-outside-loop", "{% break %}")
    c("error-else-after-else", "{% if x %}{% else %}{% else %}{% endif %}")
    c("error-filter-bad-round-method", "{{ 2.5|round(method='up') }}")
    c("error-undefined-iter-attr", "{% for x in nope.items() %}{% endfor %}")
    c("error-endgeneration-missing", "{% generation %}x")

    # --- found by review: generators, closures, Python's number and case rules ------------------
    c("gen-selectattr-truthy-when-empty",
      "{% if messages|selectattr('role', 'equalto', 'system') %}S{% else %}N{% endif %}", messages=MSGS[1:])
    c("gen-select-not-indexable", "{{ (xs|select('odd'))[0] }}|", xs=[1, 2, 3])
    c("gen-select-not-equal-to-list", "{{ xs|select('odd') == [1, 3] }}", xs=[1, 2, 3])
    c("gen-reverse-truthy", "{% if []|reverse %}T{% else %}F{% endif %}{{ [1, 2]|reverse|list }}")
    c("gen-first-in-join", "{{ xs|select('odd')|first }} {{ 3 in xs|select('odd') }} {{ xs|map('string')|join }}",
      xs=[1, 2, 3])
    c("gen-items-list", "{{ d|items|list }}", d={"b": 1, "a": 2})
    c("gen-unique-numbers-hash-equal", "{{ [1, 1.0, true, 2, '1', 'A', 'a']|unique|list }}")
    c("error-gen-length", "{{ xs|select('odd')|length }}", xs=[1, 2, 3])
    c("error-gen-last", "{{ xs|select('odd')|last }}", xs=[1, 2, 3])
    c("error-unique-unhashable", "{{ [[1], [1]]|unique|list }}")
    c("macro-closure-loop-variable", "{% for i in [1, 2] %}{% macro m() %}{{ i }}{% endmacro %}{{ m() }}{% endfor %}")
    c("macro-closure-outer-parameter",
      "{% macro o(a) %}{% macro i() %}[{{ a }}]{% endmacro %}{{ i() }}{% endmacro %}{{ o(1) }}")
    c("ws-endraw-lstrip", "{% raw %}\nabc\n    {% endraw %}\nz")
    c("ws-lstrip-unicode-space", "a\n\u00a0{# c #}b")
    c("ws-minus-strips-unicode-space", "x \u3000{%- if true %}y{% endif %}{% if true -%}\u00a0 z{% endif %}")
    c("for-else-scope", "{% for a in [] %}{% else %}{% set z = 3 %}{% endfor %}[{{ z }}]")
    c("filter-block-continue", "{% for i in [1, 2] %}{% filter upper %}xx{% continue %}{% endfilter %}{% endfor %}.")
    c("filter-int-python-rules",
      "{{ '0b11'|int(0, 2) }} {{ '0x1f'|int(0, 0) }} {{ '017'|int(0, 0) }} {{ '0o17'|int(0, 0) }} "
      "{{ '1__0'|int }} {{ '_10'|int }} {{ ' 1_0 '|int }} {{ 'nan'|int }} {{ '12abc'|int }} {{ none|int }} "
      "{{ '-0x10'|int(0, 16) }} {{ '1e3'|int }}")
    c("filter-float-python-rules",
      "{{ '0x10'|float }} {{ '1_000.5'|float }} {{ ' -2.5e1 '|float }} {{ 'Infinity'|float }} {{ '1._5'|float }}")
    c("error-int-undefined", "{{ nope|int }}")
    c("error-float-undefined", "{{ nope|float }}")
    c("error-int-infinity", "{{ 'inf'|int }}")
    c("filter-capitalize-full-case", "{{ 'ßa'|capitalize }} {{ 'ǆx'|capitalize }} {{ 'éCOLE'|capitalize }}")
    c("op-float-floordiv-python", "{{ 2.5 // 0.1 }} {{ -2.5 // 0.1 }} {{ 7.0 // -2 }} {{ 0.0 // -1 }}")
    c("test-upper-lower-need-cased", "{{ '' is upper }}{{ '' is lower }}{{ '1' is upper }}{{ 'A1' is upper }}{{ 'a1' is lower }}")
    c("time-strftime-zone-empty", "{{ strftime_now('%Z|%z|%%Z|%H') }}")
    c("attr-slice-huge-step", "{{ 'abc'[1::9223372036854775807] }}{{ [1, 2, 3][::-9223372036854775807] }}")
    c("range-huge-step", "{{ range(5, 10, 9223372036854775807)|list }}{{ range(10, 5, -9223372036854775807)|list }}")
    c("filter-map-huge-index-attribute", "{{ users|map(attribute='99999999999999999999')|list }}", users=USERS)
    c("gen-runs-once-loops", "{% set g = xs|select %}{% for x in g %}{{ x }}{% endfor %}|{% for x in g %}{{ x }}{% endfor %}",
      xs=[1, 2, 3])
    c("gen-runs-once-list", "{% set g = xs|select %}{{ g|list }}{{ g|list }}", xs=[1, 2, 3])
    c("gen-runs-once-in", "{% set g = xs|select %}{{ 2 in g }}{{ 1 in g }}{{ 3 in g }}", xs=[1, 2, 3])
    c("gen-runs-once-first", "{% set g = xs|select %}{{ g|first }}{{ g|first }}{{ g|list }}", xs=[1, 2, 3])
    c("error-gen-tojson", "{{ xs|select|tojson }}", xs=[1, 2])
    c("macro-closure-sees-later-set",
      "{% for i in xs %}{% set y = 4 %}{% macro m() %}{{ y }}{% endmacro %}{% set y = 5 %}{{ m() }}{% endfor %}", xs=[1])
    c("macro-recursive-in-loop",
      "{% for i in [1] %}{% macro f(n) %}{{ n }}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(2) }}{% endfor %}")
    c("namespace-holds-loop", "{% set ns = namespace() %}{% for i in [7, 8] %}{% set ns.l = loop %}{% endfor %}{{ ns.l.index }}")
    c("op-float-mod-zero-sign", "{{ -0.5 % 0.5 }} {{ 0.5 % -0.5 }} {{ 1.0 % 1 }}")
    return out


# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Part C: continue_final_message
# ---------------------------------------------------------------------------------------------

PARTIAL_ANSWERS = [
    "Sure, here is",
    "The answer is ",
    " leading space",
    "trailing newline\n",
    "\n\nblank lines around\n\n",
    "{\"name\": \"",
    "你好，",
    "x",
    "",
    "  ",
    "Step 1:\n- ",
]


def continue_final(rendered, final):
    """The prompt cut after the final message's content, or None when the template dropped it.

    Whitespace is Python's str.strip() set. When the template kept the content as it was (its
    start found by the stripped text and no leading whitespace to lose), the cut keeps the content's
    trailing whitespace; otherwise it ends at the stripped content.
    """
    stripped = final.strip()
    if stripped not in rendered:
        return None
    loc = rendered.rindex(stripped)
    if rendered[loc:loc + len(final.lstrip())] == final:
        return rendered[:loc + len(final.lstrip())]
    return rendered[:loc + len(stripped)]


def part_c_cases(env):
    cases = []
    for index, (file, bos, eos, allow_system) in enumerate(TEMPLATES):
        stem = file[:-len(".jinja")]
        if stem in ("tools", "generation", "llama31"):
            continue
        rng = random.Random(SEED * 1000 + index)
        source = (DATA / file).read_bytes().decode("utf-8")
        for i, answer in enumerate(PARTIAL_ANSWERS):
            roles = valid_roles(rng, allow_system)
            if not roles or roles[-1] != "user":
                roles.append("user" if not roles or roles[-1] != "user" else "assistant")
            if roles[-1] != "user":
                roles.append("user")
            messages = [{"role": r, "content": random_content(rng)} for r in roles]
            messages.append({"role": "assistant", "content": answer})
            context = OrderedDict(messages=messages, add_generation_prompt=False, bos_token=bos,
                                  eos_token=eos)
            kind, rendered = render(env, source, context)
            entry = {"name": f"continue-{stem}-{i:02d}", "template_file": file, "context": context}
            if kind != "output":
                entry["error"] = rendered[1]
            else:
                cut = continue_final(rendered, answer)
                if cut is None:
                    entry["error"] = "the final message's content does not appear in the rendered prompt"
                else:
                    entry["output"] = cut
            cases.append(entry)
    return cases


def group_of(case):
    if "template_file" in case:
        return "A:" + case["template_file"][:-len(".jinja")]
    return case["name"].split("-", 1)[0]


def main():
    env = make_env()
    cases = part_a_cases() + part_b_cases()
    names = Counter(c["name"] for c in cases)
    dupes = [n for n, k in names.items() if k > 1]
    if dupes:
        sys.exit(f"duplicate case names: {dupes}")

    done = []
    for case in cases:
        # The context as the C++ side will read it back.
        context = json.loads(json.dumps(case["context"], ensure_ascii=False))
        if "template_file" in case:
            source = (DATA / case["template_file"]).read_bytes().decode("utf-8")
        else:
            source = case["template"]
        kind, result = render(env, source, context)
        entry = {"name": case["name"]}
        if "template_file" in case:
            entry["template_file"] = case["template_file"]
        else:
            entry["template"] = source
        entry["context"] = context
        if kind == "output":
            entry["output"] = result
        else:
            entry["error"] = result[1]
            entry["error_type"] = result[0]
        done.append(entry)

    doc = {"generator": "scripts/make_chat_fixtures.py", "jinja2": jinja2.__version__,
           "strftime_now": FIXED_NOW.isoformat(), "cases": done}
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    OUT.write_text(text, encoding="utf-8")

    continued = part_c_cases(env)
    doc = {"generator": "scripts/make_chat_fixtures.py", "jinja2": jinja2.__version__,
           "rule": "transformers apply_chat_template(continue_final_message=True)", "cases": continued}
    CONTINUE_OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{CONTINUE_OUT.relative_to(REPO)}: {len(continued)} cases, "
          f"{sum(1 for c in continued if 'error' in c)} of them errors")

    # Summary.
    stats = OrderedDict()
    for entry in done:
        g = stats.setdefault(group_of(entry), Counter())
        g["cases"] += 1
        g["errors" if "error" in entry else "ok"] += 1
        if "error" in entry:
            g["error:" + entry["error_type"]] += 1
    print(f"{OUT.relative_to(REPO)}: {len(done)} cases, {len(text.encode('utf-8'))} bytes, "
          f"jinja2 {jinja2.__version__}")
    for group, g in stats.items():
        kinds = ", ".join(f"{k[6:]} {v}" for k, v in sorted(g.items()) if k.startswith("error:"))
        print(f"  {group:12s} {g['cases']:4d} cases  {g['ok']:4d} ok  {g['errors']:3d} errors"
              + (f"  ({kinds})" if kinds else ""))
    ok = sum(1 for e in done if "output" in e)
    print(f"  {'total':12s} {len(done):4d} cases  {ok:4d} ok  {len(done) - ok:3d} errors")


if __name__ == "__main__":
    main()
