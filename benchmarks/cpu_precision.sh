#!/usr/bin/env bash
# fp32 against bf16 autocast on this CPU, at the CPU demo's model (128 wide, 6 blocks, 7 px patches
# on 28 px images): what `--precision auto` finds, the timed 1024 x 1024 product behind it, and
# `unmasked bench --compare-precision` for MAE, LUT and DINOv2 (steps interleaved in one process).
# Writes benchmarks/results/cpu_precision.md. About 3 minutes on 2 cores where bf16 is emulated; run
# it alone (another heavy process on the cores skews both rates).
#   bash benchmarks/cpu_precision.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=benchmarks/results/cpu_precision.md
MODEL=(--device cpu --model vit_tiny --width 128 --depth 6 --heads 4 --img-size 28 --patch-size 7
       --channels 1 --decoder-width 128 --decoder-depth 2 --decoder-heads 4 --compare-precision --warmup 1)
DINO=(--dino-local-crops 4 --dino-local-size 14 --dino-head-hidden 512 --dino-head-bottleneck 128
      --dino-heads-k 1024)
tmp=$(mktemp)
{
  echo "# fp32 against bf16 autocast on the CPU, at the CPU demo's model"
  echo
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD); made with"
  echo "\`bash benchmarks/cpu_precision.sh\`."
  echo
  echo '```'
  "$BIN/python" - <<'EOF'
import torch
from unmasked import devices
print("cpu:", devices.cpu_model(), "|", torch.get_num_threads(), "threads | torch", torch.__version__)
print("torch CPU capability:", torch.backends.cpu.get_cpu_capability())
print("bf16 instructions torch reports:", devices.cpu_bf16_flags() or "none")
print("--precision auto:", devices.choose_precision("auto", torch.device("cpu")).name,
      "--", devices.cpu_bf16()[1])
ratio = devices.bf16_speedup(seconds=2.0)
print(f"timed 1024 x 1024 product, bf16 / fp32 speed: {ratio:.3f}x")
EOF
  echo '```'
  for obj in mae lut dinov2; do
    case $obj in
      mae) args=(--batch-size 256 --steps 2) ;;
      lut) args=(--batch-size 256 --steps 1) ;;
      dinov2) args=(--batch-size 32 --steps 1 "${DINO[@]}") ;;  # at batch 256 a bf16 step takes minutes
    esac
    echo
    echo "\`unmasked bench --objective $obj ${MODEL[*]} ${args[*]}\`"
    echo
    echo '```'
    "$BIN/unmasked" bench --objective "$obj" "${MODEL[@]}" "${args[@]}" 2>&1 | grep -v '^\s*$'
    echo '```'
  done
} > "$tmp"
mv "$tmp" "$OUT"
echo "wrote $OUT"
