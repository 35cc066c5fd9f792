#!/usr/bin/env bash
# Creates (once) the Python virtual environment that builds and tests the `fluxattn` package:
# nanobind and scikit-build-core (the build), numpy (the package's dependency) and pytest.
#   tools/python-venv.sh [DIR]   (default: ${FLUXATTN_PYTHON_VENV:-build/python-venv})
# Prints the venv's python on the last line of stdout; fails when PyPI cannot be reached.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-${FLUXATTN_PYTHON_VENV:-$root/build/python-venv}}"
specs=("nanobind>=2.0,<4" "scikit-build-core>=0.10" "numpy" "pytest")
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] ||
  ! "$venv/bin/python" -c "import nanobind, scikit_build_core, numpy, pytest" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${specs[@]}" >&2; then
    echo "python-venv: could not install ${specs[*]} from PyPI" >&2
    exit 1
  fi
fi
echo "$venv/bin/python"
