"""Routing policies written in Python, named in TOML as plugin = "python:..."."""

import textwrap

import numpy as np
import pytest

import fluxattn
from conftest import CONFIGS, MODEL, cli_generate, random_prompt

POLICY_MODULE = '''
import numpy as np
import fluxattn

class Alternate(fluxattn.RoutingPolicy):
    """Sparse on the layers where layer % period == phase."""
    params = {"period": 2, "phase": 1}
    needs_queries = False

    def __init__(self, period, phase):
        self.period, self.phase = period, phase

    def decide(self, batch):
        return ["sparse" if batch.layer % self.period == self.phase else "full"
                for _ in batch.requests]

class Recorder:
    """Records what decide() sees; routes by a hint, returns logits for the trace."""
    params = {"threshold": 0.5, "label": "x", "flag": False}
    seen = []
    prepared = []

    def __init__(self, threshold, label, flag):
        self.threshold = threshold
        type(self).config = (threshold, label, flag)

    def prepare(self, model_info):
        type(self).prepared.append(model_info)

    def decide(self, batch):
        out = []
        for r in batch.requests:
            type(self).seen.append((batch.layer, batch.num_layers, r.request_id, r.prompt_tokens,
                                    r.query_rows, dict(r.hints), r.queries.copy(),
                                    r.pooled_queries.copy()))
            score = float(batch.layer) / batch.num_layers
            if "force" in r.hints:
                out.append(r.hints["force"] == "sparse")
            else:
                out.append(("sparse" if score >= self.threshold else "full", [score, -score]))
        return tuple(out)

class PooledOnly:
    needs_queries = "pooled"
    seen = []
    def decide(self, batch):
        type(self).seen.extend((r.queries, r.pooled_queries) for r in batch.requests)
        return ["full"] * len(batch.requests)

class Broken:
    needs_queries = False
    def decide(self, batch):
        raise ValueError("no decision for layer %d" % batch.layer)

class WrongCount:
    needs_queries = False
    def decide(self, batch):
        return []
'''


@pytest.fixture
def policies(tmp_path, monkeypatch):
    module = f"fluxattn_test_policies_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(POLICY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return module


def config(tmp_path, router, name="policy.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""
        [model]
        path = "{MODEL}"
        [backends.full]
        plugin = "full"
        [backends.sparse]
        plugin = "streaming"
        sink_tokens = 64
        window_tokens = 256
        block_size = 128
        [router]
        full = "full"
        sparse = "sparse"
        """) + textwrap.dedent(router))
    return path


def test_python_policy_equals_the_static_plugin(policies, rng, tmp_path):
    # Python "sparse when layer % 2 == 1" against the C++ static policy with pattern "FS".
    path = config(tmp_path, f'plugin = "python:{policies}.Alternate"\n')
    static = config(tmp_path, 'plugin = "static"\npattern = "FS"\n', name="static_fs.toml")
    prompt = random_prompt(rng, rng.randrange(300, 600))
    expected, trace = cli_generate(["--config", static], [prompt], tmp_path, max_new_tokens=5,
                                   ignore_eos=True)
    engine = fluxattn.Engine.from_config(path)
    got = engine.generate(prompt, max_new_tokens=5, ignore_eos=True)
    n = engine.model_info.num_layers
    assert got.trace.choices == ["sparse" if i % 2 == 1 else "full" for i in range(n)]
    assert [l.backend for l in got.trace.layers] == [c for c in got.trace.choices]
    assert got.tokens == expected["tokens"]
    assert got.trace.sa_ratio == trace["requests"][0]["sa_ratio"]
    assert got.trace.to_json()["layers"] == trace["requests"][0]["layers"]


def test_params_from_toml_and_period(policies, rng, tmp_path):
    period, phase = rng.randrange(2, 5), 0
    path = config(tmp_path, f'plugin = "python:{policies}.Alternate"\nperiod = {period}\n'
                            f'phase = {phase}\n')
    engine = fluxattn.Engine.from_config(path)
    got = engine.generate(random_prompt(rng, 50), max_new_tokens=2, ignore_eos=True)
    assert got.trace.choices == ["sparse" if i % period == phase else "full"
                                 for i in range(engine.model_info.num_layers)]


def test_policy_sees_queries_hints_and_returns_logits(policies, rng, tmp_path):
    import importlib

    mod = importlib.import_module(policies)
    path = config(tmp_path, f'plugin = "python:{policies}.Recorder"\nthreshold = 0.5\n'
                            'label = "y"\n')
    engine = fluxattn.Engine.from_config(path)
    info = engine.model_info
    assert mod.Recorder.config == (0.5, "y", False)
    assert mod.Recorder.prepared[-1].num_layers == info.num_layers
    prompts = [random_prompt(rng, rng.randrange(20, 90)) for _ in range(2)]
    a = engine.add(prompts[0], max_new_tokens=2, ignore_eos=True, hints={"force": "sparse"})
    b = engine.add(prompts[1], max_new_tokens=2, ignore_eos=True)
    done = {}
    while not engine.idle:
        for r in engine.step().finished:
            done[r.request_id] = r
    assert done[a].trace.choices == ["sparse"] * info.num_layers
    scores = [i / info.num_layers for i in range(info.num_layers)]
    assert done[b].trace.choices == ["sparse" if s >= 0.5 else "full" for s in scores]
    assert [l.logits for l in done[b].trace.layers] == \
        [pytest.approx([s, -s]) for s in scores]
    seen = [s for s in mod.Recorder.seen if s[2] in (a, b)]
    assert len(seen) == 2 * info.num_layers
    for layer, num_layers, rid, prompt_tokens, rows, hints, queries, pooled in seen:
        assert num_layers == info.num_layers
        assert prompt_tokens == rows == len(prompts[0 if rid == a else 1])
        assert hints == ({"force": "sparse"} if rid == a else {})
        assert queries.shape == (rows, info.num_q_heads, info.head_dim)
        assert queries.dtype == np.float32 and np.isfinite(queries).all()
        np.testing.assert_allclose(pooled, queries.mean(axis=0), rtol=1e-5, atol=1e-6)
    # Layers differ, so their queries do.
    assert not np.array_equal(seen[0][6], seen[1][6])


def test_pooled_only_policy(policies, rng, tmp_path):
    import importlib

    mod = importlib.import_module(policies)
    engine = fluxattn.Engine.from_config(
        config(tmp_path, f'plugin = "python:{policies}.PooledOnly"\n'))
    info = engine.model_info
    got = engine.generate(random_prompt(rng, 33), max_new_tokens=1)
    assert got.trace.choices == ["full"] * info.num_layers
    assert len(mod.PooledOnly.seen) == info.num_layers
    for queries, pooled in mod.PooledOnly.seen:
        assert queries is None and pooled.shape == (info.num_q_heads, info.head_dim)


def test_registered_policy_and_compare_against_flux(policies, tmp_path):
    class EverySparse(fluxattn.RoutingPolicy):
        needs_queries = False

        def decide(self, batch):
            return [True] * len(batch)

    fluxattn.register_policy("every_sparse", EverySparse)
    path = config(tmp_path, 'plugin = "python:every_sparse"\n', name="every_sparse.toml")
    engine = fluxattn.Engine.from_config(path)
    got = engine.generate([5, 6, 7, 8], max_new_tokens=2, ignore_eos=True)
    assert got.trace.sa_ratio == 1.0
    report = fluxattn.compare([CONFIGS / "flux_router.toml", path], tasks="passkey",
                              lengths="512", samples=1, repeats=1, decode_tokens=2,
                              progress=False)
    assert [row["config"] for row in report["rows"]] == ["flux_router", "every_sparse"]
    assert report["bench"][1]["sa_ratio"] == 1.0


def test_policy_errors(policies, tmp_path):
    for cls, message in [
        ("Broken", "decide: ValueError: no decision for layer 0"),
        ("WrongCount", "decide: expected 1 choices (one per request), found 0"),
    ]:
        engine = fluxattn.Engine.from_config(
            config(tmp_path, f'plugin = "python:{policies}.{cls}"\n'))
        with pytest.raises(fluxattn.Error, match=f"python policy 'python:{policies}.{cls}'"):
            engine.generate([1, 2, 3], max_new_tokens=1)
        try:
            engine.generate([1, 2, 3], max_new_tokens=1)
        except fluxattn.Error as e:
            assert message in str(e)
    with pytest.raises(fluxattn.Error, match="no_such_module"):
        fluxattn.Engine.from_config(config(tmp_path, 'plugin = "python:no_such_module.X"\n'))
    with pytest.raises(fluxattn.Error, match="'bogus'"):
        fluxattn.Engine.from_config(
            config(tmp_path, f'plugin = "python:{policies}.Alternate"\nbogus = 1\n'))
    with pytest.raises(fluxattn.Error, match="period"):
        fluxattn.Engine.from_config(
            config(tmp_path, f'plugin = "python:{policies}.Alternate"\nperiod = "two"\n'))


def test_time_policy_measures_calls(policies):
    import importlib

    mod = importlib.import_module(policies)
    seconds = fluxattn.time_policy(mod.Alternate(2, 1), requests=2, rows=64, iterations=200)
    assert 0 < seconds < 0.01


def test_named_python_router_per_request(policies, rng, tmp_path):
    path = config(tmp_path, 'plugin = "static"\npattern = "F"\n'
                            f'[routers.alt]\nplugin = "python:{policies}.Alternate"\n'
                            'period = 3\nphase = 2\n')
    engine = fluxattn.Engine.from_config(path)
    assert sorted(engine.routing_policies) == ["", "alt"]
    n = engine.model_info.num_layers
    default = engine.add(random_prompt(rng, 40), max_new_tokens=1)
    alt = engine.add(random_prompt(rng, 40), max_new_tokens=1, routing="alt")
    done = {}
    while not engine.idle:
        done.update({r.request_id: r for r in engine.step().finished})
    assert done[default].trace.choices == ["full"] * n
    assert done[alt].trace.routing == "alt"
    assert done[alt].trace.choices == ["sparse" if i % 3 == 2 else "full" for i in range(n)]
