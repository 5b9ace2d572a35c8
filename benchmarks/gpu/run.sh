#!/usr/bin/env bash
# Training and operator benchmarks on one GPU, without network access.
#
#   OUT=/path/for/results WHEELS=/path/to/wheels bash benchmarks/gpu/run.sh [train_bench.py options]
#
# Installs mfclip from this checkout (pip install --no-deps -e .; falls back to PYTHONPATH=src when that
# fails; SKIP_INSTALL=1 uses the mfclip already installed). --cpu-smoke checks everything on a CPU.
# Packages the machine lacks come as wheels in $WHEELS, installed with --no-index --no-deps into a
# private folder: for a stock PyTorch image these are open_clip_torch, ftfy,
# wcwidth and, where missing, pydantic, pydantic_core, annotated_types and typing_inspection. Fetch them
# elsewhere with e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d wheels open_clip_torch ftfy wcwidth pydantic pydantic_core annotated_types typing_inspection
# Results: $OUT/train_gpu.json + .md (training/inference throughput, peak memory, MFU, engine run) and
# $OUT/ops.json + .md (richest patch + SRM vs the per-sample reference, on cuda) and
# $OUT/inference_overhead.json + .md (MFCLIP's inference path against the bare open_clip ViT-B/16 tower).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/gpu/out}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
export OUT HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -n "${WHEELS:-}" ] && [ -d "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE="${TMPDIR:-/tmp}/mfclip-bench-site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -n "${SKIP_INSTALL:-}" ]; then
    echo "SKIP_INSTALL set: using the mfclip already importable by $PYTHON"
elif ! "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>"$OUT/pip-install.log"; then
    echo "pip install -e . failed (see $OUT/pip-install.log); using PYTHONPATH=src" >&2
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PYTHON" - <<'PY'
import importlib
for name in ("torch", "lightning", "torchmetrics", "open_clip", "pydantic", "mfclip"):
    module = importlib.import_module(name)
    print(f"{name:12s} {getattr(module, '__version__', '?')}")
import torch
print("device      ", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")
PY

OPS_ARGS=(--device cuda)
OVERHEAD_ARGS=(--device cuda)
for arg in "$@"; do
    # The CPU smoke run checks the scripts on a machine without a GPU.
    if [ "$arg" = "--cpu-smoke" ]; then
        OPS_ARGS=(--device cpu --quick)
        OVERHEAD_ARGS=(--device cpu --quick)
    fi
done
set -o pipefail
"$PYTHON" benchmarks/gpu/train_bench.py --out-dir "$OUT" "$@" 2>&1 | tee "$OUT/train_bench.log"
"$PYTHON" benchmarks/bench_ops.py "${OPS_ARGS[@]}" --out-dir "$OUT" 2>&1 | tee "$OUT/bench_ops.log"
"$PYTHON" benchmarks/bench_inference_overhead.py "${OVERHEAD_ARGS[@]}" --out-dir "$OUT" 2>&1 |
    tee "$OUT/bench_inference_overhead.log"
echo "results in $OUT"
