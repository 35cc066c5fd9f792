"""Engine.generate and the step API against `fluxattn generate --json --trace`."""

import json

import numpy as np
import pytest

import fluxattn
from conftest import CONFIGS, MODEL, SOURCE, cli_generate, random_prompt


def strip_timing(obj):
    obj = dict(obj)
    obj.pop("timing", None)
    return obj


@pytest.mark.parametrize("config", ["flux_router", "static_hybrid", "random_hybrid", "fa_only"])
def test_generate_equals_cli(config, rng, tmp_path):
    path = CONFIGS / f"{config}.toml"
    # Long enough for the streaming backend to drop positions (sink 64 + window 256).
    prompt = random_prompt(rng, rng.randrange(300, 700))
    max_new = rng.randrange(3, 10)
    expected, trace = cli_generate(["--config", path], [prompt], tmp_path,
                                   max_new_tokens=max_new, ignore_eos=True)
    engine = fluxattn.Engine.from_config(path)
    got = engine.generate(prompt, max_new_tokens=max_new, ignore_eos=True)
    assert got.to_json() == strip_timing(expected)
    assert len(got.tokens) == max_new
    assert [got.trace.to_json()] == trace["requests"]


def test_builtin_composition_with_a_delegated_decode_equals_cli(tmp_path):
    # A triangle checkpoint: its SA layers decode on the streaming instance `sparse_decode`.
    fixtures = SOURCE / "tests" / "fixtures" / "router"
    model = fixtures / "flux_tiny_triangle"
    expected_json = json.loads((fixtures / "flux_tiny_triangle_expected.json").read_text())
    prompt = expected_json["prompts"][0]["prompt_ids"]
    assert "sparse" in expected_json["prompts"][0]["decisions"]
    expected, trace = cli_generate(["--model", model], [prompt], tmp_path, max_new_tokens=6,
                                   ignore_eos=True)
    engine = fluxattn.Engine.from_model(model)
    got = engine.generate(prompt, max_new_tokens=6, ignore_eos=True)
    assert got.to_json() == strip_timing(expected)
    assert [got.trace.to_json()] == trace["requests"]
    sparse = [layer for layer in got.trace.layers if layer.backend == "sparse"]
    assert sparse
    for layer in got.trace.layers:
        want = "sparse_decode" if layer.backend == "sparse" else layer.backend
        assert (layer.prefill_backend, layer.decode_backend) == (layer.backend, want), layer


def test_batch_sampling_and_text_equal_cli(rng, tmp_path):
    prompts = [random_prompt(rng, rng.randrange(20, 200)) for _ in range(3)]
    seed = rng.randrange(1 << 20)
    options = dict(max_new_tokens=6, temperature=0.9, top_k=50, seed=seed, ignore_eos=True)
    expected, trace = cli_generate(["--model", MODEL], prompts, tmp_path, **options)
    engine = fluxattn.Engine.from_model(MODEL)
    got = engine.generate(prompts, **options)
    assert [r.to_json() for r in got] == [strip_timing(r) for r in expected["requests"]]
    assert [r.trace.to_json() for r in got] == trace["requests"]
    assert got[0].timing["prefill_tokens"] == sum(len(p) for p in prompts)


def test_text_prompt_equals_cli(tmp_path):
    from conftest import run_cli
    import json

    text = "The quick brown fox jumps over the lazy dog. " * 5
    expected = json.loads(run_cli("generate", "--model", MODEL, "--prompt", text,
                                  "--max-new-tokens", 5, "--json"))
    engine = fluxattn.Engine.from_model(MODEL)
    got = engine.generate(text, max_new_tokens=5)
    assert got.to_json() == strip_timing(expected)
    ids = engine.encode(text)
    assert engine.generate(ids, max_new_tokens=5).tokens == got.tokens
    assert engine.decode(got.tokens) == got.text


def test_logits_are_numpy_and_match_cli(rng, tmp_path):
    prompt = random_prompt(rng, 40)
    expected, _ = cli_generate(["--model", MODEL], [prompt], tmp_path, max_new_tokens=4,
                               ignore_eos=True, logits=True)
    engine = fluxattn.Engine.from_model(MODEL)
    got = engine.generate(prompt, max_new_tokens=4, ignore_eos=True, logits=True)
    assert isinstance(got.logits, np.ndarray) and got.logits.dtype == np.float32
    assert got.logits.shape == (4, engine.model_info.vocab_size)
    # Greedy: every token is the argmax of the logits it was sampled from.
    assert list(got.logits.argmax(axis=1)) == got.tokens
    np.testing.assert_allclose(got.logits[-1], np.array(expected["logits"], dtype=np.float32),
                               rtol=1e-6, atol=1e-6)
    # DLPack (torch.from_dlpack takes the same protocol).
    assert np.from_dlpack(got.logits).shape == got.logits.shape


def test_step_api_streams_the_same_tokens(rng, tmp_path):
    prompts = [random_prompt(rng, rng.randrange(10, 120)) for _ in range(2)]
    expected, _ = cli_generate(["--config", CONFIGS / "flux_router.toml"], prompts, tmp_path,
                               max_new_tokens=5, ignore_eos=True)
    engine = fluxattn.Engine.from_config(CONFIGS / "flux_router.toml")
    ids = [engine.add(p, max_new_tokens=5, ignore_eos=True) for p in prompts]
    streamed = {i: [] for i in ids}
    finished = {}
    steps = 0
    while not engine.idle:
        step = engine.step()
        steps += 1
        for request_id, token in step.tokens:
            streamed[request_id].append(token)
        for r in step.finished:
            finished[r.request_id] = r
        assert steps < 50
    assert [streamed[i] for i in ids] == [r["tokens"] for r in expected["requests"]]
    assert [finished[i].tokens for i in ids] == [r["tokens"] for r in expected["requests"]]
    assert [finished[i].to_json()["routing"] for i in ids] == \
        [r["routing"] for r in expected["requests"]]


def test_cancel_and_callback(rng):
    engine = fluxattn.Engine.from_model(MODEL)
    first = engine.add(random_prompt(rng, 30), max_new_tokens=20, ignore_eos=True)
    engine.step()
    assert engine.num_running == 1
    assert engine.cancel(first) is True
    assert engine.cancel(first) is False
    assert engine.idle
    seen = []
    result = engine.generate(random_prompt(rng, 30), max_new_tokens=4, ignore_eos=True,
                             on_token=lambda index, token: seen.append((index, token)))
    assert seen == [(0, t) for t in result.tokens]

    def boom(index, token):
        raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        engine.generate(random_prompt(rng, 30), max_new_tokens=3, on_token=boom)


def test_generate_releases_the_gil(rng):
    import threading
    import time

    engine = fluxattn.Engine.from_model(MODEL)
    prompt = random_prompt(rng, 1500)
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (engine.generate(prompt, max_new_tokens=4, ignore_eos=True), done.set()))
    start = time.perf_counter()
    thread.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    thread.join()
    elapsed = time.perf_counter() - start
    # This thread ran all along (a held GIL would have stopped it until the call returned).
    assert elapsed > 0.05
    assert ticks > 0.2 * elapsed / 0.001


def test_calling_the_engine_from_its_own_callback_raises(rng):
    engine = fluxattn.Engine.from_model(MODEL)
    other = engine.add(random_prompt(rng, 10), max_new_tokens=2)

    def cancel(index, token):
        engine.cancel(other)

    with pytest.raises(fluxattn.Error, match="called from inside one of its own calls"):
        engine.generate(random_prompt(rng, 10), max_new_tokens=2, on_token=cancel)
    # Both requests ran; the engine is usable again.
    assert engine.idle
    assert engine.cancel(other) is False
