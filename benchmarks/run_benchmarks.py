"""Throughput table for README: `unmasked bench` for MAE and LUT at ViT-B/16 (224 px, batch 128) and
ViT-Tiny/4 on 28 px Fashion-MNIST-sized input, on the current device. On a GPU the eager optimised
step is timed beside the published code's step (the reference path: the speed targets as a ratio
measured side by side), then compiled; on a CPU beside the plain fp32 path.

    python benchmarks/run_benchmarks.py            # GPU: full sizes; CPU: reduced batches (stated in each row)
    python benchmarks/run_benchmarks.py --quick    # fewer timed steps
    python benchmarks/run_benchmarks.py --only compile lut   # a subset of the cases
    python benchmarks/run_benchmarks.py --merge gpu-out/results.json   # add another machine's rows

Appends to benchmarks/results.json and rewrites benchmarks/results.md from all rows, so rows from
different machines and dates stay side by side; every row names its device, torch version and date.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def cases(gpu: bool, quick: bool):
    """Eager pairs first, compiled cases last (small models first: their CUDA graphs are the lever
    they need): a run cut short by a time limit keeps the most telling rows."""
    base = ["--model", "vit_base", "--img-size", "224", "--patch-size", "16"]
    tiny = ["--model", "vit_tiny", "--img-size", "28", "--patch-size", "4", "--channels", "1", "--with-augment"]
    if gpu:
        steps = ["--steps", "5" if quick else "20", "--warmup", "3" if quick else "5"]
        for obj in ("lut", "mae"):
            yield ["--objective", obj, *base, "--batch-size", "128", "--compare-reference", *steps]
        for obj in ("lut", "mae"):
            yield ["--objective", obj, *tiny, "--batch-size", "512", "--compare-reference", *steps]
        for obj in ("lut", "mae"):  # CUDA graphs, the lever for the launch-bound small model, beside eager
            yield ["--objective", obj, *tiny, "--batch-size", "512", "--compile", "--compile-mode", "reduce-overhead",
                   "--compare-eager", *steps]
        for obj in ("lut", "mae"):
            yield ["--objective", obj, *base, "--batch-size", "128", "--compile", "--compare-eager", *steps]
    else:  # a CPU: ViT-B at a batch it can finish; every optimised row beside the plain path
        for obj in ("lut", "mae"):
            yield ["--objective", obj, *base, "--batch-size", "8", "--compare-plain",
                   "--steps", "1" if quick else "2", "--warmup", "1"]
        tiny_steps = ["--steps", "3" if quick else "5", "--warmup", "2" if quick else "3"]
        for obj in ("lut", "mae"):
            yield ["--objective", obj, *tiny, "--batch-size", "128", "--compare-plain", *tiny_steps]
        # the GPU default, fused LUT views, on a CPU: same FLOPs in fewer dispatched ops
        yield ["--objective", "lut", *tiny, "--batch-size", "128", "--compare-plain", "--fuse-views", *tiny_steps]
        for obj in ("lut", "mae"):
            yield ["--objective", obj, *tiny, "--batch-size", "128", "--compare-plain", "--compile", *tiny_steps]


def run_case(args: list[str], device: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "unmasked", "bench", "--device", device, *args, "--json", str(out)]
        print("$ unmasked bench " + " ".join(args), flush=True)
        r = subprocess.run(cmd, text=True, capture_output=True)
        print(r.stdout, end="", flush=True)
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            return []
        rows = json.loads(out.read_text())
    for row in rows:  # both rows of a --compare-* pair come from this one command
        row["command"] = "unmasked bench " + " ".join(args)
    if len(rows) == 2:
        # from the unrounded step times: rounded images/s (0.9 for ViT-B on a CPU) distort the ratio
        base, new = rows[0].get("step_s", rows[0]["step_ms"]), rows[1].get("step_s", rows[1]["step_ms"])
        rows[1]["speedup"] = round(base / new, 2)
        rows[1]["baseline"] = rows[0]["path"]
    return rows


def markdown(rows: list[dict]) -> str:
    head = ["date", "device", "torch", "objective", "model", "px", "batch", "path", "dtype", "images/s",
            "vs baseline", "TFLOP/step", "TFLOP/s", "ATen ops/step", "peak GiB"]
    lines = ["# Training-step throughput", "",
             "Produced by `python benchmarks/run_benchmarks.py` (each row: `unmasked bench`, synthetic input on "
             "the device, one full step: forward, loss, backward, AdamW, EMA). Ratios are measured side by side "
             "in one process; compare absolute figures only between rows of the same device. Paths: optimised (what "
             "training runs), plain (fp32 exactness reference), reference (the published MAE/LUT step with a current "
             "timm: fp16 + GradScaler, gradient norm, separate views, SDPA, default AdamW, per-parameter EMA; "
             "the step behind the fused "
             "anchors of docs/performance.md). ATen ops/step: the "
             "non-view ops an eager step dispatches, about one kernel launch each on a GPU (what a launch-bound "
             "small model pays for); not counted for compiled steps. "
             "Peak GiB: torch.cuda.max_memory_allocated over one step "
             "(CUDA only); under CUDA graphs the graph pool may not show there, so the JSON also keeps the peak "
             "reserved.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mem = "—" if r.get("peak_memory_gib") is None else f"{r['peak_memory_gib']:.1f}"
        lines.append("| " + " | ".join([
            r["date"], r["device"], r["torch"], r["objective"].upper(), r["model"], str(r["img_size"]),
            str(r["batch_size"]), f"{r['path']}: {r['options']}", r["dtype"], f"{r['images_per_s']:,.1f}",
            f"{r['speedup']:.2f}x ({r['baseline']})" if r.get("speedup") else "—",
            f"{r['tflop_per_step']:.3f}", f"{r['achieved_tflops']:.2f}",
            f"{r['aten_ops_per_step']:,}" if r.get("aten_ops_per_step") else "—", mem]) + " |")
    lines += ["", "Commands (with `--compare-plain`, `--compare-reference` or `--compare-eager`, one command times "
              "both rows of a pair, interleaved):", ""]
    lines += sorted({f"- `{r['command']}`" for r in rows}) + [""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--out", default=str(HERE / "results"), help="results path stem (.json, .md)")
    ap.add_argument("--only", nargs="+", metavar="WORD", default=[],
                    help="run only the cases whose arguments contain every WORD (e.g. --only compile mae)")
    ap.add_argument("--skip", nargs="+", metavar="WORD", default=[],
                    help="leave out the cases whose arguments contain every WORD (e.g. --skip vit_base compile)")
    ap.add_argument("--list", action="store_true", help="print the cases that would run, and stop")
    ap.add_argument("--merge", metavar="JSON", default=None,
                    help="run nothing: add the rows of another results JSON (e.g. from a GPU machine) to the "
                         "table, then rewrite the Markdown")
    args = ap.parse_args()
    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    stem = Path(args.out)
    old = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").is_file() else []
    new = []
    if args.merge:
        if args.only or args.skip or args.list:
            ap.error("--merge runs nothing: it takes no --only, --skip or --list")
        fresh = []
        for row in json.loads(Path(args.merge).read_text()):
            if row not in old and row not in fresh:
                fresh.append(row)
        table = markdown(old + fresh)  # a malformed row fails here, before anything is written
        stem.with_suffix(".json").write_text(json.dumps(old + fresh, indent=2) + "\n")
        stem.with_suffix(".md").write_text(table)
        print(f"merged {len(fresh)} new rows from {args.merge} into {stem.with_suffix('.json')}")
        return 0

    def has_all(case, words):
        return bool(words) and all(w in " ".join(case) for w in words)

    todo = [c for c in cases(gpu, args.quick)
            if (not args.only or has_all(c, args.only)) and not has_all(c, args.skip)]
    if not todo:
        ap.error(f"no case left after --only {' '.join(args.only)} --skip {' '.join(args.skip)}")
    if args.list:
        print("\n".join("unmasked bench " + " ".join(c) for c in todo))
        return 0
    for case in todo:
        new += run_case(case, args.device)
        # written after every case, so a run cut short by a time limit keeps what it measured
        stem.with_suffix(".json").write_text(json.dumps(old + new, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(old + new))
    print(f"wrote {stem.with_suffix('.md')} ({len(new)} new rows)")
    return 0 if new else 1


if __name__ == "__main__":
    raise SystemExit(main())
