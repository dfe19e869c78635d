#!/usr/bin/env bash
# Set up, then train the demo (a dataset generated on first use, no download) into runs/demo*.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/imgcls train configs/demo.yaml "$@"
