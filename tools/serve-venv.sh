#!/usr/bin/env bash
# Creates (once) a Python virtual environment with the official `openai` client, used by the
# `fluxattn serve` tests (tests/serve/) and the load generator (tools/serve_loadgen.py).
#   tools/serve-venv.sh [DIR]   (default: ${FLUXATTN_SERVE_VENV:-build/serve-venv})
# Prints the venv's python on the last line of stdout. Exits 77 when the package cannot be
# installed (no network), so that CTest reports the tests as skipped rather than passed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${FLUXATTN_SERVE_VENV:-$root/build/serve-venv}}"
openai_spec="${FLUXATTN_OPENAI_SPEC:-openai>=1.40,<2}"
lock="$venv.lock"
mkdir -p "$(dirname "$venv")"
exec 9>"$lock"
flock 9
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "$openai_spec" >&2; then
    echo "serve-venv: could not install '$openai_spec' from PyPI" >&2
    exit 77
  fi
fi
echo "$venv/bin/python"
