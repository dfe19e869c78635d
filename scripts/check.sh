#!/usr/bin/env bash
# Set up, then run every check CI runs: lint, format, types, import layers, tests (CPU only; GPU tests skip
# without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check imgcls tests benchmarks scripts
.venv/bin/ruff format --check imgcls tests benchmarks scripts
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layers of pyproject.toml's [tool.importlinter]; no cycles between files
.venv/bin/python -m pytest -n 2 -q "$@"
