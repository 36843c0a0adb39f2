#!/usr/bin/env bash
# Creates ./.venv and installs vitkit into it (extras in $1, e.g. "test").
# torch is pinned to the CPU wheel first, so nothing later can pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0"
EXTRA=${1:+[$1]}
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".${EXTRA}"
