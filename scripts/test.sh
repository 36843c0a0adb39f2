#!/usr/bin/env bash
# The test suite: install into ./.venv with the test extras, lint, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh test
# The HTML explorer's tests drive a real Chromium and Firefox (Debian's packages; playwright never downloads a
# browser). Installed here where missing and we may (root with apt-get); elsewhere those tests skip and say why.
if ! { command -v chromium && command -v firefox-esr; } >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null
then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium firefox-esr >/dev/null; } ||
    echo "note: could not install chromium/firefox-esr; the browser tests will be skipped" >&2
fi
.venv/bin/ruff check src tests benchmarks hubconf.py
exec .venv/bin/python -m pytest -q -n 2 "$@"
