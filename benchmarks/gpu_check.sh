#!/usr/bin/env bash
# The GPU checks, for a lent GPU machine (no network, at most 600 s per command, 15 min in all, at
# most 8 small files back from $OUT). Run from the repository root, one stage per call:
#   mkdir -p .carry/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .carry/fashion-mnist/
#   OUT=/some/dir bash benchmarks/gpu_check.sh bench   # <= 7 min: benchmark table (ViT-B/16, ViT-Tiny/4,
#                                                      # MAE and LUT, vs plain, then CUDA graphs and compile)
#                                                      # + profile of the compiled tiny LUT step
#   OUT=/some/dir bash benchmarks/gpu_check.sh demo    # <= 7 min: the GPU demo, a CUDA-graph training run,
#                                                      # the eager profile, the speed-path tests
# With 15 device minutes per session (machine start included), run `bench` first; `demo` may have to
# wait for the next session.
# Each stage has its own time limit, so a slow one cannot starve the rest; run folders, traces and
# caches go to /tmp and only logs and the results table land in $OUT.
set -u
STAGE=${1:-bench}
OUT=${OUT:-gpu-out}
WORK=${WORK:-/tmp/unmasked-gpu}
mkdir -p "$OUT" "$WORK"
export UNMASKED_FASHION_MNIST=${UNMASKED_FASHION_MNIST:-$PWD/.carry/fashion-mnist}
PY=$(command -v python3 || command -v python)
{
  # no network there: never let pip look for an index or an isolated build environment (its retries
  # would eat device minutes); without a local build backend, run from src/
  "$PY" -m pip install --quiet --no-deps --no-index --no-build-isolation -e . \
    || { echo "pip install failed: running from src/"; export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}; }
  nvidia-smi
  "$PY" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
} > "$OUT/env-$STAGE.txt" 2>&1
case "$STAGE" in
  bench)
    timeout 300 "$PY" benchmarks/run_benchmarks.py --quick --out "$OUT/results" > "$OUT/bench.log" 2>&1
    echo "run_benchmarks exit $?" >> "$OUT/bench.log"
    # the launch-bound case, compiled with CUDA graphs: how much of the wall time the GPU computes
    timeout 120 "$PY" -m unmasked bench --objective lut --model vit_tiny --img-size 28 --patch-size 4 --channels 1 \
      --batch-size 512 --with-augment --compile --compile-mode reduce-overhead --steps 10 --warmup 5 \
      --profile "$WORK/profile-tiny-lut" > "$OUT/profile.log" 2>&1
    echo "profile exit $?" >> "$OUT/profile.log"
    cp "$WORK/profile-tiny-lut/ops.txt" "$OUT/profile-ops.txt" 2>/dev/null
    ;;
  demo)
    timeout 150 "$PY" -m unmasked demo --out "$WORK/demo" --no-progress > "$OUT/demo.log" 2>&1
    echo "demo exit $?" >> "$OUT/demo.log"
    # the training loop itself with CUDA graphs (student and teacher), a few logged steps
    timeout 120 "$PY" -m unmasked pretrain --device cuda --model vit_tiny --batch-size 512 --compile \
      --compile-mode reduce-overhead --steps 40 --log-every 10 --no-progress --out "$WORK/cuda-graphs" \
      > "$OUT/pretrain-cuda-graphs.log" 2>&1
    echo "pretrain exit $?" >> "$OUT/pretrain-cuda-graphs.log"
    # the same tiny step eager, for the profile's contrast (launch-bound without CUDA graphs)
    timeout 45 "$PY" -m unmasked bench --objective lut --model vit_tiny --img-size 28 --patch-size 4 --channels 1 \
      --batch-size 512 --with-augment --steps 10 --warmup 3 --profile "$WORK/profile-eager" > "$OUT/profile-eager.log" 2>&1
    echo "profile exit $?" >> "$OUT/profile-eager.log"
    cp "$WORK/profile-eager/ops.txt" "$OUT/profile-eager-ops.txt" 2>/dev/null
    # the speed-path tests (the CPU compile tests are left out: minutes of CPU compilation)
    timeout 75 "$PY" -m pytest -q -p no:cacheprovider -k "not compiled" tests/test_bench.py tests/test_devices.py \
      tests/objectives > "$OUT/tests.log" 2>&1
    echo "pytest exit $?" >> "$OUT/tests.log"
    ;;
  *) echo "unknown stage $STAGE: expected bench or demo" >&2; exit 2 ;;
esac
ls -la "$OUT"
