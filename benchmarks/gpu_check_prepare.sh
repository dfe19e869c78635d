#!/usr/bin/env bash
# Run HERE (the machine with a package index), in the checkout that the device tool sends, before a GPU run of
# benchmarks/gpu_check.sh. It fills two ignored folders that the run carries:
#   .whl/               pydantic and its needs as wheels for the GPU machine's Python 3.12 (it has no pydantic)
#   data/fashion-mnist/ the four IDX files of Debian's dataset-fashion-mnist (30 MB)
# Versions: those of the venv that runs the suite here, so that both machines validate specs alike.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-/work/main/.venv/bin/python}
GPU_PYTHON=${GPU_PYTHON:-3.12}
mkdir -p .whl data/fashion-mnist
versions=$("$PY" - <<'PYEOF'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions")))
PYEOF
)
rm -f .whl/*.whl
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $versions
echo "wheels: $(ls .whl | tr '\n' ' ')"
if [[ ! -f data/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
    scratch=$(mktemp -d)
    (cd "$scratch" && apt-get download dataset-fashion-mnist >/dev/null 2>&1)
    dpkg-deb -x "$scratch"/dataset-fashion-mnist_*.deb "$scratch/root"
    cp "$scratch"/root/usr/share/datasets/fashion-mnist/*-ubyte.gz data/fashion-mnist/
    rm -rf "$scratch"
fi
echo "fashion-mnist: $(ls data/fashion-mnist | tr '\n' ' ')"
du -sh .whl data/fashion-mnist
