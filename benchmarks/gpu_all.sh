#!/usr/bin/env bash
# Every GPU check of issue 14 in one run, sized to finish in about 7 minutes on one H100/H200
# (BUDGET_S caps it, default 420 s; steps past it are skipped and recorded), in this order:
#   - CUDA checks of the device data path (tests/test_gpu_path.py -k cuda)
#   - overhead.py: framework vs raw timm loop, bf16, batch 256: resnet50 224 px, then resnet18
#     at 32 px (CIFAR-size steps, where framework cost shows; default callbacks)
#   - sync_check.py: host syncs per step of the default configuration
#   - datapipe.py: resnet50 from 4,096 JPEGs (500x375): CPU vs GPU decode vs synthetic
#   - overhead.py vit_b16
#   - a two-trial sweep on the one GPU (sweep.gpus=[0]); sweep_claims.py then requires each
#     trial's results.json to name the GPU it claimed and ran on
#   - overhead.py --compile: torch.compile on (compare with the resnet50 run above: off)
#   - the default callbacks on top (overhead and datapipe)
#   - a run with the recipes that touch CUDA (EMA, grad checkpointing, bf16-mixed)
#   - inference.py: eager / compile / TorchScript / torch.export / ONNX Runtime of resnet50
#
#   bash benchmarks/gpu_all.sh [OUT_DIR]      # default: $OUT, else benchmarks/results/<time>
#   PYTHON=/path/to/python bash benchmarks/gpu_all.sh
#
# Each benchmark appends one JSON line to OUT_DIR/results.jsonl and writes its output to
# OUT_DIR/<step>.log; a failing or timed-out step is recorded in OUT_DIR/steps.jsonl and
# the next one still runs. A global deadline (BUDGET_S) caps the whole run.
# Afterwards: python benchmarks/summarize.py OUT_DIR/results.jsonl  (markdown table).
# SMOKE=1 runs every step in --tiny mode, also without a GPU (checks this script itself).
# ONLY=name,name runs just those steps. Offline GPU machine: benchmarks/offline_wheels.sh.
set -u
cd "$(dirname "$0")/.."

OUT_DIR="${1:-${OUT:-benchmarks/results/$(date +%Y-%m-%d_%H%M%S)}}"
mkdir -p "$OUT_DIR"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export WANDB_MODE=offline WANDB_SILENT=true PYTHONWARNINGS=ignore
BUDGET_S="${BUDGET_S:-420}"
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))

selected() {  # selected NAME: whether this run includes step NAME (ONLY=a,b or every step)
  [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]
}

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  local now left rc began
  selected "$name" || return 0
  now=$(date +%s)
  left=$((DEADLINE - now))
  if [ "$left" -lt 25 ]; then
    echo "== $name skipped: ${left}s left of the ${BUDGET_S}s budget"
    echo "{\"step\": \"$name\", \"exit\": null, \"skipped\": true}" >> "$OUT_DIR/steps.jsonl"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s, $((now - START))s into the run)"
  began=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  rc=$?
  tail -n 2 "$OUT_DIR/$name.log"
  [ "$rc" -eq 0 ] || echo "!! $name failed (exit $rc; 124 = time limit): see $OUT_DIR/$name.log"
  echo "{\"step\": \"$name\", \"exit\": $rc, \"seconds\": $(( $(date +%s) - began ))}" \
    >> "$OUT_DIR/steps.jsonl"
}

# ----------------------------------------------------------------------------- environment
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  nproc
  "$PYTHON" -c "import torch, torchvision, timm, lightning; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'timm', timm.__version__, \
'lightning', lightning.__version__); print('gpu', torch.cuda.get_device_name(0))"
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
TINY=""
DEVICE=cuda SWEEP_GPU="sweep.gpus=[0]" TRAINER=gpu REQUIRE_GPU=--require-gpu
if [ "${SMOKE:-0}" = 1 ]; then
  TINY="--tiny" DEVICE=cpu SWEEP_GPU="sweep.n_jobs=1" TRAINER=cpu REQUIRE_GPU=""
  echo "SMOKE=1: every benchmark in --tiny mode"
elif ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to $PYTHON: nothing to benchmark" >&2
  exit 2
fi

B=benchmarks
# Ordered by what issue 14 needs most, so a run cut short by BUDGET_S loses the least;
# ONLY=name,name runs just those steps (a second try after a failure or a cut).
# ---------------------------------------------------------- correctness of the GPU data path
step cuda_tests 90 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu_path.py -k cuda

# ------------------------------------------------------------- framework overhead (compile off)
step overhead_resnet50 80 "$PYTHON" $B/overhead.py --model resnet50 --batch-size 256 \
  --image-size 224 --steps 30 --warmup 5 --repeats 3 --out "$OUT_DIR" $TINY
# CIFAR-size steps, where framework cost shows (with the default callbacks: what users get)
step overhead_resnet18_32px 60 "$PYTHON" $B/overhead.py --model resnet18 --batch-size 256 \
  --image-size 32 --steps 50 --warmup 5 --repeats 3 --callbacks default --out "$OUT_DIR" $TINY

# ------------------------------------------- per-step host syncs of the default configuration
step sync_check_resnet50 60 "$PYTHON" $B/sync_check.py --model resnet50 --batch-size 128 \
  --image-size 224 --steps 20 --out "$OUT_DIR" $TINY

# ---------------------------------------------------- JPEG folder: CPU vs GPU decode vs synthetic
step datapipe_resnet50 150 "$PYTHON" $B/datapipe.py --model resnet50 --batch-size 256 \
  --image-size 224 --images 4096 --jpeg-size 500x375 --classes 100 --steps 20 --warmup 5 \
  --repeats 2 --loader-batches 6 --root "$OUT_DIR/jpegs" --out "$OUT_DIR" $TINY

step overhead_vit_b16 90 "$PYTHON" $B/overhead.py --model vit_b16 --batch-size 256 \
  --steps 25 --warmup 5 --repeats 3 --out "$OUT_DIR" $TINY

# ------------------------------------------ a sweep on the one GPU: trials one after the other
# a study of the same name would be continued (more trials): each try starts afresh
selected sweep_two_trials_one_gpu && rm -rf "$OUT_DIR/sweep"
step sweep_two_trials_one_gpu 90 "$PYTHON" train.py -m +sweeps=quick hydra.sweeper.n_trials=2 \
  "$SWEEP_GPU" data=digits trainer.max_epochs=1 logger=csv callbacks=quiet print_config=false \
  test=false "paths.output_dir=$OUT_DIR/sweep"
# what each trial's results.json says it ran on: both finished, each on the GPU it claimed
step sweep_claims 20 "$PYTHON" $B/sweep_claims.py "$OUT_DIR/sweep" --trials 2 $REQUIRE_GPU \
  --out "$OUT_DIR"

# ------------------------------------------------------------------------------ compile on
step overhead_resnet50_compile 150 "$PYTHON" $B/overhead.py --model resnet50 --compile \
  --batch-size 256 --image-size 224 --steps 30 --warmup 5 --repeats 1 --out "$OUT_DIR" $TINY

# ---------------------------------------------------------- the default callbacks on top
step overhead_resnet50_default_callbacks 60 "$PYTHON" $B/overhead.py --model resnet50 \
  --batch-size 256 --image-size 224 --steps 30 --warmup 5 --repeats 2 --callbacks default \
  --out "$OUT_DIR" $TINY
step datapipe_resnet50_default_callbacks 60 "$PYTHON" $B/datapipe.py --model resnet50 \
  --batch-size 256 --image-size 224 --images 4096 --classes 100 --steps 20 --warmup 5 \
  --repeats 1 --modes synthetic,gpu --loader-batches 2 --callbacks default \
  --root "$OUT_DIR/jpegs" --out "$OUT_DIR" $TINY

# ------------------------------------------------------------ recipes that touch CUDA code
step recipes_ema_grad_ckpt 60 "$PYTHON" train.py trainer="$TRAINER" data=digits \
  trainer.max_epochs=1 model.ema_decay=0.999 backbone.grad_checkpointing=true logger=csv \
  callbacks=quiet print_config=false "paths.output_dir=$OUT_DIR/recipes"

# ------------------------------------------------------------- inference engines on the GPU
step inference_resnet50 120 "$PYTHON" $B/inference.py --backbone resnet50 --image-size 224 \
  --batch-size 64 --device "$DEVICE" --out "$OUT_DIR" $TINY

rm -rf "$OUT_DIR/jpegs"  # 280 MB of generated images: not worth bringing back
echo "== done in $(( $(date +%s) - START ))s; results: $OUT_DIR/results.jsonl"
"$PYTHON" $B/summarize.py "$OUT_DIR/results.jsonl" | tee "$OUT_DIR/summary.md"
