#!/usr/bin/env bash
# The test suite: install into ./.venv with the test extras, lint, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh test
.venv/bin/ruff check src tests benchmarks
exec .venv/bin/python -m pytest -q -n 2 "$@"
