#!/usr/bin/env bash
# Issue 18: every CUDA check of imgcls in one run of at most 8 minutes (benchmarks/gpu_check.py says what runs).
#
#   bash benchmarks/gpu_check.sh               # on the GPU machine, from the repository root, with its python3
#   bash benchmarks/gpu_check.sh --cpu-smoke   # the same steps at toy sizes on the CPU (tests/benchmarks runs it)
#
# Before a GPU run, here: bash benchmarks/gpu_check_prepare.sh (pydantic wheels into .whl/, Fashion-MNIST into
# data/fashion-mnist/); docs_snippets/gpu_check.md has the exact device call. Output: $OUT (or --out) holds
# gpu_check.log (everything printed), summary.md, gpu_check.json, pytest_gpu.xml and setup.log.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
out=${OUT:-bench-out/gpu-check}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ ${args[i]} == --out ]]; then out=${args[i + 1]}; fi
done
mkdir -p "$out"
{
    echo "gpu_check.sh $(date '+%Y-%m-%d %H:%M:%S') on $(hostname): $("$PY" --version 2>&1) at $(command -v "$PY")"
    # The GPU machine's python has no pydantic: install the carried wheels into a private folder.
    if ! "$PY" -c "import pydantic" 2>/dev/null; then
        if compgen -G ".whl/*.whl" >/dev/null; then
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target /tmp/imgcls-site .whl/*.whl && echo "installed $(ls .whl) into /tmp/imgcls-site"
        else
            echo "pydantic is missing and there is no .whl/ folder: run benchmarks/gpu_check_prepare.sh first"
        fi
    fi
} 2>&1 | tee -a "$out/setup.log"
if [[ -d /tmp/imgcls-site ]]; then export PYTHONPATH=/tmp/imgcls-site${PYTHONPATH:+:$PYTHONPATH}; fi
exec "$PY" benchmarks/gpu_check.py --out "$out" "$@"
