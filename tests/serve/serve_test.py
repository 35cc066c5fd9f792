"""Tests of `fluxattn serve` with the official `openai` client, against a server started here on a
free loopback port with the demo model. The demo model has random weights: the tests compare the
server with itself (streamed == whole, batched == alone, same seed == same text) and with what
the configuration implies (routing), never with fixed text.

    serve_test.py --binary build/bin/fluxattn --config tests/serve/serve.toml --suite client
Suites: client, concurrency, malformed, limits, template (the demo model with Qwen3's chat
template: chat prompts against transformers' renderings in tests/fixtures/chat_templates/).
"""

import argparse
import asyncio
import http.client
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import openai

MODEL = "flux-tiny"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEMO = os.path.join(ROOT, "models", "demo", "flux-tiny")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "chat_templates")
# The served checkpoint's shape, read from its config.json rather than assumed.
_CONFIG = json.load(open(os.path.join(DEMO, "config.json")))
VOCAB = _CONFIG["vocab_size"]
LAYERS = _CONFIG["num_hidden_layers"]
CONTEXT = _CONFIG["max_position_embeddings"]


class Server:
    def __init__(self, binary, config, extra=()):
        self.binary = binary
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", config, "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        self.auth = {}
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://([\d.]+):(\d+)", line)
        if not m:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"server did not start: {line!r} {err}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.base = f"http://{self.host}:{self.port}"
        self.stderr_lines = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def client(self, **kw):
        kw.setdefault("api_key", "unused")
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 120)
        return openai.OpenAI(base_url=self.base + "/v1", **kw)

    def async_client(self, **kw):
        kw.setdefault("api_key", "unused")
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 300)
        return openai.AsyncOpenAI(base_url=self.base + "/v1", **kw)

    def raw(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def metrics(self):
        status, data = self.raw("GET", "/metrics", headers=self.auth)
        assert status == 200, status
        out = {}
        for line in data.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        return out

    def wait_idle(self, timeout=30):
        """Waits until nothing runs and the KV pool is empty; returns the metrics."""
        end = time.time() + timeout
        while True:
            m = self.metrics()
            if (m["fluxattn_running_requests"] == 0 and m["fluxattn_queue_depth"] == 0
                    and m["fluxattn_kv_pages_used"] == 0):
                return m
            if time.time() > end:
                raise AssertionError(f"server not idle: running {m['fluxattn_running_requests']}, "
                                     f"queued {m['fluxattn_queue_depth']}, kv pages "
                                     f"{m['fluxattn_kv_pages_used']}")
            time.sleep(0.05)

    def alive(self):
        assert self.proc.poll() is None, "the server exited"
        status, data = self.raw("GET", "/health")
        assert status == 200 and json.loads(data)["status"] == "ok", (status, data)

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the server did not stop on SIGTERM")
        assert rc == 0, f"server exit status {rc}"


def random_ids(rng, n):
    return [rng.randrange(VOCAB - 1) for _ in range(n)]


def extra(**kw):
    return {"extra_body": {k: v for k, v in kw.items() if v is not None}}


def stream_completion(client, **kw):
    """Returns (text, finish_reason, usage, routing, chunks) of a streamed completion."""
    text, finish, usage, routing, chunks = "", None, None, None, []
    for chunk in client.completions.create(stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.text
            chunks.append(c.text)
            if c.finish_reason is not None:
                finish = c.finish_reason
                routing = chunk.model_extra.get("fluxattn")
    return text, finish, usage, routing, chunks


def stream_chat(client, **kw):
    text, finish, usage, routing, roles = "", None, None, None, []
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            text += c.delta.content or ""
            if c.finish_reason is not None:
                finish = c.finish_reason
                routing = chunk.model_extra.get("fluxattn")
    return text, finish, usage, routing, roles


# ----------------------------------------------------------------------------- client suite

def test_models(s):
    models = s.client().models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL], ids
    policies = models.data[0].model_extra["routing_policies"]
    assert set(policies) == {"all_full", "all_sparse", "flux", "random_half"}, policies


def test_completion_usage_and_stream(s):
    c = s.client()
    rng = random.Random(11)
    ids = random_ids(rng, 37)
    r = c.completions.create(model=MODEL, prompt=ids, max_tokens=12, temperature=0,
                             **extra(ignore_eos=True))
    assert r.object == "text_completion"
    assert r.usage.prompt_tokens == 37 and r.usage.completion_tokens == 12, r.usage
    assert r.usage.total_tokens == 49
    assert r.choices[0].finish_reason == "length"
    text, finish, usage, routing, _ = stream_completion(
        c, model=MODEL, prompt=ids, max_tokens=12, temperature=0,
        stream_options={"include_usage": True}, **extra(ignore_eos=True))
    assert text == r.choices[0].text, (text, r.choices[0].text)
    assert finish == "length"
    assert usage is not None and usage.prompt_tokens == 37 and usage.completion_tokens == 12
    assert routing["routing"] == r.model_extra["fluxattn"]["routing"]
    # Without include_usage no usage chunk comes.
    _, _, usage, _, _ = stream_completion(c, model=MODEL, prompt=ids, max_tokens=3, temperature=0)
    assert usage is None
    # A text prompt: a string and the same string in a one-element array agree.
    a = c.completions.create(model=MODEL, prompt="Hello, world", max_tokens=5, temperature=0)
    b = c.completions.create(model=MODEL, prompt=["Hello, world"], max_tokens=5, temperature=0)
    assert a.choices[0].text == b.choices[0].text and a.usage == b.usage
    assert a.usage.prompt_tokens > 0 and 1 <= a.usage.completion_tokens <= 5
    # max_tokens = 0: nothing generated.
    z = c.completions.create(model=MODEL, prompt=ids, max_tokens=0)
    assert z.choices[0].text == "" and z.usage.completion_tokens == 0
    assert z.choices[0].finish_reason == "length"


def test_chat(s):
    c = s.client()
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say something about attention."}]
    r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0,
                                  **extra(ignore_eos=True))
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 10
    text, finish, usage, routing, roles = stream_chat(
        c, model=MODEL, messages=messages, max_tokens=10, temperature=0,
        stream_options={"include_usage": True}, **extra(ignore_eos=True))
    assert roles == ["assistant"], roles
    assert text == r.choices[0].message.content
    assert finish == r.choices[0].finish_reason
    assert usage.prompt_tokens == r.usage.prompt_tokens
    assert usage.completion_tokens == r.usage.completion_tokens
    # A longer conversation has a longer prompt; content given as text parts is the same text.
    parts = [{"role": "system", "content": [{"type": "text", "text": "You are "},
                                            {"type": "text", "text": "terse."}]},
             messages[1]]
    p = c.chat.completions.create(model=MODEL, messages=parts, max_tokens=10, temperature=0,
                                  **extra(ignore_eos=True))
    assert p.choices[0].message.content == r.choices[0].message.content
    assert p.usage.prompt_tokens == r.usage.prompt_tokens
    longer = messages + [{"role": "assistant", "content": "Fine."},
                         {"role": "user", "content": "More."}]
    q = c.chat.completions.create(model=MODEL, messages=longer, max_tokens=1)
    assert q.usage.prompt_tokens > r.usage.prompt_tokens


def test_seeds(s):
    c = s.client()
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=16, temperature=1.0,
              **extra(ignore_eos=True))
    a = c.completions.create(seed=42, **kw).choices[0].text
    b = c.completions.create(seed=42, **kw).choices[0].text
    assert a == b, (a, b)
    streamed, _, _, _, _ = stream_completion(c, seed=42, **kw)
    assert streamed == a
    others = [c.completions.create(seed=sd, **kw).choices[0].text for sd in (1, 2, 3)]
    assert any(o != a for o in others), "different seeds gave the same sampled text"
    g1 = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16,
                              temperature=0, seed=1).choices[0].text
    g2 = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16,
                              temperature=0, seed=2).choices[0].text
    assert g1 == g2, "greedy decoding depends on the seed"
    # top_k = 1 is greedy whatever the temperature.
    k1 = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16,
                              temperature=1.5, seed=5, **extra(top_k=1)).choices[0].text
    assert k1 == g1


def test_stop_strings(s):
    c = s.client()
    rng = random.Random(5)
    checked = 0
    for attempt in range(20):
        ids = random_ids(rng, 20)
        base = dict(model=MODEL, prompt=ids, max_tokens=24, temperature=0)
        full = c.completions.create(**base, **extra(ignore_eos=True))
        text = full.choices[0].text
        _, _, _, _, chunks = stream_completion(c, **base, **extra(ignore_eos=True))
        # A stop string across the boundary of two tokens' texts.
        spans = []
        pos = 0
        for i in range(len(chunks) - 1):
            pos += len(chunks[i])
            if chunks[i] and chunks[i + 1] and pos >= 2:
                spans.append(text[pos - 2:pos + 1])
        if not spans:
            continue
        stop = spans[len(spans) // 2]
        expected = text[:text.find(stop)]
        r = c.completions.create(**base, stop=[stop, "\u0000never"], **extra(ignore_eos=True))
        assert r.choices[0].text == expected, (stop, r.choices[0].text, expected)
        assert r.choices[0].finish_reason == "stop"
        assert 1 <= r.usage.completion_tokens < 24
        st, finish, usage, _, _ = stream_completion(c, **base, stop=stop,
                                                    stream_options={"include_usage": True},
                                                    **extra(ignore_eos=True))
        assert st == expected and finish == "stop", (st, expected)
        assert usage.completion_tokens == r.usage.completion_tokens
        checked += 1
        if checked == 3:
            break
    assert checked == 3, f"only {checked} prompts gave text to cut"
    # A stop string that never occurs changes nothing.
    r = c.completions.create(model=MODEL, prompt=ids, max_tokens=24, temperature=0,
                             stop="\u0001\u0002", **extra(ignore_eos=True))
    assert r.choices[0].finish_reason == "length"


def test_routing(s):
    c = s.client()
    rng = random.Random(8)
    ids = random_ids(rng, 120)  # longer than the streaming backend's 16 sinks + 32 window
    seen = {}
    for policy in (None, "all_full", "all_sparse", "flux", "random_half"):
        r = c.completions.create(model=MODEL, prompt=ids, max_tokens=4, temperature=0,
                                 **extra(routing=policy))
        fa = r.model_extra["fluxattn"]
        assert fa["routing"] == (policy or "router"), fa
        backends = [L["backend"] for L in fa["layers"]]
        assert len(backends) == LAYERS, fa
        assert abs(fa["sa_ratio"] - sum(b != "full" for b in backends) / LAYERS) < 1e-9, fa
        seen[policy] = (backends, fa["sa_ratio"])
        _, _, _, srouting, _ = stream_completion(c, model=MODEL, prompt=ids, max_tokens=4,
                                                 temperature=0, **extra(routing=policy))
        assert srouting["routing"] == fa["routing"]
        if policy != "random_half":  # its draws depend on the request id
            assert [L["backend"] for L in srouting["layers"]] == backends, (policy, srouting)
    assert seen[None] == (["full", "sparse"] * (LAYERS // 2), 0.5), seen[None]
    assert seen["all_full"] == (["full"] * LAYERS, 0.0), seen["all_full"]
    assert seen["all_sparse"] == (["sparse"] * LAYERS, 1.0), seen["all_sparse"]
    try:
        c.completions.create(model=MODEL, prompt=ids, max_tokens=4, **extra(routing="nope"))
        raise AssertionError("unknown routing accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "routing" and "all_full" in e.body["message"], e.body
    m = s.wait_idle()
    assert m['fluxattn_routing_requests_total{policy="all_sparse"}'] >= 2
    assert m['fluxattn_routing_sa_ratio_sum{policy="all_sparse"}'] == \
        m['fluxattn_routing_requests_total{policy="all_sparse"}']
    assert m['fluxattn_routing_sa_ratio_sum{policy="all_full"}'] == 0


def test_metrics_counts(s):
    m0 = s.wait_idle()
    c = s.client()
    ids = random_ids(random.Random(3), 9)
    c.completions.create(model=MODEL, prompt=ids, max_tokens=7, temperature=0,
                         **extra(ignore_eos=True))
    m1 = s.wait_idle()
    assert m1["fluxattn_prompt_tokens_total"] - m0["fluxattn_prompt_tokens_total"] == 9
    assert m1["fluxattn_completion_tokens_total"] - m0["fluxattn_completion_tokens_total"] == 7
    key = 'fluxattn_requests_total{path="/v1/completions",status="200"}'
    # The server counts a request once its answer has been written, which may be just after the
    # client has read it.
    end = time.time() + 5
    while m1.get(key, 0) - m0.get(key, 0) < 1 and time.time() < end:
        time.sleep(0.02)
        m1 = s.wait_idle()
    assert m1[key] - m0.get(key, 0) == 1
    assert m1["fluxattn_time_to_first_token_seconds_count"] > m0.get(
        "fluxattn_time_to_first_token_seconds_count", 0)
    assert m1["fluxattn_kv_pages_total"] > 0


def test_disconnect(s):
    """A streaming client that goes away is cancelled and its KV pages come back."""
    m0 = s.wait_idle()
    conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
    body = {"model": MODEL, "prompt": random_ids(random.Random(1), 50), "max_tokens": 1900,
            "stream": True, "ignore_eos": True}
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    got = r.read(6)
    assert got == b"data: ", got
    assert s.metrics()["fluxattn_kv_pages_used"] > 0
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    m = s.wait_idle()
    key = 'fluxattn_finished_total{reason="disconnected"}'
    assert m.get(key, 0) - m0.get(key, 0) == 1, m.get(key)
    assert m["fluxattn_completion_tokens_total"] - m0["fluxattn_completion_tokens_total"] < 1900


def test_logprobs(s):
    """Log probabilities (checked against a double log-softmax in the engine's own tests):
    shapes, the greedy token is the most likely one, the alternatives are a distribution's
    part, asking changes no token, streamed == whole; chat's form too."""
    c = s.client()
    ids = random_ids(random.Random(12), 21)
    kw = dict(model=MODEL, prompt=ids, max_tokens=8, temperature=0, **extra(ignore_eos=True))
    plain = c.completions.create(**kw)
    r = c.completions.create(logprobs=3, **kw)
    assert r.choices[0].text == plain.choices[0].text
    assert plain.choices[0].logprobs is None
    lp = r.choices[0].logprobs
    n = r.usage.completion_tokens
    assert n == 8 and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    for tok, l, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert l <= 0 and 1 <= len(top) <= 3, (tok, l, top)
        assert abs(max(top.values()) - l) < 1e-5, (tok, l, top)
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-5
    joined = "".join(lp.tokens)
    if "\ufffd" not in joined:
        assert joined == r.choices[0].text, (joined, r.choices[0].text)
    streamed = []
    for chunk in c.completions.create(stream=True, logprobs=3, **kw):
        for ch in chunk.choices:
            if ch.logprobs is not None:
                streamed += ch.logprobs.token_logprobs
    assert len(streamed) == n and all(abs(a - b) < 1e-6 for a, b in zip(streamed, lp.token_logprobs))
    zero = c.completions.create(logprobs=0, **kw).choices[0].logprobs
    assert len(zero.token_logprobs) == n and all(t == {} for t in zero.top_logprobs)
    messages = [{"role": "user", "content": "Say something about attention."}]
    rc = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0,
                                   logprobs=True, top_logprobs=2, **extra(ignore_eos=True))
    content = rc.choices[0].logprobs.content
    assert len(content) == rc.usage.completion_tokens
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 2
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob
        assert abs(e.top_logprobs[0].logprob - e.logprob) < 1e-5
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token or "\ufffd" in e.token


def expected_answer(output):
    """The eval's exact-match rule, written again: the first non-empty line, whitespace
    collapsed, one trailing period dropped."""
    for line in output.split("\n"):
        line = " ".join(line.split())
        if line:
            return line[:-1] if line.endswith(".") else line
    return ""


def run_compare(s, policies, out):
    r = subprocess.run([s.binary, "compare", "--server", s.base, "--model", DEMO, "--routing",
                        ",".join(policies), "--tasks", "passkey,kv_retrieval,lm_ppl", "--lengths",
                        "256", "--samples", "2", "--concurrency", "6", "--json", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "all_sparse" in r.stdout and "accuracy" in r.stdout, r.stdout
    report = json.load(open(out))
    assert [p["policy"] for p in report["policies"]] == policies
    return report


def test_compare_server(s):
    """`fluxattn compare --server`: policies A/B-compared on the live server; scores recomputed
    here from the outputs, SA ratios against what the static policies imply."""
    policies = ["default", "all_full", "all_sparse", "random_half"]
    with tempfile.TemporaryDirectory(prefix="fluxattn_cmp_") as tmp:
        report = run_compare(s, policies, os.path.join(tmp, "compare.json"))
        # The same samples through `fluxattn eval` on a local all-full engine.
        config = os.path.join(tmp, "full.toml")
        with open(config, "w") as f:
            f.write(f'[model]\npath = "{os.path.abspath(DEMO)}"\nthreads = 1\n\n'
                    '[backends.full]\nplugin = "full"\n')
        local = os.path.join(tmp, "eval.json")
        e = subprocess.run([s.binary, "eval", "--config", config, "--tasks", "passkey,kv_retrieval",
                            "--lengths", "256", "--samples", "2", "--details", "--json", local],
                           capture_output=True, text=True, timeout=300)
        assert e.returncode == 0, e.stderr
        local_results = json.load(open(local))["results"]
    remote = {(smp["task"], smp["seed"]): smp for smp in report["policies"][1]["samples"]}
    for res in local_results:
        for d in res["details"]:
            smp = remote[(res["task"], d["seed"])]
            assert smp["prompt_tokens"] == d["prompt_tokens"], (smp, d)
            assert expected_answer(smp["output"]) == expected_answer(d["output"]), (smp, d)
            assert smp["correct"] == d["correct"]
    want_sa = {"default": 0.5, "all_full": 0.0, "all_sparse": 1.0}
    for p in report["policies"]:
        assert p["requests"] == 4 and len(p["samples"]) == 4, p["policy"]  # lm_ppl is skipped
        correct = 0
        for smp in p["samples"]:
            ok = expected_answer(smp["output"]) == " ".join(smp["expected"].split())
            assert smp["correct"] == ok, smp
            correct += ok
            if p["policy"] in want_sa:
                assert smp["sa_ratio"] == want_sa[p["policy"]], (p["policy"], smp)
        assert abs(p["accuracy"] - correct / 4) < 1e-12
        assert 0 < p["latency_p50_s"] <= p["latency_p90_s"]
    bad = subprocess.run([s.binary, "compare", "--server", s.base, "--model", DEMO, "--routing",
                          "nope", "--tasks", "passkey", "--lengths", "256", "--samples", "1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "nope" in bad.stderr, bad.stderr


def suite_client(s):
    for t in (test_models, test_completion_usage_and_stream, test_chat, test_seeds,
              test_stop_strings, test_routing, test_metrics_counts, test_disconnect,
              test_logprobs, test_compare_server):
        run(t, s)


# --------------------------------------------------------------------------- template suite

def template_checkpoint(tmp):
    """The demo checkpoint with Qwen3's published chat template as chat_template.jinja."""
    d = os.path.join(tmp, MODEL)
    os.makedirs(d)
    for name in os.listdir(DEMO):
        src = os.path.abspath(os.path.join(DEMO, name))
        if name.endswith(".safetensors"):
            os.symlink(src, os.path.join(d, name))
        else:
            shutil.copy(src, d)
    shutil.copy(os.path.join(FIXTURES, "qwen3.jinja"), os.path.join(d, "chat_template.jinja"))
    return d


def suite_template(s):
    assert s.client().models.list().data[0].model_extra["chat_format"] == "jinja"
    c = s.client()
    cases = json.load(open(os.path.join(FIXTURES, "cases.json")))["cases"]
    checked = 0
    for case in cases:
        if (case["template"] != "qwen3.jinja" or "error" in case or case.get("tools")
                or not case["add_generation_prompt"]
                or any(m["role"] == "tool" or "tool_calls" in m for m in case["messages"])):
            continue
        # Greedy continuations of the chat and of transformers' text as a plain prompt agree
        # token for token only if the server built the same prompt.
        chat = c.chat.completions.create(
            model=MODEL, messages=case["messages"], max_tokens=4, temperature=0,
            **extra(ignore_eos=True, chat_template_kwargs=case["kwargs"]))
        plain = c.completions.create(model=MODEL, prompt=case["expected"], max_tokens=4,
                                     temperature=0, **extra(ignore_eos=True))
        assert chat.usage.prompt_tokens == plain.usage.prompt_tokens, (case["name"], chat.usage,
                                                                       plain.usage)
        assert chat.choices[0].message.content == plain.choices[0].text, case["name"]
        checked += 1
    assert checked >= 8, checked
    # A template error (Qwen3 concatenates an assistant turn's missing content) is a 400 naming
    # the template.
    body = {"model": MODEL, "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None},
                         {"role": "user", "content": "again"}]}
    err = expect_error(s, 400, "POST", "/v1/chat/completions", body, "messages")
    assert "chat_template.jinja:" in err["message"] and "undefined" in err["message"], err


# ------------------------------------------------------------------------ concurrency suite

def suite_concurrency(s):
    rng = random.Random(2024)
    policies = [None, "all_full", "all_sparse", "flux"]
    jobs = []
    for i in range(64):
        policy = policies[i % 4]
        kind = "chat" if i % 5 == 0 else "completion"
        n = rng.choice([3, 17, 64, 65, 130, 250])
        if kind == "chat":
            words = " ".join(rng.choice(["flux", "attention", "layer", "route", "token"])
                             for _ in range(n // 4 + 1))
            req = dict(model=MODEL, messages=[{"role": "user", "content": words}],
                       max_tokens=rng.randint(4, 24), temperature=0)
        else:
            req = dict(model=MODEL, prompt=random_ids(rng, n), max_tokens=rng.randint(4, 24),
                       temperature=0)
        req["extra_body"] = {"ignore_eos": i % 2 == 0}
        if policy:
            req["extra_body"]["routing"] = policy
        jobs.append((kind, req))

    c = s.client()
    alone = []
    for kind, req in jobs:
        if kind == "chat":
            r = c.chat.completions.create(**req)
            alone.append((r.choices[0].message.content, r.choices[0].finish_reason,
                          r.usage.completion_tokens, r.model_extra["fluxattn"]["layers"]))
        else:
            r = c.completions.create(**req)
            alone.append((r.choices[0].text, r.choices[0].finish_reason,
                          r.usage.completion_tokens, r.model_extra["fluxattn"]["layers"]))
    m0 = s.wait_idle()

    async def one(ac, kind, req, start):
        await start.wait()
        text, finish, usage, routing = "", None, None, None
        kw = dict(req, stream=True, stream_options={"include_usage": True})
        if kind == "chat":
            stream = await ac.chat.completions.create(**kw)
        else:
            stream = await ac.completions.create(**kw)
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for ch in chunk.choices:
                text += (ch.delta.content or "") if kind == "chat" else ch.text
                if ch.finish_reason is not None:
                    finish = ch.finish_reason
                    routing = chunk.model_extra["fluxattn"]
        return text, finish, usage.completion_tokens, routing["layers"]

    async def all_at_once():
        ac = s.async_client(http_client=openai.DefaultAsyncHttpxClient(
            limits=__import__("httpx").Limits(max_connections=100)))
        start = asyncio.Event()
        tasks = [asyncio.create_task(one(ac, k, r, start)) for k, r in jobs]
        await asyncio.sleep(0.2)
        start.set()
        out = await asyncio.gather(*tasks)
        await ac.close()
        return out

    t0 = time.time()
    batched = asyncio.run(all_at_once())
    elapsed = time.time() - t0
    mismatches = [i for i in range(64) if batched[i] != alone[i]]
    assert not mismatches, [(i, jobs[i][1].get("extra_body"), alone[i][:3], batched[i][:3])
                            for i in mismatches[:5]]
    m = s.wait_idle()
    steps = m["fluxattn_steps_total"] - m0["fluxattn_steps_total"]
    batch_obs = m["fluxattn_batch_size_count"] - m0["fluxattn_batch_size_count"]
    batch_sum = m["fluxattn_batch_size_sum"] - m0["fluxattn_batch_size_sum"]
    mean_batch = batch_sum / max(batch_obs, 1)
    print(f"  64 concurrent streams in {elapsed:.2f} s, {steps:.0f} steps, "
          f"mean batch {mean_batch:.1f}")
    assert mean_batch > 4, f"requests were not batched (mean batch {mean_batch:.2f})"
    assert m["fluxattn_kv_pages_used"] == 0


# -------------------------------------------------------------------------- malformed suite

def expect_error(s, status, method, path, body, param=None, code=None, headers=None):
    got, data = s.raw(method, path, body, headers)
    assert got == status, (got, status, path, body if not isinstance(body, bytes) else body[:80],
                           data[:300])
    err = json.loads(data)["error"]
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str), err
    if param is not None:
        assert err["param"] == param, (err, param)
    if code is not None:
        assert err["code"] == code, (err, code)
    return err


def suite_malformed(s):
    C, CH = "/v1/completions", "/v1/chat/completions"
    ok = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    okc = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    def w(**kw):
        d = dict(ok)
        d.update(kw)
        return {k: v for k, v in d.items() if v is not ...}

    def wc(**kw):
        d = dict(okc)
        d.update(kw)
        return {k: v for k, v in d.items() if v is not ...}

    corpus = [
        (400, C, "{", None), (400, C, '{"model": "flux-tiny", "prompt": "hi",}', None),
        (400, C, "", None), (400, C, "null", None), (400, C, "[]", None), (400, C, '"x"', None),
        (400, C, w(model=...), "model"), (400, C, w(model=5), "model"),
        (400, C, w(prompt=...), "prompt"), (400, C, w(prompt=5), "prompt"),
        (400, C, w(prompt=[]), "prompt"), (400, C, w(prompt=[1, "a"]), "prompt"),
        (400, C, w(prompt=["a", "b"]), "prompt"), (400, C, w(prompt={"a": 1}), "prompt"),
        (400, C, w(prompt=[-1]), "prompt"), (400, C, w(prompt=[VOCAB]), "prompt"),
        (400, C, w(prompt=[2 ** 63]), "prompt"), (400, C, w(prompt=""), "prompt"),
        (400, C, w(max_tokens="5"), "max_tokens"), (400, C, w(max_tokens=-1), "max_tokens"),
        (400, C, w(max_tokens=2.5), "max_tokens"), (400, C, w(max_tokens=True), "max_tokens"),
        (400, C, '{"model": "flux-tiny", "prompt": "hi", "max_tokens": 1e300}', "max_tokens"),
        (400, C, '{"model": "flux-tiny", "prompt": "hi", "max_tokens": 99999999999999999999999}',
         "max_tokens"),
        (400, C, w(max_tokens=2 ** 40), "max_tokens"),
        (400, C, w(temperature="hot"), "temperature"), (400, C, w(temperature=-1), "temperature"),
        (400, C, w(temperature=50), "temperature"), (400, C, w(top_p=0), "top_p"),
        (400, C, w(top_p=1.5), "top_p"), (400, C, w(top_k="3"), "top_k"),
        (400, C, w(seed=1.5), "seed"), (400, C, w(seed="1"), "seed"),
        (400, C, '{"model": "flux-tiny", "prompt": "hi", "seed": 1e400}', None),
        (400, C, w(stream="yes"), "stream"), (400, C, w(stop=5), "stop"),
        (400, C, w(stop=["a", "b", "c", "d", "e"]), "stop"), (400, C, w(stop=[""]), "stop"),
        (400, C, w(stop=[1]), "stop"), (400, C, w(n=2), "n"), (400, C, w(n="1"), "n"),
        (400, C, w(logprobs=6), "logprobs"), (400, C, w(logprobs="3"), "logprobs"),
        (400, C, w(logprobs=-1), "logprobs"), (400, C, w(top_logprobs=2), "top_logprobs"),
        (400, CH, wc(logprobs=3), "logprobs"), (400, CH, wc(top_logprobs=2), "top_logprobs"),
        (400, CH, wc(logprobs=True, top_logprobs=21), "top_logprobs"),
        (400, C, w(echo=True), "echo"),
        (400, C, w(presence_penalty=0.5), "presence_penalty"),
        (400, C, w(stream_options={"include_usage": True}), "stream_options"),
        (400, C, w(stream=True, stream_options=3), "stream_options"),
        (400, C, w(routing=3), "routing"), (400, C, w(routing="nope"), "routing"),
        (400, C, w(ignore_eos="no"), "ignore_eos"),
        (400, C, w(prompt=[1] * (CONTEXT + 52)), "prompt"),
        (400, C, w(prompt=[1] * (CONTEXT - 48), max_tokens=100), "max_tokens"),
        (404, C, w(model="gpt-4"), "model"),
        (400, CH, wc(messages=...), "messages"), (400, CH, wc(messages="hi"), "messages"),
        (400, CH, wc(messages=[]), "messages"), (400, CH, wc(messages=[5]), "messages[0]"),
        (400, CH, wc(messages=[{"content": "x"}]), "messages[0].role"),
        (400, CH, wc(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (400, CH, wc(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (400, CH, wc(messages=[{"role": "user"}]), "messages[0].content"),
        (400, CH, wc(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
         "messages[0].content[0]"),
        (400, CH, wc(max_completion_tokens=-3), "max_completion_tokens"),
        (400, CH, wc(tools=[{"type": "function"}]), "tools"),
        (400, CH, wc(chat_template_kwargs=5), "chat_template_kwargs"),
        (400, CH, wc(chat_template_kwargs={"messages": []}), "chat_template_kwargs.messages"),
        (400, CH, wc(messages=[{"role": "user", "content": "x", "reasoning_content": "y"}]),
         "messages[0].reasoning_content"),
        (400, CH, wc(messages=[{"role": "assistant", "content": "x", "reasoning": 5}]),
         "messages[0].reasoning"),
    ]
    for status, path, body, param in corpus:
        expect_error(s, status, "POST", path, body, param)
    # Invalid UTF-8 inside a JSON string, and in the body outside strings.
    expect_error(s, 400, "POST", C, b'{"model": "flux-tiny", "prompt": "\xff\xfe abc"}')
    expect_error(s, 400, "POST", C, b'\xc3\x28')
    expect_error(s, 400, "POST", C, w(prompt="x" * 10000), "prompt", "context_length_exceeded")
    # Unknown paths and methods.
    expect_error(s, 404, "GET", "/v1/nothing", None)
    expect_error(s, 404, "POST", "/v2/completions", ok)
    got, _ = s.raw("GET", C)
    assert got in (404, 405), got
    # Bodies over [server] max_body_bytes.
    expect_error(s, 413, "POST", C, w(prompt="a" * 70000))
    # The official client raises the matching exceptions.
    c = s.client()
    for call, exc in (
            (lambda: c.completions.create(model=MODEL, prompt="x", max_tokens=-1),
             openai.BadRequestError),
            (lambda: c.completions.create(model="nope", prompt="x"), openai.NotFoundError),
            (lambda: c.chat.completions.create(model=MODEL, messages=[]), openai.BadRequestError)):
        try:
            call()
            raise AssertionError("no error")
        except exc:
            pass
    s.alive()
    # Slow and broken clients: the server keeps serving others meanwhile and drops them.
    slow = socket.create_connection((s.host, s.port))
    slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
    half = socket.create_connection((s.host, s.port))
    half.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
    garbage = socket.create_connection((s.host, s.port))
    garbage.sendall(b"\x00\x01\x02 not http at all\r\n\r\n")
    s.alive()
    r = c.completions.create(model=MODEL, prompt="still here", max_tokens=3)
    assert r.usage.completion_tokens >= 1
    # Both are dropped once they have sent nothing for read_timeout_seconds (10 s in serve.toml);
    # the bound leaves room for a loaded machine, and a server that never drops them hits it.
    t0 = time.time()
    for sock in (slow, half):
        sock.settimeout(30)
        data = b""
        try:
            while True:
                b = sock.recv(4096)
                if not b:
                    break
                data += b
        except (ConnectionResetError, socket.timeout):
            pass
        assert time.time() - t0 < 25, "a slow client was not dropped"
        sock.close()
    garbage.settimeout(10)
    try:
        data = garbage.recv(4096)
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:100]
    except ConnectionResetError:
        pass
    garbage.close()
    half2 = socket.create_connection((s.host, s.port))
    half2.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    half2.close()
    s.alive()
    s.wait_idle()
    # One log line per error.
    time.sleep(0.2)
    logged = [l for l in s.stderr_lines if "-> 4" in l]
    assert len(logged) >= len(corpus), (len(logged), len(corpus))


# ----------------------------------------------------------------------------- limits suite

def suite_limits(s):
    nokey = s.client(api_key="wrong")
    try:
        nokey.models.list()
        raise AssertionError("a wrong API key was accepted")
    except openai.AuthenticationError:
        pass
    got, _ = s.raw("GET", "/v1/models")
    assert got == 401
    got, _ = s.raw("GET", "/health")
    assert got == 200
    c = s.client(api_key="test-key")
    s.auth = {"Authorization": "Bearer test-key"}
    assert [m.id for m in c.models.list().data] == [MODEL]
    expect_error(s, 400, "POST", "/v1/completions",
                 {"model": MODEL, "prompt": [1] * 101, "max_tokens": 1}, "prompt",
                 "context_length_exceeded", headers={"Authorization": "Bearer test-key"})
    # One request runs, one waits, the third is refused with 503.
    h = {"Content-Type": "application/json", "Authorization": "Bearer test-key"}
    long_body = json.dumps({"model": MODEL, "prompt": [5] * 20, "max_tokens": 2000,
                            "stream": True, "ignore_eos": True})
    conns = []
    for i in range(2):
        conn = http.client.HTTPConnection(s.host, s.port, timeout=60)
        conn.request("POST", "/v1/completions", body=long_body, headers=h)
        conns.append(conn)
        if i == 0:
            r = conn.getresponse()
            assert r.status == 200
            assert r.read(6) == b"data: "
    end = time.time() + 5
    while True:
        m = s.metrics()
        if m["fluxattn_queue_depth"] == 1 or time.time() > end:
            break
        time.sleep(0.01)
    assert m["fluxattn_running_requests"] == 1 and m["fluxattn_queue_depth"] == 1, m
    err = expect_error(s, 503, "POST", "/v1/completions",
                       {"model": MODEL, "prompt": "x", "max_tokens": 1}, None, "overloaded",
                       headers={"Authorization": "Bearer test-key"})
    assert "max_queued_requests" in err["message"]
    for conn in conns:
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    m = s.wait_idle()
    r = c.completions.create(model=MODEL, prompt="after", max_tokens=2)
    assert r.usage.completion_tokens >= 1


def run(test, s):
    t0 = time.time()
    test(s)
    print(f"ok {test.__name__} ({time.time() - t0:.2f} s)")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--suite", required=True,
                    choices=["client", "concurrency", "malformed", "limits", "template"])
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fluxattn_serve_")
    try:
        model = ["--model", template_checkpoint(tmp)] if args.suite == "template" else []
        serve(args, model)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def serve(args, model):
    s = Server(args.binary, args.config, model)
    try:
        if args.suite == "client":
            suite_client(s)
        else:
            run({"concurrency": suite_concurrency, "malformed": suite_malformed,
                 "limits": suite_limits, "template": suite_template}[args.suite], s)
        s.alive()
        s.stop()
    except BaseException:
        traceback.print_exc()
        if s.proc.poll() is None:
            s.proc.kill()
        time.sleep(0.2)
        sys.stderr.write("---- server stderr (last 40 lines) ----\n")
        sys.stderr.write("".join(s.stderr_lines[-40:]))
        sys.exit(1)

if __name__ == "__main__":
    main()
