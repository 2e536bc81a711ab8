#!/usr/bin/env bash
# The GPU checks in one script, for a lent GPU machine (see DEVELOPERS' device notes): run from the
# repository root with the Fashion-MNIST IDX files carried in .carry/fashion-mnist (git-ignored):
#   mkdir -p .carry/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .carry/fashion-mnist/
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# Everything it measures lands in $OUT: the benchmark table (ViT-B/16 and ViT-Tiny/4, MAE and LUT,
# beside the plain path and with torch.compile), a profile of the tiny LUT step (GPU busy fraction),
# the GPU demo (pretraining + kNN) and the speed-path tests.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export UNMASKED_FASHION_MNIST=${UNMASKED_FASHION_MNIST:-$PWD/.carry/fashion-mnist}
# The GPU machine has no network: build without an isolated build environment when pip cannot
# fetch one, and fall back to running from the source tree.
pip install --quiet --no-deps -e . > "$OUT/install.log" 2>&1 \
  || pip install --quiet --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1 \
  || export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi; python -c "import torch, timm; print(torch.__version__, timm.__version__)"; } > "$OUT/env.txt" 2>&1
python benchmarks/run_benchmarks.py --quick --out "$OUT/results" > "$OUT/bench.log" 2>&1
python -m unmasked bench --objective lut --model vit_tiny --img-size 28 --patch-size 4 --channels 1 --batch-size 512 \
    --with-augment --profile "$OUT/profile-tiny-lut" --json "$OUT/profile-tiny-lut.json" > "$OUT/profile.log" 2>&1
timeout 420 python -m unmasked demo --out "$OUT/demo" --no-progress > "$OUT/demo.log" 2>&1
python -m pytest -q tests/test_bench.py tests/objectives > "$OUT/tests.log" 2>&1
echo "done: $(ls "$OUT")"
