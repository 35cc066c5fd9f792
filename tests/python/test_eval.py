"""fluxattn.eval / compare / list_plugins return what the CLI writes."""

import json

import fluxattn
from conftest import CONFIGS, run_cli

TIMES = {"prefill_seconds", "seconds", "prefill_tokens_per_second", "decode_ms_per_token",
         "prefill_seconds_samples", "decode_ms_per_token_samples", "decode_tokens_per_second",
         "route_ms_per_layer", "route_ms_max"}


def untimed(rows):
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in TIMES}
        if "details" in row:
            row["details"] = [{k: v for k, v in d.items() if k not in TIMES}
                              for d in row["details"]]
        out.append(row)
    return out


def test_eval_rows_equal_cli(rng, tmp_path):
    config = CONFIGS / "flux_router.toml"
    seed = rng.randrange(1000)
    run_cli("eval", "--config", config, "--tasks", "passkey,kv_retrieval", "--lengths", "512",
            "--samples", 2, "--seed", seed, "--details", "--json", tmp_path / "eval.json")
    expected = json.loads((tmp_path / "eval.json").read_text())["results"]
    got = fluxattn.eval(config, tasks=["passkey", "kv_retrieval"], lengths=[512], samples=2,
                        seed=seed, details=True, progress=False)
    assert untimed(got) == untimed(expected)
    assert [r["task"] for r in got] == ["passkey", "kv_retrieval"]


def test_compare_rows_equal_cli(rng, tmp_path):
    configs = [CONFIGS / "fa_only.toml", CONFIGS / "static_hybrid.toml"]
    seed = rng.randrange(1000)
    args = ["--tasks", "passkey", "--lengths", "256", "--samples", 1, "--seed", seed,
            "--repeats", 1, "--decode-tokens", 2]
    run_cli("compare", *configs, *args, "--out", tmp_path)
    expected = json.loads((tmp_path / "compare.json").read_text())
    got = fluxattn.compare(configs, tasks="passkey", lengths="256", samples=1, seed=seed,
                           repeats=1, decode_tokens=2, progress=False)
    assert got["configs"] == [str(c) for c in configs] == expected["configs"]
    assert untimed(got["eval"]) == untimed(expected["eval"])
    assert untimed(got["bench"]) == untimed(expected["bench"])
    speed = {"prefill_speedup", "decode_speedup"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMES | speed and
                           "second" not in k and "speed" not in k and "_ms" not in k}
                          for r in rows]
    assert strip(got["rows"]) == strip(expected["rows"])


def test_list_plugins_equals_cli():
    expected = json.loads(run_cli("plugins", "--json"))
    got = fluxattn.list_plugins()
    assert sorted((p["name"], p["kind"], p["version"], p["abi"]) for p in got["plugins"]) == \
        sorted((p["name"], p["kind"], p["version"], p["abi"]) for p in expected["plugins"])
    by_name = {p["name"]: p for p in expected["plugins"]}
    for plugin in got["plugins"]:
        assert [q["name"] for q in plugin["parameters"]] == \
            [q["name"] for q in by_name[plugin["name"]]["parameters"]]
        assert [q["default"] for q in plugin["parameters"]] == \
            [q["default"] for q in by_name[plugin["name"]]["parameters"]]
    assert got["failures"] == []
