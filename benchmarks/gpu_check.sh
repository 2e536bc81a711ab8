#!/usr/bin/env bash
# The GPU checks, for a lent GPU machine (no network, at most 600 s per command, 15 min in all, at
# most 8 small files back from $OUT). Run from the repository root, one stage per call:
#   mkdir -p .carry/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .carry/fashion-mnist/
#   OUT=/some/dir bash benchmarks/gpu_check.sh bench     # <= 7 min: ViT-B/16 and ViT-Tiny/4, MAE and LUT,
#                                                        # eager beside the published-style reference, CUDA
#                                                        # graphs beside eager (tiny), profile of the tiny step
#   OUT=/some/dir bash benchmarks/gpu_check.sh compile   # <= 7 min: ViT-B/16 torch.compile beside eager
#   OUT=/some/dir bash benchmarks/gpu_check.sh demo      # <= 7 min: 2-epoch Fashion-MNIST runs (eager + kNN,
#                                                        # CUDA graphs), eager profile, speed-path tests
# With 15 device minutes per session (machine start included) one or two stages fit: `bench` first.
# Back here: python benchmarks/run_benchmarks.py --merge <files_at>/results.json adds the GPU rows to
# benchmarks/results.{json,md}.
# Each stage has its own time limit, so a slow one cannot starve the rest; run folders, traces and
# caches go to /tmp and only logs and the results table land in $OUT.
set -u
STAGE=${1:-bench}
OUT=${OUT:-gpu-out}
# a fresh work folder per stage: a rerun on a warm machine must not meet the last run's folders
WORK=${WORK:-/tmp/unmasked-gpu}/$STAGE
rm -rf "$WORK"
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
    # eager steps beside the published-style reference (ViT-B/16 and ViT-Tiny/4), then CUDA graphs
    # beside eager for ViT-Tiny/4; ViT-B compile cases are the `compile` stage
    timeout 300 "$PY" benchmarks/run_benchmarks.py --quick --skip vit_base compile --out "$OUT/results" \
      > "$OUT/bench.log" 2>&1
    echo "run_benchmarks exit $?" >> "$OUT/bench.log"
    # the launch-bound case, compiled with CUDA graphs: how much of the wall time the GPU computes
    timeout 120 "$PY" -m unmasked bench --objective lut --model vit_tiny --img-size 28 --patch-size 4 --channels 1 \
      --batch-size 512 --with-augment --compile --compile-mode reduce-overhead --steps 10 --warmup 5 \
      --profile "$WORK/profile-tiny-lut" > "$OUT/profile.log" 2>&1
    echo "profile exit $?" >> "$OUT/profile.log"
    cp "$WORK/profile-tiny-lut/ops.txt" "$OUT/profile-ops.txt" 2>/dev/null
    ;;
  compile)
    timeout 400 "$PY" benchmarks/run_benchmarks.py --quick --only vit_base compile --out "$OUT/results" \
      > "$OUT/bench-compile.log" 2>&1
    echo "run_benchmarks exit $?" >> "$OUT/bench-compile.log"
    ;;
  demo)
    # the real training loop on Fashion-MNIST held on the GPU as uint8: 2 epochs eager, then kNN
    timeout 120 "$PY" -m unmasked pretrain --device cuda --model vit_tiny --batch-size 512 --epochs 2 \
      --no-progress --out "$WORK/eager" > "$OUT/pretrain-eager.log" 2>&1 \
      && timeout 60 "$PY" -m unmasked eval knn "$WORK/eager" --no-progress >> "$OUT/pretrain-eager.log" 2>&1
    echo "pretrain + knn exit $?" >> "$OUT/pretrain-eager.log"
    # the same with student and teacher compiled into CUDA graphs
    timeout 120 "$PY" -m unmasked pretrain --device cuda --model vit_tiny --batch-size 512 --epochs 2 --compile \
      --compile-mode reduce-overhead --no-progress --out "$WORK/cuda-graphs" > "$OUT/pretrain-cuda-graphs.log" 2>&1
    echo "pretrain exit $?" >> "$OUT/pretrain-cuda-graphs.log"
    # the tiny step eager, for the profile's contrast (launch-bound without CUDA graphs)
    timeout 45 "$PY" -m unmasked bench --objective lut --model vit_tiny --img-size 28 --patch-size 4 --channels 1 \
      --batch-size 512 --with-augment --steps 10 --warmup 3 --profile "$WORK/profile-eager" > "$OUT/profile-eager.log" 2>&1
    echo "profile exit $?" >> "$OUT/profile-eager.log"
    cp "$WORK/profile-eager/ops.txt" "$OUT/profile-eager-ops.txt" 2>/dev/null
    # the speed-path tests (the CPU compile tests are left out: minutes of CPU compilation)
    timeout 60 "$PY" -m pytest -q -p no:cacheprovider -k "not compiled" tests/test_bench.py tests/test_devices.py \
      tests/objectives > "$OUT/tests.log" 2>&1
    echo "pytest exit $?" >> "$OUT/tests.log"
    ;;
  *) echo "unknown stage $STAGE: expected bench, compile or demo" >&2; exit 2 ;;
esac
ls -la "$OUT"
