#!/usr/bin/env bash
# The main job: install into ./.venv, then run `vitkit demo` (writes to runs/demo by default).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh demo  # the [demo] extra: training + figures
exec .venv/bin/vitkit demo "$@"
