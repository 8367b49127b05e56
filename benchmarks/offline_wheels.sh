#!/usr/bin/env bash
# Wheels for running autotimm (and gpu_all.sh) on an offline GPU machine whose image already
# has torch, torchvision, Lightning, torchmetrics, numpy/scipy/sklearn/pandas, rich and pytest
# (the usual CUDA images), but not Hydra, Optuna and their pins, nor our timm version.
#
#   bash benchmarks/offline_wheels.sh [DEST] [PYTHON_VERSION]     # default: .whl 3.12
#
# Then, on the GPU machine, from the repository root (no index, nothing fetched):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#   bash benchmarks/gpu_all.sh "$OUT"
# --no-deps: the list below is complete for training, sweeps and the benchmarks; W&B is left
# out (use logger=csv there). Versions are the ones pyproject.toml pins or the tests ran with.
set -eu
cd "$(dirname "$0")/.."
DEST="${1:-.whl}"
PYVER="${2:-3.12}"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
mkdir -p "$DEST"
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp "${PLATFORMS[@]}" -d "$DEST" \
  hydra-core==1.4.0rc3 omegaconf==2.4.1rc2 hydra-optuna-sweeper==1.4.0rc3 \
  hydra-joblib-launcher==1.4.0rc3 "joblib>=1.5.3" optuna==5.1.0 "sqlalchemy>=2" "alembic>=1.14" \
  mako colorlog cmaes greenlet timm==1.0.31
ls "$DEST"
du -sh "$DEST"
