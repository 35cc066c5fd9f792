"""Shared fixtures of the Python package's tests: the source tree (for the demo model and its
configs) and the `fluxattn` CLI of the C++ build, the independent oracle most tests compare with.

FLUXATTN_SOURCE_DIR (default: two folders up) and FLUXATTN_CLI (default: build/bin/fluxattn
below it) locate them; tools/test-python.sh sets both and runs from outside the source tree.
"""

import json
import os
import pathlib
import random
import subprocess

import pytest

SOURCE = pathlib.Path(os.environ.get("FLUXATTN_SOURCE_DIR", pathlib.Path(__file__).parents[2]))
CLI = pathlib.Path(os.environ.get("FLUXATTN_CLI", SOURCE / "build" / "bin" / "fluxattn"))
DEMO = SOURCE / "models" / "demo"
CONFIGS = DEMO / "configs"
MODEL = DEMO / "flux-tiny"


class CliError(Exception):
    """A CLI run that failed: `message` is its `fluxattn: error: ...` line without the prefix."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def run_cli(*args, check=True):
    """Runs the CLI; returns its stdout. A failure raises CliError with the error line."""
    if not CLI.exists():
        pytest.fail(f"{CLI}: expected the fluxattn CLI of the C++ build, found no file")
    proc = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.startswith("fluxattn: error: ")]
        if not check:
            raise CliError(proc.returncode, lines[-1][len("fluxattn: error: "):] if lines else "")
        pytest.fail(f"fluxattn {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def cli_generate(source_args, prompts, tmp_path, **options):
    """`fluxattn generate --json --trace` on id prompts: (the JSON, the trace file)."""
    args = ["generate", *source_args, "--json", "--trace", tmp_path / "trace.json"]
    for ids in prompts:
        args += ["--prompt-ids", ",".join(map(str, ids))]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not False:
            args += [flag, value]
    out = json.loads(run_cli(*args))
    trace = json.loads((tmp_path / "trace.json").read_text())
    return out, trace


@pytest.fixture
def rng(request):
    """A fresh seed every run, printed so that a failure can be replayed (FLUXATTN_TEST_SEED)."""
    seed = int(os.environ.get("FLUXATTN_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
    print(f"{request.node.name}: FLUXATTN_TEST_SEED={seed}")
    return random.Random(seed)


def random_prompt(rng, length, vocab=8192):
    # Ids above the tokenizer's specials, so that text round-trips are meaningful.
    return [rng.randrange(16, vocab) for _ in range(length)]
