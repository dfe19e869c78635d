#!/usr/bin/env bash
# Set up, then run every check CI runs: lint, format, types, tests (CPU only; GPU tests skip without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check imgcls tests benchmarks scripts
.venv/bin/ruff format --check imgcls tests benchmarks scripts
.venv/bin/mypy
.venv/bin/python -m pytest -n 2 -q "$@"
