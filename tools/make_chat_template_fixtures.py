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
    print(f"wrote {len(cases)} cases for {len(templates)} templates to {args.out}")


if __name__ == "__main__":
    main()
