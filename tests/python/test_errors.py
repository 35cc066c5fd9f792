"""Errors raise fluxattn.Error carrying the CLI's one-line messages."""

import pathlib

import pytest

import fluxattn
from conftest import CONFIGS, MODEL, CliError, run_cli


def cli_message(*args):
    with pytest.raises(CliError) as info:
        run_cli(*args, check=False)
    assert info.value.message, "the CLI printed no error line"
    return info.value.message


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text.replace("MODEL", str(MODEL)))
    return path


BAD_CONFIGS = {
    "unknown_backend.toml": """
[model]
path = "MODEL"
[backends.full]
plugin = "full"
[router]
plugin = "static"
full = "full"
sparse = "nowhere"
pattern = "FS"
""",
    "unknown_plugin.toml": """
[model]
path = "MODEL"
[backends.full]
plugin = "no_such_plugin"
""",
    "bad_param.toml": """
[model]
path = "MODEL"
[backends.full]
plugin = "full"
[backends.sparse]
plugin = "streaming"
window_tokens = "wide"
[router]
plugin = "static"
full = "full"
sparse = "sparse"
pattern = "FS"
""",
    "retired_decode_mode.toml": """
[model]
path = "MODEL"
[backends.full]
plugin = "xattention"
decode = "streaming"
""",
    "cuda.toml": """
[model]
path = "MODEL"
device = "tpu"
[backends.full]
plugin = "full"
""",
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_raises_cli_message(name, tmp_path):
    path = write(tmp_path, name, BAD_CONFIGS[name])
    expected = cli_message("generate", "--config", path, "--prompt-ids", "1,2,3")
    with pytest.raises(fluxattn.Error) as info:
        fluxattn.Engine.from_config(path)
    got = str(info.value)
    assert "\n" not in got
    if "(searched " in expected:
        # The folders searched differ: the CLI's own, the package's.
        head = expected[:expected.index("(searched ")]
        assert got.startswith(head), got
        plugin_dir = pathlib.Path(fluxattn.__file__).parent / "lib" / "fluxattn" / "plugins"
        assert str(plugin_dir.resolve()) in got[len(head):], got
    else:
        assert got == expected
    if name.startswith("retired_"):
        assert "key 'backends.full.decode'" in got and "use decode_with = " in got, got


def test_missing_files_raise_cli_messages(tmp_path):
    missing = tmp_path / "missing.toml"
    expected = cli_message("generate", "--config", missing, "--prompt-ids", "1")
    with pytest.raises(fluxattn.Error) as info:
        fluxattn.Engine.from_config(missing)
    assert str(info.value) == expected
    expected = cli_message("generate", "--model", tmp_path, "--prompt-ids", "1")
    with pytest.raises(fluxattn.Error) as info:
        fluxattn.Engine.from_model(tmp_path)
    assert str(info.value) == expected


def test_eval_arguments_raise_cli_messages():
    config = CONFIGS / "fa_only.toml"
    for flag, value in [("tasks", "passkey,nonsense"), ("lengths", "1q")]:
        expected = cli_message("eval", "--config", config, f"--{flag}", value)
        with pytest.raises(fluxattn.Error) as info:
            fluxattn.eval(config, **{flag: value})
        assert str(info.value) == expected


def test_request_errors_name_the_field():
    engine = fluxattn.Engine.from_model(MODEL)
    vocab = engine.model_info.vocab_size
    with pytest.raises(fluxattn.Error, match=str(vocab)):
        engine.generate([1, 2, vocab + 5], max_new_tokens=2)
    with pytest.raises(fluxattn.Error, match="nowhere"):
        engine.add([1, 2, 3], routing="nowhere")
    # The engine is still usable.
    assert len(engine.generate([1, 2, 3], max_new_tokens=2, ignore_eos=True).tokens) == 2
