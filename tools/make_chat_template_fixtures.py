#!/usr/bin/env python3
"""Builds the chat template fixtures in tests/fixtures/chat_templates/ with transformers.

The published chat templates of Qwen3, Qwen2.5-Instruct, Llama 3.1-8B-Instruct and
Llama 3.2-3B-Instruct are taken from the llama.cpp copy that the llama-cpp-python source
distribution on PyPI vendors (models/templates/*.jinja), pinned by version and checked by SHA-256.
For a set of conversations (with and without a system message, multi-turn, Qwen3 reasoning,
tool calls and tool results, add_generation_prompt on and off, enable_thinking=False, unicode,
empty content, templates that raise), cases.json records what transformers'
`apply_chat_template(tokenize=False)` renders, or the message of the error it raises, so the C++
tests compare FluxAttn's Jinja engine against transformers + jinja2 as an independent oracle.
`strftime_now` (Llama 3.2's date preamble) is rendered at a fixed time, recorded per case.

The script needs transformers and jinja2 (no torch); without them it makes a virtual environment
in build/chat-template-venv, installs them from PyPI and runs itself there.

Usage: tools/make_chat_template_fixtures.py [--out tests/fixtures/chat_templates]
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "build", "chat-template-venv")
REQUIREMENTS = ["transformers==5.24.0", "jinja2==3.1.6", "tokenizers"]
SDIST = "llama-cpp-python==0.3.36"
SDIST_DIR = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/"
# fixture name -> (file in llama.cpp's models/templates, SHA-256, bos_token, eos_token)
TEMPLATES = {
    "qwen3": ("Qwen-Qwen3-0.6B.jinja",
              "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5", None, "<|im_end|>"),
    "qwen2.5-instruct": ("Qwen-Qwen2.5-7B-Instruct.jinja",
                         "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f", None, "<|im_end|>"),
    "llama-3.1-instruct": ("meta-llama-Llama-3.1-8B-Instruct.jinja",
                           "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65", "<|begin_of_text|>", "<|eot_id|>"),
    "llama-3.2-instruct": ("meta-llama-Llama-3.2-3B-Instruct.jinja",
                           "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4", "<|begin_of_text|>", "<|eot_id|>"),
}
# The time strftime_now sees (the Llama 3.2 date preamble).
NOW = dt.datetime(2026, 3, 5, 14, 30, 0)


def ensure_libraries():
    try:
        import jinja2  # noqa: F401
        import transformers  # noqa: F401
        return
    except ImportError:
        pass
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit("make_chat_template_fixtures: transformers/jinja2 missing from " + VENV)
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           *REQUIREMENTS])
    os.execv(python, [python, *sys.argv])


def fetch_templates():
    """Returns {fixture name: template source} from the pinned llama-cpp-python sdist."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "-q",
                               "--disable-pip-version-check", SDIST, "--no-binary", ":all:",
                               "--no-deps", "-d", tmp])
        (archive,) = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
        out = {}
        with tarfile.open(os.path.join(tmp, archive)) as tar:
            for name, (file, sha, _, _) in TEMPLATES.items():
                data = tar.extractfile(SDIST_DIR + file).read()
                digest = hashlib.sha256(data).hexdigest()
                if digest != sha:
                    sys.exit(f"{file}: expected SHA-256 {sha}, found {digest}")
                out[name] = data.decode("utf-8")
        return out


def make_tokenizer(template, bos, eos):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                   chat_template=template)


def freeze_clock():
    import transformers.utils.chat_template_utils as ctu

    class Fixed(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return NOW

    ctu.datetime = Fixed


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city — in °C or °F",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {"name": "search", "description": "Searches the web",
                 "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}
UNICODE = "Grüße, 世界! 🚀 naïve — “quotes” \"dq\" back\\slash\ttab"
CALL = {"type": "function", "function": {"name": "get_weather",
                                         "arguments": {"city": "Zürich", "unit": "celsius"}}}
CALL_STR = {"type": "function", "function": {"name": "search",
                                             "arguments": "{\"q\": \"jinja \\\"subset\\\"\"}"}}


def conversations():
    """(name, messages, extra apply_chat_template arguments, families it is for)."""
    chat = ["qwen3", "qwen2.5-instruct", "llama-3.1-instruct", "llama-3.2-instruct"]
    qwen = ["qwen3", "qwen2.5-instruct"]
    llama = ["llama-3.1-instruct", "llama-3.2-instruct"]
    sys_msg = {"role": "system", "content": "You are a terse assistant."}
    u1 = {"role": "user", "content": "Hello!"}
    a1 = {"role": "assistant", "content": "Hi. What do you need?"}
    u2 = {"role": "user", "content": "Name a prime."}
    cases = [
        ("user_only", [u1], {"add_generation_prompt": True}, chat),
        ("system_user", [sys_msg, u1], {"add_generation_prompt": True}, chat),
        ("system_user_no_generation_prompt", [sys_msg, u1], {}, chat),
        ("multi_turn", [sys_msg, u1, a1, u2], {"add_generation_prompt": True}, chat),
        ("multi_turn_no_system", [u1, a1, u2], {"add_generation_prompt": True}, chat),
        ("ends_with_assistant", [u1, a1], {}, chat),
        ("unicode", [{"role": "system", "content": "\u00a0 Réponds en français.\u3000\n"},
                     {"role": "user", "content": UNICODE}],
         {"add_generation_prompt": True}, chat),
        ("empty_content", [{"role": "user", "content": ""}, {"role": "assistant", "content": ""},
                           {"role": "user", "content": ""}],
         {"add_generation_prompt": True}, chat),
        ("whitespace_content", [{"role": "user", "content": "\n\n  padded  \n"},
                                {"role": "assistant", "content": "\n answer \n\n"},
                                {"role": "user", "content": " again "}],
         {"add_generation_prompt": True}, chat),
        ("second_system_message", [sys_msg, u1, {"role": "system", "content": "Be brief."}, u2],
         {"add_generation_prompt": True}, qwen),
        # Qwen3 thinking.
        ("thinking_disabled", [u1], {"add_generation_prompt": True, "enable_thinking": False},
         ["qwen3"]),
        ("thinking_enabled_explicitly", [u1],
         {"add_generation_prompt": True, "enable_thinking": True}, ["qwen3"]),
        ("reasoning_content_last_turn",
         [u1, {"role": "assistant", "content": "\n\nHi!", "reasoning_content": "\nGreet back.\n"}],
         {}, ["qwen3"]),
        ("reasoning_content_history",
         [u1, {"role": "assistant", "content": "Hi!", "reasoning_content": "Greet back."}, u2],
         {"add_generation_prompt": True}, ["qwen3"]),
        ("think_tags_in_content",
         [u1, {"role": "assistant", "content": "<think>\nplan it\n</think>\n\nDone."}],
         {}, ["qwen3"]),
        ("reasoning_alias_field",
         [u1, {"role": "assistant", "content": "Hi!", "reasoning": "aliased"}], {}, ["qwen3"]),
        # Tools.
        ("tools_offered", [u1], {"add_generation_prompt": True,
                                 "tools": [WEATHER_TOOL, SEARCH_TOOL]}, chat),
        ("tools_offered_with_system", [sys_msg, u1],
         {"add_generation_prompt": True, "tools": [WEATHER_TOOL]}, chat),
        ("tool_call_and_results",
         [sys_msg, {"role": "user", "content": "Weather in Zürich?"},
          {"role": "assistant", "content": None, "tool_calls": [CALL]},
          {"role": "tool", "content": "{\"temp\": 21.5}"},
          {"role": "assistant", "content": "It is 21.5 °C."}],
         {"add_generation_prompt": False, "tools": [WEATHER_TOOL]}, chat),
        ("tool_call_empty_content_and_results",
         [sys_msg, {"role": "user", "content": "Weather in Zürich?"},
          {"role": "assistant", "content": "", "tool_calls": [CALL]},
          {"role": "tool", "content": "{\"temp\": 21.5}"},
          {"role": "assistant", "content": "It is 21.5 °C."}],
         {"add_generation_prompt": False, "tools": [WEATHER_TOOL]}, qwen),
        ("parallel_tool_calls",
         [{"role": "user", "content": "Weather and news?"},
          {"role": "assistant", "content": "Checking both.",
           "reasoning_content": "Two calls.", "tool_calls": [CALL, CALL_STR]},
          {"role": "tool", "content": "sunny"}, {"role": "tool", "content": "no news"}],
         {"add_generation_prompt": True, "tools": [WEATHER_TOOL, SEARCH_TOOL]}, qwen),
        ("tool_response_in_user_message",
         [{"role": "user", "content": "Look it up."},
          {"role": "assistant", "content": "", "tool_calls": [CALL_STR]},
          {"role": "user", "content": "<tool_response>\nresult\n</tool_response>"}],
         {"add_generation_prompt": True}, ["qwen3"]),
        ("tool_result_mapping",
         [{"role": "user", "content": "Weather?"},
          {"role": "assistant", "tool_calls": [CALL]},
          {"role": "tool", "content": {"temp": 21, "sky": "clear"}}],
         {"add_generation_prompt": True, "tools": [WEATHER_TOOL]}, llama),
        ("tools_in_system_message", [sys_msg, u1],
         {"add_generation_prompt": True, "tools": [WEATHER_TOOL],
          "tools_in_user_message": False}, llama),
        ("multiple_tool_calls_refused",
         [u1, {"role": "assistant", "tool_calls": [CALL, CALL]}], {}, llama),
        ("tools_without_user_message", [sys_msg],
         {"add_generation_prompt": True, "tools": [WEATHER_TOOL]}, llama),
        ("builtin_tools",
         [u1, {"role": "assistant",
               "tool_calls": [{"type": "function", "function": {
                   "name": "brave_search", "arguments": {"query": "jinja", "count": "3"}}}]},
          {"role": "ipython", "content": "results"}],
         {"add_generation_prompt": True,
          "builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]},
         ["llama-3.1-instruct"]),
        ("date_string_given", [u1], {"add_generation_prompt": True, "date_string": "01 Jan 2030"},
         llama),
    ]
    return cases


# Small templates for the engine's own tests: (name, template, variables), rendered by the
# jinja2 environment that transformers builds for chat templates.
ENGINE_CASES = [
    ("text_only", "plain text\n", {}),
    ("trailing_newline_dropped_once", "a\n\n", {}),
    ("crlf_newlines", "a\r\nb\rc{% if true %}\r\nd{% endif %}", {}),
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("trim_blocks_not_after_variables", "{{ 'x' }}\ny", {}),
    ("lstrip_blocks", "  {% if true %}\n  body\n  {% endif %}\nend", {}),
    ("lstrip_blocks_only_at_line_start", "x  {% if true %}y{% endif %}", {}),
    ("lstrip_blocks_after_trimmed_newline", "{% if true %}\n    {% if true %}z{% endif %}\n{% endif %}", {}),
    ("lstrip_comments", "a\n    {# note #}\nb", {}),
    ("plus_disables_lstrip", "a\n  {%+ if true %}b{% endif %}", {}),
    ("plus_disables_trim", "{% if true +%}\nb{% endif %}", {}),
    ("minus_strips_both_sides", "a  \n  {%- if true -%}  \n  b  {{- ' c ' -}}  \n  d{%- endif %}", {}),
    ("minus_strips_unicode_spaces", "a\u3000\u00a0{{- 'b' -}}\u2003c", {}),
    ("comment_with_minus", "a   {#- c -#}   b", {}),
    ("for_loop_variables",
     "{% for x in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}"
     "/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}:{{ x }}|{% endfor %}", {"items": ["a", "b", "c"]}),
    ("for_previtem_nextitem",
     "{% for x in items %}[{{ loop.previtem | default('^') }}<{{ x }}>{{ loop.nextitem | default('$') }}]{% endfor %}",
     {"items": [1, 2, 3]}),
    ("for_else", "{% for x in items %}{{ x }}{% else %}empty{% endfor %}", {"items": []}),
    ("for_if_filter", "{% for x in items if x is odd %}{{ loop.index }}:{{ x }} {% endfor %}",
     {"items": [1, 2, 3, 4, 5]}),
    ("for_unpack_items", "{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("for_over_dict_and_string", "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'héllo' %}{{ c }}.{% endfor %}",
     {"d": {"x": 1, "y": 2}}),
    ("nested_loops", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}{% endfor %}", {}),
    ("break_continue",
     "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("set_scoping",
     "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + 10 %}{{ x }} {% endfor %}{{ x }}", {}),
    ("set_in_if_is_visible", "{% if true %}{% set y = 'in' %}{% endif %}{{ y }}", {}),
    ("namespace",
     "{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("set_tuple", "{% set a, b = [1, 2] %}{{ b }}{{ a }}", {}),
    ("set_block", "{% set x %}inner {{ 1 + 1 }}{% endset %}[{{ x }}]", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C', punct='.') }}", {}),
    ("if_elif_else", "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %} {% endfor %}", {}),
    ("conditional_expression", "{{ 'y' if flag else 'n' }}{{ 'z' if not flag }}", {"flag": True}),
    ("and_or_return_operands", "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ none or [] }} {{ '' and 1 }}", {}),
    ("arithmetic",
     "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 1.5 + 1 }} {{ 10 / 5 }}", {}),
    ("precedence_filters_and_unary", "{{ -3 | abs }} {{ items | length - 1 }} {{ 'a' ~ 2 * 3 }} {{ 1 + 2 ~ 'b' if false else 'c' ~ 1 + 2 ~ 'd' if false else 'e' }} {{ not 1 == 2 }}", {"items": [1, 2, 3]}),
    ("comparisons", "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ [1, 2] == [1, 2] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ none == none }} {{ 'a' != 'a' }}", {}),
    ("in_operator", "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in d }} {{ 'z' not in d }} {{ 'x' in undefined_thing }}", {"d": {"k": 1}}),
    ("string_concat_and_tilde", "{{ 'a' + 'b' }} {{ 'n' ~ 1 ~ none ~ true ~ undefined_thing }}", {}),
    ("print_values", "{{ none }} {{ true }} {{ 1.0 }} {{ 1e20 }} {{ 0.0001 }} {{ 1e-05 }} {{ 123456789012345.6 }} {{ [1, 'a', none, {'k': 'v'}] }} {{ (1,) }} {{ ('a', 2) }} {{ undefined_thing }}", {}),
    ("print_string_repr", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'tab\t'] }}", {}),
    ("string_escapes", "{{ 'a\\tb\\nc\\\\d\\'e\\x41\\u00e9\\U0001F600\\q' }}|{{ \"dq\\\"\" }}", {}),
    ("print_unprintable_repr", "{{ [s] }} {{ s | tojson }} {{ s | tojson(ensure_ascii=true) }}",
     {"s": "\x7f\xa0\u2028\u200b\x01é\u3000 x"}),
    ("adjacent_string_literals", "{{ 'a' 'b' \"c\" }}", {}),
    ("string_methods",
     "{{ s.startswith('He') }} {{ s.endswith(('x', 'd!')) }} [{{ s.strip() }}] [{{ s.lstrip('H') }}] [{{ s.rstrip('!d') }}] {{ s.replace('l', 'L') }} {{ s.replace('l', '', 1) }} {{ s.upper() }} {{ s.lower() }} {{ s.find('o') }} {{ s.count('l') }}",
     {"s": "Hello World!"}),
    ("strip_unicode_whitespace", "[{{ s.strip() }}] [{{ s | trim }}] [{{ s.strip(' \u3000') }}]", {"s": "\u3000\u00a0 x y \n\u2028"}),
    ("split", "{{ s.split() }} {{ s.split(' ') }} {{ s.split(',', 1) }} {{ s.rsplit(',', 1) }} {{ 'a</think>b</think>c'.split('</think>')[-1] }} {{ s.split(maxsplit=1) }} {{ s.rsplit(None, 1) }} {{ s.rsplit(' ') }} {{ 'a--b--c'.rsplit('--', 1) }}",
     {"s": "  a,b  c,d "}),
    ("slicing", "{{ items[1:] }} {{ items[:-1] }} {{ items[::-1] }} {{ items[::2] }} {{ items[-2:] }} {{ s[1:3] }} {{ s[::-1] }} {{ items[5:] }} {{ items[-1] }} {{ s[-1] }}",
     {"items": [1, 2, 3, 4], "s": "añb😀"}),
    ("attribute_and_item_access", "{{ d.a }} {{ d['a'] }} {{ d.b.c }} {{ d['b']['c'] }} {{ items.0 }} {{ d.missing is defined }} {{ d.items() | list }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} {{ d.keys() | list }}",
     {"d": {"a": 1, "b": {"c": 2}}, "items": ["first"]}),
    ("dict_method_names_win", "{{ d.items is defined }} {{ d['items'] }}", {"d": {"items": "stored"}}),
    ("tests",
     "{{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 's' is string }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is integer }} {{ d is mapping }} {{ 's' is iterable }} {{ [] is sequence }} {{ d is sequence }} {{ false is false }} {{ 0 is false }} {{ true is true }} {{ 3 is odd }} {{ 4 is even }} {{ 2 is equalto 2 }} {{ 2 is eq(3) }} {{ 'ab' is lower }} {{ 1 is boolean }} {{ 9 is divisibleby 3 }} {{ 3 is in [1, 3] }} {{ x is not none }}",
     {"x": 1, "d": {}}),
    ("filters_basic",
     "[{{ '  x  ' | trim }}] {{ items | length }} {{ 'héllo' | length }} {{ d | length }} {{ 42 | string }} {{ 'ab' | upper }} {{ 'AB' | lower }} {{ items | first }} {{ items | last }} {{ items | join(', ') }} {{ items | join }} {{ items | reverse | list }} {{ 'abc' | reverse }} {{ 'hello world' | title }} {{ 'hello' | capitalize }}",
     {"items": [3, 1, 2], "d": {"a": 1}}),
    ("filter_default", "{{ x | default('d') }} {{ none | default('d') }} {{ '' | default('d', true) }} {{ 0 | d('z', boolean=true) }} {{ 'v' | default('d') }}", {}),
    ("filter_items_and_list", "{{ d | items | list }} {{ 'ab' | list }} {{ d | list }}", {"d": {"k": "v", "n": 1}}),
    ("filter_select_reject", "{{ items | select('odd') | list }} {{ items | reject('equalto', 2) | list }} {{ names | reject('equalto', 'b') | join(',') }} {{ items | select | list }}",
     {"items": [0, 1, 2, 3], "names": ["a", "b", "c"]}),
    ("filter_attr_filters",
     "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('|') }} {{ ms | rejectattr('role', 'equalto', 'user') | list | length }} {{ ms | map(attribute='role') | list }} {{ ms | selectattr('extra') | list | length }} {{ ms | map(attribute='extra', default='-') | join }} {{ ms | join(',', attribute='role') }}",
     {"ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "extra": 1}, {"role": "user", "content": "c"}]}),
    ("filter_map_filter", "{{ items | map('string') | join('-') }} {{ words | map('upper') | list }} {{ words | map('replace', 'a', 'o') | list }}", {"items": [1, 2], "words": ["ab", "ca"]}),
    ("filter_int_float_abs", "{{ '42' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 3 | float }} {{ -2 | abs }} {{ -2.5 | abs }}", {}),
    ("filter_replace", "{{ 'aaa' | replace('a', 'b') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'ab' | replace('', '-') }}", {}),
    ("tojson",
     "{{ v | tojson }}\n{{ v | tojson(indent=2) }}\n{{ v | tojson(separators=(',', ':')) }}\n{{ v | tojson(sort_keys=true) }}\n{{ v | tojson(ensure_ascii=true) }}\n{{ [] | tojson(indent=2) }} {{ {} | tojson }} {{ 'x' | tojson }} {{ none | tojson }}",
     {"v": {"z": [1, 2.5, True, None, "é\"\n\u0001😀"], "a": {"n": -0.0, "e": 1e-07, "big": 1e16, "int": 10000000000}}}),
    ("list_and_dict_literals", "{{ [1, [2, 3]] | length }} {{ {'a': 1, 'b': [2]} | tojson }} {{ ({'k': 'v'}).k }} {{ [] }} {{ {} }}", {}),
    ("range", "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }}", {}),
    ("dict_global", "{{ dict(a=1, b='x') | tojson }}", {}),
    ("strftime_now", "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %j') }}", {}),
    ("generation_block", "a{% generation %}b{% endgeneration %}c", {}),
    ("dict_views", "{{ d.items() }} {{ d.keys() }} {{ d.values() }} {{ d.keys() == ['a'] }} {{ d.items() | length }}",
     {"d": {"a": 1}}),
    ("generator_truthy", "{{ 'yes' if items | select('odd') else 'no' }} {{ (items | select('odd'))[0] is defined }} {{ items | map('string') | first }}",
     {"items": [2, 4]}),
    ("range_objects", "{{ range(3) | length }} {{ range(5)[1:3] | list }} {{ range(3)[1] }} {{ range(3) == [0, 1, 2] }} {{ 2 in range(3) }} {{ range(3) | reverse | list }}", {}),
    ("tuple_is_not_list", "{{ (1, 2) == [1, 2] }} {{ [1, 2] | reverse | first }} {{ 'abc' | reverse }}", {}),
    ("last_of_generator", "{{ [1, 2] | select | last }}", {}),
    ("length_of_generator", "{{ [1, 2] | select | length }}", {}),
    ("length_of_items", "{{ {'a': 1} | items | length }}", {}),
    ("list_plus_tuple", "{{ [1] + (2,) }}", {}),
    ("macro_sees_template_variables",
     "{% set g = 'G' %}{% macro m(x) %}{{ g }}{{ x }}{% set g = 'inner' %}{{ g }}{% endmacro %}{{ m(1) }}{{ g }}", {}),
    ("none_attribute", "[{{ n.attr }}] {{ n.attr is defined }} [{{ 'abc'[5] }}]", {"n": None}),
    ("more_numbers", "{{ -1 ** 2 }} {{ 2 ** -1 }} {{ 10 // 3.0 }} {{ -7.5 % 2 }} {{ 1 / 3 }} {{ 0.1 + 0.2 }} {{ 123456789.0 }} {{ '-' * 3 }} {{ none | string }} {{ '' ~ [1] }}", {}),
    ("lstrip_unicode_indent", "a\n\u3000 {% if true %}x{% endif %}", {}),
    ("raise_exception", "{% if x %}{{ raise_exception('Bad: ' ~ x) }}{% endif %}", {"x": "input"}),
    ("undefined_attribute_of_undefined", "{{ missing.attr }}", {}),
    ("undefined_in_arithmetic", "{{ 'a' + missing }}", {}),
    ("string_plus_number", "{{ 'a' + 1 }}", {}),
    ("tojson_of_undefined", "{{ missing | tojson }}", {}),
    ("iterate_none", "{% for x in none %}{% endfor %}", {}),
    ("call_undefined", "{{ missing() }}", {}),
    ("namespace_attr_on_dict", "{% set d = {} %}{% set d.x = 1 %}", {}),
    ("loop_variable_before_set_in_body",
     "{% set x = 'outer' %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }} {% endfor %}{{ x }}", {}),
]


def engine_cases():
    import jinja2
    import transformers.utils.chat_template_utils as ctu
    out = []
    for name, source, variables in ENGINE_CASES:
        entry = {"name": name, "template": source, "variables": variables, "now": NOW.isoformat()}
        try:
            entry["expected"] = ctu._compile_jinja_template(source).render(**variables)
        except jinja2.exceptions.TemplateError as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        except (TypeError, ValueError, ZeroDivisionError) as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        out.append(entry)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "chat_templates"))
    args = parser.parse_args()
    ensure_libraries()
    import jinja2
    import transformers
    freeze_clock()
    templates = fetch_templates()
    os.makedirs(args.out, exist_ok=True)
    cases = []
    for name, source in templates.items():
        with open(os.path.join(args.out, name + ".jinja"), "w", encoding="utf-8") as f:
            f.write(source)
        _, _, bos, eos = TEMPLATES[name]
        tok = make_tokenizer(source, bos, eos)
        for case, messages, extra, families in conversations():
            if name not in families:
                continue
            extra = dict(extra)
            entry = {"template": name + ".jinja", "name": case, "messages": messages,
                     "bos_token": bos, "eos_token": eos,
                     "add_generation_prompt": extra.pop("add_generation_prompt", False)}
            if "tools" in extra:
                entry["tools"] = extra.pop("tools")
            entry["kwargs"] = extra
            entry["now"] = NOW.isoformat()
            try:
                entry["expected"] = tok.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=entry["add_generation_prompt"],
                    tools=entry.get("tools"), **extra)
            except jinja2.exceptions.TemplateError as e:
                entry["error"] = str(e)
            cases.append(entry)
    doc = {"generator": "tools/make_chat_template_fixtures.py",
           "transformers": transformers.__version__, "jinja2": jinja2.__version__,
           "templates_from": SDIST + " vendor/llama.cpp/models/templates",
           "cases": cases}
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    engine = engine_cases()
    with open(os.path.join(args.out, "engine_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "tools/make_chat_template_fixtures.py",
                   "jinja2": jinja2.__version__, "cases": engine}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases for {len(templates)} templates and {len(engine)} engine cases "
          f"to {args.out}")


if __name__ == "__main__":
    main()
