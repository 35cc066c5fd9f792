#!/usr/bin/env bash
# Fails (listing the files) when a tracked C++/CUDA source differs from clang-format's output
# under the repository's .clang-format. `tools/check-format.sh --fix` rewrites them instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v clang-format >/dev/null || { echo "check-format: clang-format not found" >&2; exit 2; }
bad=()
while IFS= read -r f; do
  if [ "${1:-}" = "--fix" ]; then
    clang-format -i "$f"
  elif ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    bad+=("$f")
  fi
done < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh')
if ((${#bad[@]})); then
  echo "check-format: ${#bad[@]} file(s) differ from clang-format (run tools/check-format.sh --fix):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check-format: every C++/CUDA source is clang-format clean"
