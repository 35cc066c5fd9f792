#!/usr/bin/env python3
"""`fluxattn tokenize` end to end: ids equal the fixtures, decode, JSON, exit codes 1 and 2.

Usage: cli_test.py <fluxattn binary> <tests/fixtures/tokenizer>
"""
import json
import os
import subprocess
import sys


def run(binary, *args):
    proc = subprocess.run([binary, "tokenize", *args], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def main():
    binary, fixtures = sys.argv[1], sys.argv[2]
    failures = []

    def check(condition, what):
        if not condition:
            failures.append(what)

    for name in ("llama3", "qwen2"):
        model = os.path.join(fixtures, name)
        with open(os.path.join(model, "cases.json"), encoding="utf-8") as f:
            cases = json.load(f)["tricky"]
        for case in cases[:12]:
            if not case["text"] or "\r" in case["text"]:
                continue  # arguments cannot be empty-checked or carry CR portably
            code, out, err = run(binary, "--model", model, "--text", case["text"], "--json")
            if code == 1 and "normalization" in err:
                break  # built without Unicode normalization: qwen2 cannot load
            check(code == 0, f"{name}: encode exit {code}: {err}")
            if code == 0:
                got = json.loads(out)
                check(got["ids"] == case["ids_with_special_tokens"],
                      f"{name}: ids of {case['text']!r}: {got['ids']}")
                check(len(got["tokens"]) == len(got["ids"]), f"{name}: tokens/ids length")
            ids = ",".join(str(i) for i in case["ids"])
            if ids:
                code, out, err = run(binary, "--model", model, "--decode", ids)
                check(code == 0 and out == case["decoded"] + "\n",
                      f"{name}: decode of {ids}: exit {code}, {out!r}")

    llama = os.path.join(fixtures, "llama3")
    code, out, err = run(binary, "--model", llama, "--decode", "1,99999")
    check(code == 1 and "99999" in err and "vocab_size" in err and err.count("\n") == 1,
          f"unknown id: exit {code}, {err!r}")
    code, out, err = run(binary, "--model", llama, "--decode", "1,two")
    check(code == 2 and "two" in err, f"bad id list: exit {code}, {err!r}")
    code, out, err = run(binary, "--model", llama)
    check(code == 2, f"neither --text nor --decode: exit {code}")
    code, out, err = run(binary, "--model", llama, "--text", "a", "--decode", "1")
    check(code == 2, f"both --text and --decode: exit {code}")
    code, out, err = run(binary, "--model", "/nonexistent/model", "--text", "a")
    check(code == 1 and "/nonexistent/model/tokenizer.json" in err, f"missing model: {err!r}")

    for failure in failures:
        print("FAIL:", failure)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
