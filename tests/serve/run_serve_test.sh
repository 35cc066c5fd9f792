#!/usr/bin/env bash
# Runs one suite of tests/serve/serve_test.py with the official openai client from the project's
# virtual environment (tools/serve-venv.sh; exit 77 = skipped when it cannot be installed).
#   run_serve_test.sh FLUXATTN_BINARY CONFIG SUITE
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="$("$root/tools/serve-venv.sh" | tail -n 1)"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || exit "$rc"
exec "$python" "$root/tests/serve/serve_test.py" --binary "$1" --config "$2" --suite "$3"
