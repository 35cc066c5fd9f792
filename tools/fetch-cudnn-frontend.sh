#!/usr/bin/env bash
# The cuDNN frontend (NVIDIA's header-only C++ graph API over cuDNN, PyPI nvidia-cudnn-frontend)
# into .deps/cudnn-frontend/include, where CMake looks for it. Only where cuDNN itself is
# installed (with the CUDA toolkit in /usr/local/cuda or CUDA_HOME); elsewhere it does nothing
# and the build goes without the cuDNN attention path. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="1.32.0"
cuda="${CUDA_HOME:-/usr/local/cuda}"
dest="$root/.deps/cudnn-frontend"
if [ ! -f "$cuda/include/cudnn.h" ] && [ ! -f /usr/include/cudnn.h ]; then
  echo "fetch-cudnn-frontend: no cudnn.h in $cuda/include or /usr/include; skipped"
  exit 0
fi
if [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$version" ] &&
  [ -f "$dest/include/cudnn_frontend.h" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
  "nvidia-cudnn-frontend==$version" -d "$tmp"
rm -rf "$dest"
mkdir -p "$dest"
python3 - "$dest" "$tmp"/nvidia_cudnn_frontend-*.whl <<'PY'
import sys, zipfile
dest, wheel = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    members = [n for n in z.namelist() if n.startswith("include/")]
    if not any(n == "include/cudnn_frontend.h" for n in members):
        sys.exit(f"fetch-cudnn-frontend: {wheel}: expected include/cudnn_frontend.h, found none")
    z.extractall(dest, members)
PY
echo "$version" > "$dest/VERSION"
echo "fetch-cudnn-frontend: headers $version in $dest/include"
