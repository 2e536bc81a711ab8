"""The `unmasked` command line: pretrain, eval, analyze, compare, study, embed, show, export, ..."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import MISSING

from unmasked import __version__
from unmasked.config import PretrainConfig, all_option_fields
from unmasked.errors import TrainingStopped, UserError
from unmasked.lock import run_folder_of, run_lock
from unmasked.notes import tolerate_any_encoding
from unmasked.option_rules import check_values, command_of
from unmasked.paths import refuse_out_inside_data

GROUP_TITLES = {
    "objective": "objective",
    "data": "data and augmentation",
    "model": "model",
    "training": "optimisation",
    "performance": "speed and memory",
    "run": "run control",
}

EPILOG_PRETRAIN = """examples:
  unmasked pretrain --objective lut --data fashion-mnist --out runs/lut-fm
  unmasked pretrain --objective mae --data path/to/image_folder --model vit_small --img-size 224 \\
                    --patch-size 16 --batch-size 256 --epochs 100 --mask-ratio 0.75 --out runs/mae
  unmasked pretrain --out runs/lut-fm --resume        # continue where the last checkpoint left off
  unmasked pretrain --subset 512 --steps 20 --batch-size 64 --out runs/smoke   # quick smoke run

multi-GPU / multi-node (one process per GPU, PyTorch DDP):
  torchrun --nproc_per_node=8 -m unmasked pretrain ... --batch-size 4096
"""


EVAL_SIZE_HELP = ("evaluate at this input size, a multiple of the patch size; the position embedding is "
                  "resampled bicubically to the grid (default: the encoder's own size; another size writes "
                  "its own result file)")


# pretrain's options that have no meaning for a step on synthetic data (`--steps` is bench's own)
NOT_BENCH_OPTIONS = frozenset({
    "data", "out", "init_from", "weights", "subset", "cache_gb", "num_workers", "strict", "max_image_pixels", "unlabeled",
    "save_every", "save_every_steps", "log_every", "steps", "nan", "knn_every", "tensorboard", "memory_check",
    "on_collapse",
})


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)


def _objective_group_title(group: str, option: str) -> str:
    """An objective's options form their own --help group, titled by the objectives that have them."""
    from unmasked.objectives import registry

    return f"options of {' and '.join(registry.option_owners(option))}"


def _add_config_options(parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    from unmasked.objectives import registry

    groups = {k: parser.add_argument_group(v) for k, v in GROUP_TITLES.items()}
    for f in all_option_fields():
        if f.name in skip:
            continue
        meta = f.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(_objective_group_title(meta["group"], f.name))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = meta["help"]
        own = "".join(f"; {e.name}: {_shown(e.defaults[f.name])}" for e in registry.entries()
                      if f.name in e.defaults)  # what an objective sets otherwise where it is not given
        if default is not None and not isinstance(default, bool):
            help_text += f" (default: {default}{own})"
        elif own:
            help_text += f" ({own[2:]})"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if isinstance(default, bool) or "bool" in str(f.type):
            kwargs["action"] = argparse.BooleanOptionalAction
            if isinstance(default, bool):
                kwargs["help"] = help_text + f" (default: {'on' if default else 'off'})"
        else:
            kwargs["type"] = _field_type(f)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if f.name == "objective":
                kwargs["choices"] = registry.names()
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        groups[meta["group"]].add_argument(flag, **kwargs)


def _shown(value) -> str:
    return "from the data and model" if value is None else str(value)


def _field_type(f):
    if f.metadata.get("parse"):
        return f.metadata["parse"]
    t = str(f.type)
    if "int" in t:
        return int
    if "float" in t:
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    from unmasked.objectives import registry

    objective_names = registry.names()
    parser = argparse.ArgumentParser(
        prog="unmasked",
        description="Pretrain Vision Transformer encoders with self-supervised objectives "
                    f"({', '.join(objective_names)}) and measure what they learned.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"unmasked {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("pretrain", help=f"pretrain an encoder ({', '.join(objective_names)})", formatter_class=_Formatter,
                       description=f"Pretrain a ViT encoder with {' or '.join(objective_names)}. Writes config.json, checkpoint.pt "
                                   "(atomically, every --save-every epochs and at the end), metrics.jsonl, "
                                   "encoder.safetensors (loads into timm) and summary.json into --out.",
                       epilog=EPILOG_PRETRAIN)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where its last checkpoint left it")
    p.add_argument("--knn", action="store_true", help="evaluate with kNN when pretraining ends")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_options(p)

    ev = sub.add_parser("eval", help="evaluate a pretrained encoder", formatter_class=_Formatter)
    ev_sub = ev.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    k = ev_sub.add_parser("knn", help="weighted kNN accuracy on the held-out split (DINO protocol)",
                          formatter_class=_Formatter,
                          description="kNN top-1 (and top-5) of CLS and mean-pooled patch features: cosine "
                                      "similarity, k nearest training images vote with weight exp(sim / T). "
                                      "Writes <run>/knn.json.")
    _add_eval_common(k)
    _add_source_out(k)
    k.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], metavar="K",
                   help="neighbour counts (default: 10 20 100 200; k = 20 is the headline)")
    k.add_argument("--temperature", type=float, default=0.07, help="vote temperature T (default: 0.07)")
    k.add_argument("--img-size", type=int, default=None, metavar="PX", help=EVAL_SIZE_HELP)

    lin = ev_sub.add_parser("linear", help="linear probe on frozen CLS and mean-pooled features (MAE protocol)",
                            formatter_class=_Formatter,
                            description="Frozen features are extracted once and cached in <run>/features/; a "
                                        "BatchNorm1d(affine=False) + Linear head is trained with SGD or LARS "
                                        "(momentum 0.9, no weight decay, lr = base_lr * batch / 256, warm-up + "
                                        "cosine). The "
                                        "batch is the largest power of two up to 16384 giving >= 16 steps per "
                                        "epoch. Writes <run>/linear.json and the folded heads.")
    _add_eval_common(lin)
    _add_source_out(lin)
    lin.add_argument("--epochs", type=int, default=90, help="probe epochs (default: 90)")
    lin.add_argument("--warmup-epochs", type=int, default=10, help="warm-up epochs (default: 10)")
    lin.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd",
                     help="sgd: momentum SGD (default); lars: MAE's LARS (trust coefficient 0.001), whose steps "
                          "suit ImageNet-sized datasets but under-train small ones")
    lin.add_argument("--base-lr", type=float, default=0.1, help="base lr, scaled by batch / 256 (default: 0.1)")
    lin.add_argument("--probe-batch", type=int, default=None, help="probe batch size (default: sized to the data)")
    lin.add_argument("--img-size", type=int, default=None, metavar="PX", help=EVAL_SIZE_HELP)

    ft = ev_sub.add_parser("finetune", help="full fine-tuning with layer-wise lr decay (MAE recipe)",
                           formatter_class=_Formatter,
                           description="Fine-tunes the whole encoder with a global-average-pool head (its "
                                       "fc_norm trained): AdamW, layer-wise lr decay, drop path, mixup/cutmix, "
                                       "label smoothing, and for every encoder, whatever its pretraining crop, "
                                       "MAE's augmentation: RandomResizedCrop(0.08-1) of the whole image, timm "
                                       "RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 ('pixel'). "
                                       "Reports the last epoch's "
                                       "held-out accuracy in <run>/finetune.json (and the best epoch's, "
                                       "labelled as chosen on the test split).")
    _add_eval_common(ft)
    _add_source_out(ft)
    ft.add_argument("--epochs", type=int, default=None,
                    help="epochs (default: 30 on Fashion-MNIST, else MAE's 100 for ViT-B and smaller, 50 for L, H)")
    ft.add_argument("--warmup-epochs", type=int, default=None, help="warm-up epochs (default: 5)")
    ft.add_argument("--lr-rule", choices=("mae", "lut"), default=None,
                    help="mae (default): MAE's recipe, lr = base_lr * batch / 256 with base lr 5e-4 (ViT-B) or "
                         "1e-3 (L, H) and layer decay 0.65 (B) or 0.75; lut: LUT's own rule, lr = base_lr * "
                         "sqrt(batch) / 8 with base lr 1e-3 and layer decay 0.75")
    ft.add_argument("--base-lr", type=float, default=None,
                    help="base lr, scaled as --lr-rule says (default: by size and rule, see --lr-rule)")
    ft.add_argument("--layer-decay", type=float, default=None,
                    help="layer-wise lr decay (default: by size and rule, see --lr-rule)")
    ft.add_argument("--drop-path", type=float, default=None,
                    help="stochastic depth (default by size, as MAE: ViT-B 0.1, L 0.2, H 0.3; smaller 0.1)")
    ft.add_argument("--mixup", type=float, default=None, help="mixup alpha (default: 0.8; 0 = off)")
    ft.add_argument("--cutmix", type=float, default=None, help="cutmix alpha (default: 1.0; 0 = off)")
    ft.add_argument("--label-smoothing", type=float, default=None, help="label smoothing (default: 0.1)")
    ft.add_argument("--randaug-magnitude", type=int, default=None,
                    help="timm RandAugment 'rand-m<M>-mstd0.5-inc1' magnitude (default: 9)")
    ft.add_argument("--train-batch", type=int, default=None, help="training batch size (default: 256)")
    ft.add_argument("--subset", type=int, default=None, metavar="N", help="fine-tune on N training images")
    ft.add_argument("--steps", type=int, default=None, metavar="N", help="stop after N steps (smoke tests)")

    an = sub.add_parser("analyze", help="attention distance, attention maps, NMI, spectrum, reconstructions",
                        formatter_class=_Formatter,
                        description="All analyses of one encoder on a fixed sample of held-out images, run on "
                                    "all tokens in float32. Writes JSON and PNG files into <run>/analysis/.")
    _add_eval_common(an)
    an.add_argument("--images", type=int, default=1000,
                    help="images for attention distance and NMI (default: 1000)")
    an.add_argument("--map-images", type=int, default=4, help="images shown in the figures (default: 4)")
    an.add_argument("--layers", type=int, nargs="+", default=None, metavar="L",
                    help="layers (1-based) for the patch-query attention maps (default: first, middle, last)")
    an.add_argument("--out", default=None, help="output folder (default: <run>/analysis); for a source, its "
                    "results folder (analyses in <out>/analysis)")

    cmp_ = sub.add_parser("compare", help="one report with several runs side by side (Markdown + HTML)",
                          formatter_class=_Formatter,
                          description="Table of each run's objective, model, images seen, time and accuracies; "
                                      "attention distance, NMI and spectra of all runs on shared plots; attention "
                                      "maps and reconstructions side by side. Missing kNN, linear probe and "
                                      "analyses are computed first (unless --no-compute); fine-tuning is named "
                                      "with the command that computes it.")
    cmp_.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    cmp_.add_argument("--out", required=True, help="report folder")
    cmp_.add_argument("--no-compute", action="store_true", help="only report what is already computed")
    cmp_.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: auto)")
    cmp_.add_argument("--no-progress", action="store_true", help="no progress bars")

    _add_bench_parser(sub)

    st = sub.add_parser("study", help="objectives x seeds x ablations from a TOML file -> one report",
                        formatter_class=_Formatter,
                        description="Runs every pretraining and evaluation a study file asks for as `unmasked` "
                                    "subprocesses (one run folder each, under the study folder), skips what is "
                                    "finished, resumes what is half done, then writes report.md, report.html and "
                                    "study.json: mean and std over seeds, paired differences with 95% intervals, "
                                    "attention distance and kNN-monitor curves. The study file's format is in "
                                    "the docstring of unmasked/study/spec.py; examples in studies/.",
                        epilog="examples:\n  unmasked study studies/fm-cpu.toml --dry-run\n"
                               "  unmasked study studies/fm-cpu.toml\n"
                               "  unmasked study studies/fm-cpu.toml --report-only\n"
                               "  unmasked study studies/fm-cpu.toml --report-only --results-dir results\n"
                               "  tensorboard --logdir runs/studies/fm-cpu   # with recipe tensorboard = true")
    st.add_argument("file", metavar="STUDY.toml", help="the study file")
    st.add_argument("--dry-run", action="store_true", help="list the runs, their budgets and the estimated time")
    st.add_argument("--report-only", action="store_true", help="rebuild the report from what is finished; "
                    "runs and computes nothing")
    st.add_argument("--out", default=None, help="study folder (default: the file's out, else runs/studies/<name>)")
    st.add_argument("--results-dir", default=None, metavar="DIR",
                    help="also copy study.json, report.md and the figures (text and PNG, no checkpoints) to "
                         "DIR/<study name>/, with the commit, machine and torch version, for committing "
                         "(e.g. --results-dir results)")
    st.add_argument("--device", default=None, help="device for every run and evaluation (default: the recipe's)")
    st.add_argument("--no-progress", action="store_true", help="no per-run progress bars")

    d = sub.add_parser("demo", help="an objective (default LUT) on Fashion-MNIST, then kNN, with a summary (sized to the device)",
                       formatter_class=_Formatter,
                       description="Pretrains a small ViT with --objective (default LUT) on Fashion-MNIST and evaluates it with kNN. "
                                   "On a CPU it takes about 4 minutes on 2 cores (measured alone: 3 min 45 s in all); on a GPU it trains a "
                                   "larger model for longer.")
    d.add_argument("--objective", choices=objective_names, default="lut",
                   help="objective to pretrain (default: lut)")
    d.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo); an earlier demo's run files in it are replaced, nothing else")
    d.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: auto)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.add_argument("--transcript", default=None, metavar="DIR",
                   help="also write the printed summary (transcript.txt) and its numbers with the time, commit "
                        "and machine (demo.json) into DIR, for committing (e.g. results/demo-lut)")
    _add_tool_commands(sub)
    return parser


def _add_bench_parser(sub) -> None:
    """`unmasked bench`: pretrain's options (less those of data and run control) and its own."""
    b = sub.add_parser("bench", help="time the training step on synthetic data (images/s, TFLOP/s, memory)",
                       formatter_class=_Formatter,
                       description="Times one full training step (forward, loss, backward, AdamW and the EMA "
                                   "update), the training loop's own, on synthetic input already on the device, "
                                   "after warm-up. It takes pretrain's model, objective and optimisation options "
                                   "(not given: ViT-B/16 at 224 px, 3 channels, batch 128; the rest as pretrain "
                                   "resolves them). FLOPs are counted with torch.utils.flop_counter. Runs on a "
                                   "CPU too (and says so).",
                       epilog="examples:\n  unmasked bench --objective lut --model vit_base --batch-size 128\n"
                              "  unmasked bench --objective mae --model vit_tiny --img-size 28 --patch-size 4 "
                              "--channels 1 --batch-size 512 --compile --compile-mode reduce-overhead\n"
                              "  unmasked bench --objective dinov2 --model vit_tiny --width 128 --depth 6 --heads 4 "
                              "--img-size 28 --patch-size 7 --channels 1 --batch-size 256 --dino-local-crops 4  "
                              "# the CPU demo's model\n"
                              "  unmasked bench --compare-plain ...     # plain fp32 path vs optimised, one run\n"
                              "  unmasked bench --compare-reference ... # the published code's step vs optimised\n"
                              "  unmasked bench --compare-precision ... # fp32 vs bf16 autocast, one run")
    bo = b.add_argument_group("benchmark")
    bo.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    bo.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps (default: 5)")
    bo.add_argument("--with-augment", action="store_true", help="include the batched augmentation of uint8 images")
    paths = bo.add_mutually_exclusive_group()
    paths.add_argument("--plain", dest="path", action="store_const", const="plain", default="optimised",
                       help="time only the plain path (fp32, separate views, explicit attention, per-tensor "
                            "AdamW/EMA): the exactness reference")
    paths.add_argument("--reference", dest="path", action="store_const", const="reference",
                       help="time only the published code's step with a current timm (fp16 autocast + GradScaler "
                            "on CUDA, gradient norm, separate views, SDPA, default AdamW, per-parameter EMA)")
    paths.add_argument("--compare-plain", dest="baseline", action="store_const", const="plain", default=None,
                       help="time the plain and the optimised path in one process, steps interleaved, and print "
                            "both with their ratio (median step each; each path's peak memory is taken while "
                            "the other model is not resident)")
    paths.add_argument("--compare-reference", dest="baseline", action="store_const", const="reference",
                       help="as --compare-plain, with the reference path as the baseline: the side-by-side form "
                            "of the speed targets (docs/speed.md)")
    paths.add_argument("--compare-eager", dest="baseline", action="store_const", const="eager",
                       help="with --compile: the optimised path without compile beside the compiled one (what "
                            "compile and CUDA graphs add)")
    paths.add_argument("--compare-precision", action="store_true",
                       help="the optimised path in fp32 and in bf16 autocast in one process, steps interleaved; "
                            "prints both and their ratio (what --precision auto weighs on this machine)")
    bo.add_argument("--profile", default=None, metavar="DIR",
                    help="also profile 5 steps: Chrome trace and op table in DIR, and on a GPU the fraction of "
                         "wall time spent in kernels")
    bo.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    _add_config_options(b, skip=NOT_BENCH_OPTIONS)


SOURCE_HELP = ("run folder, checkpoint.pt or encoder.safetensors; a results folder; or a source: timm:NAME, "
               "hf-hub:ORG/NAME, local-dir:PATH, random:PRESET[/PATCH] (its results go to --out)")
OUT_HELP = "a source's results folder (for timm:, hf-hub:, local-dir:, random:; read by compare and study)"


def _add_source_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help=OUT_HELP)


# ---- embed, show, export: each command's logic lives in its own module --------------------------

TOOL_SOURCE_HELP = ("run folder, checkpoint.pt or encoder.safetensors, the results folder of a public or random "
                    "encoder, or a source: timm:NAME (with --weights), hf-hub:ORG/NAME, local-dir:PATH, "
                    "random:PRESET[/PATCH] (with --data)")


def _add_tool_source_options(p) -> None:
    p.add_argument("--weights", default=None, metavar="FILE", help="timm:NAME only: load this file offline")
    p.add_argument("--img-size", type=int, default=None, help="a source's input size (default: its own; random: "
                                                               "the data's)")

def _add_tool_commands(sub) -> None:
    e = sub.add_parser("embed", help="CLS and mean-pooled embeddings of every image (safetensors + CSV)",
                       formatter_class=_Formatter,
                       description="Runs the encoder on every image of --data (training and held-out splits, "
                                   "in the evaluation view) and writes FILE.safetensors with `cls` and `mean` "
                                   "(N, D) float32 (and `labels` for labeled data), and FILE.csv with each row's "
                                   "split, image file, label and class. Features are cached by content, as the "
                                   "evaluations cache theirs.",
                       epilog="example:\n  unmasked embed runs/lut-fm --data path/to/images --out emb.safetensors")
    e.add_argument("source", metavar="SOURCE", help=TOOL_SOURCE_HELP)
    _add_tool_source_options(e)
    e.add_argument("--seed", type=int, default=0, help="a random: source's seed (default: 0)")
    e.add_argument("--data", default=None, help="dataset to embed (default: the encoder's own)")
    e.add_argument("--out", required=True, metavar="FILE", help="output .safetensors (the .csv goes beside it)")
    e.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    e.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    e.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding workers for image folders")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="skip images with more pixels than this (default: 100000000, as in pretrain)")

    s = sub.add_parser("show", help="per-image figures: CLS attention per head, PCA of patch features, "
                                    "reconstruction", formatter_class=_Formatter,
                       description="One figure per image in --out: the image as the encoder sees it, the first "
                                   "three principal components of its patch features as RGB, the last block's "
                                   "CLS-to-patch attention of every head and, for MAE / LUT runs, a masked view "
                                   "and its reconstruction. Images of any size are brought to the encoder's "
                                   "input size as --aspect says (stated in each figure).")
    s.add_argument("source", metavar="SOURCE", help=TOOL_SOURCE_HELP)
    _add_tool_source_options(s)
    s.add_argument("--data", default=None, help="random: sources: the data giving input size and normalisation")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size, any format PIL reads)")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for the figures and show.json")
    s.add_argument("--aspect", choices=("crop", "pad", "stretch"), default="crop",
                   help="crop: shorter side resized, centre kept (default); pad: longer side resized, padded "
                        "with the mean colour; stretch: aspect ratio not kept")
    s.add_argument("--seed", type=int, default=0, help="seed of the reconstruction's random mask and of a random: "
                                                       "source's weights (default: 0)")
    s.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    s.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more pixels than this (default: 100000000)")

    x = sub.add_parser("export", help="a folder timm and the Hugging Face Hub load as it is",
                       formatter_class=_Formatter,
                       description="Writes DIR/config.json (timm's architecture, model_args and pretrained_cfg "
                                   "with mean, std and input size), DIR/model.safetensors and a README.md model "
                                   "card, so that timm.create_model('local-dir:DIR', pretrained=True) builds the "
                                   "encoder with no unmasked code; checked by loading it back through timm.",
                       epilog="example:\n  unmasked export runs/lut-fm --format timm exports/lut-fm\n"
                              "  huggingface-cli upload ORG/NAME exports/lut-fm   # publish it as it is")
    x.add_argument("run", metavar="RUN", help=TOOL_SOURCE_HELP)
    x.add_argument("dir", metavar="DIR", help="folder to write")
    x.add_argument("--format", choices=("timm",), default="timm", help="export format (default: timm)")
    x.add_argument("--force", action="store_true", help="replace an export already in DIR")


def cmd_embed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unmasked.eval.embed import embed

    source = Path(args.source)
    lock = run_lock(run_folder_of(source), "embed", must_write=False) if source.exists() else _no_lock()
    with lock:
        r = embed(args.source, args.out, data=args.data, device=args.device, batch_size=args.batch_size,
                  num_workers=args.num_workers, progress=not args.no_progress, weights=args.weights,
                  img_size=args.img_size, seed=args.seed)
    split_text = ", ".join(f"{n:,} {s}" + (" (cached)" if r["cached"][s] else "") for s, n in r["splits"].items())
    print(f"embedded {r['images']:,} images of {r['data']} ({split_text}) -> {r['dim']}-d CLS and mean-pooled")
    print(f"  {r['file']}\n  {r['csv']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from unmasked.analysis.show import show

    r = show(args.source, args.images, args.out, device=args.device, aspect=args.aspect, seed=args.seed,
             weights=args.weights, img_size=args.img_size, data=args.data)
    print(f"{len(r['images'])} figure(s) in {args.out} (input {r['input_size'][0]}x{r['input_size'][1]}, "
          f"aspect: {args.aspect}): " + ", ".join(e["figure"] for e in r["images"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from unmasked.export import export_timm

    r = export_timm(args.run, args.dir, force=args.force)
    print(f"exported {args.run} to {r['folder']} ({', '.join(r['files'])}): timm {r['architecture']}, "
          f"loads with timm.create_model('local-dir:{r['folder']}', pretrained=True) "
          f"(checked: features equal to {r['max_difference']:.1e})")
    return 0


def _no_lock():
    from contextlib import nullcontext

    return nullcontext()


TOOL_COMMANDS = {"embed": cmd_embed, "show": cmd_show, "export": cmd_export}


def _add_eval_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="timm:NAME only: load this file (official .pth, .safetensors, timm file) offline instead "
                        "of downloading; never executes code from it")
    p.add_argument("--data", default=None, help="evaluate on this dataset instead of the run's own")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decoding workers for image folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="skip images with more pixels than this (default: 100000000, as in pretrain)")


def _print_knn(result: dict) -> None:
    print(f"kNN on {result['data']} ({result['train_images']:,} train -> {result['test_images']:,} "
          f"{result['test_split']} images, T = {result['temperature']})")
    ks = result["ks"]
    used = result.get("k_used", {})
    labels = [f"k={k}" if used.get(str(k), k) == k else f"k={used[str(k)]}" for k in ks]
    print("  feature  " + "".join(f"  {lab:<8}" for lab in labels))
    for kind, label in (("cls", "CLS"), ("mean", "mean-pool")):
        row = result["results"][kind]
        print(f"  {label:<9}" + "".join(f"  {row[str(k)]['top1']:6.2f}%" for k in ks))
    if "pixels" in result:  # the reference: the same kNN on the raw pixels of the same view
        row = result["pixels"]["results"]
        print(f"  {'pixels':<9}" + "".join(f"  {row[str(k)]['top1']:6.2f}%" for k in ks))
    if any(used.get(str(k), k) != k for k in ks):
        print(f"  (k above the {result['train_images']:,} training images uses all of them; the k used is shown)")
    print(f"  (top-1 accuracy on {result.get('transform', {}).get('description', 'the evaluation view')}; "
          f"top-5 and all values in {result.get('file', 'knn.json')})")


def _unsaved(result: dict) -> int:
    """After the numbers are printed: say which files could not be stored (exit 1), else exit 0."""
    for problem in result.get("not_saved", []):
        print(f"unmasked: warning: {problem}; the result above is printed but not stored", file=sys.stderr)
    return 1 if result.get("not_saved") else 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from unmasked.train.loop import pretrain

    explicit = {f.name for f in all_option_fields() if hasattr(args, f.name)}
    cfg = PretrainConfig.flat(**{name: getattr(args, name) for name in explicit})
    refuse_out_inside_data(getattr(args, "out", None), getattr(args, "data", None), args.resume)
    if args.knn and not args.resume:
        _refuse_knn_without_labels(cfg)
    summary = pretrain(cfg, resume=args.resume, explicit=explicit, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print_summary(summary)
    if summary.get("interrupted_by"):
        print(f"interrupted by {summary['interrupted_by']}: checkpoint saved at step {summary['steps']}; "
              f"continue with: unmasked pretrain --out {summary['run_dir']} --resume")
        return 130 if summary["interrupted_by"] == "SIGINT" else 143
    if args.knn:
        from unmasked.eval.knn import run_knn

        _print_knn(run_knn(summary["run_dir"], progress=not args.no_progress))
    return 0


def _refuse_knn_without_labels(cfg: PretrainConfig) -> None:
    """--knn evaluates after training: on unlabeled data it would fail only then."""
    from unmasked.data import image_folder
    from unmasked.data.dataset import is_fashion_mnist

    if cfg.data is None or is_fashion_mnist(cfg.data):
        return
    layout = "unlabeled" if cfg.unlabeled else image_folder._scan(cfg.data, False, 0.1, 0).layout
    if layout == "unlabeled":
        raise UserError(f"--knn: the kNN evaluation after pretraining needs labels, but --data {cfg.data} is "
                        "unlabeled" + (" (--unlabeled)" if cfg.unlabeled else " (no class folders / held-out "
                        "split)") + "; drop --knn, or use a labeled folder (root/<class>/... or "
                        "root/train/<class>/ + root/val/<class>/)")


def print_summary(s: dict, knn: dict | None = None) -> None:
    state = "done" if s["completed"] else f"stopped at step {s['steps']} of {s['total_steps']}"
    print(f"pretraining {state}")
    rows = [
        ("objective", s["objective"]),
        ("model", s["model"]),
        ("data", f"{s['data']} ({s['train_images']:,} training images)"),
        ("device", f"{s['device']}, {s['precision']}" + (f", {s['world_size']} processes" if s["world_size"] > 1 else "")),
        ("images seen", f"{s['images_seen']:,} ({s['epochs']} epochs, {s['steps']} steps)"),
        ("time", f"{s['time_s']:.0f} s ({s['images_per_s']:.0f} images/s"
                 + (f", data wait {s['data_wait']:.0%})" if s.get("data_wait") is not None else ")")),
    ]
    if s.get("skipped_files"):
        rows.append(("skipped files", f"{s['skipped_files']} unreadable image(s), each named in a warning above"))
    if s.get("skipped_steps"):
        rows.append(("skipped steps", f"{s['skipped_steps']} (non-finite loss, --nan skip)"))
    if knn is not None:
        rows.append((f"kNN top-1 (k={knn['headline_k']})",
                     f"CLS {knn['top1']['cls']:.2f}%, mean-pooled {knn['top1']['mean']:.2f}% "
                     f"({knn['test_images']:,} {knn['test_split']} images)"))
        if "pixels" in knn:
            rows.append(("  raw pixels", f"{knn['pixels']['top1']:.2f}% (same kNN on the pixels, the reference)"))
    rows.append(("run folder", s["run_dir"]))
    for k, v in rows:
        print(f"  {k:<18} {v}")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.protocol == "knn":
        from unmasked.eval.knn import run_knn

        if any(k < 1 for k in args.k):
            raise UserError(f"--k {' '.join(map(str, args.k))}: every k must be a positive integer")
        if args.temperature <= 0:
            raise UserError(f"--temperature {args.temperature}: must be positive")
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be a positive integer")
        result = run_knn(args.run, data=args.data, device=args.device, batch_size=args.batch_size, ks=args.k,
                         temperature=args.temperature, num_workers=args.num_workers, progress=not args.no_progress,
                         img_size=args.img_size)
        _print_knn(result)
        return _unsaved(result)
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be a positive integer")
    if args.protocol == "linear":
        from unmasked.eval.linear import run_linear

        for name in ("epochs", "probe_batch"):
            v = getattr(args, name)
            if v is not None and v < 1:
                raise UserError(f"--{name.replace('_', '-')} {v}: must be a positive integer")
        if args.warmup_epochs < 0 or args.warmup_epochs > args.epochs:
            raise UserError(f"--warmup-epochs {args.warmup_epochs}: must be in [0, --epochs {args.epochs}]")
        r = run_linear(args.run, data=args.data, device=args.device, batch_size=args.batch_size, epochs=args.epochs,
                       warmup_epochs=args.warmup_epochs, base_lr=args.base_lr, probe_batch=args.probe_batch,
                       num_workers=args.num_workers, progress=not args.no_progress, optimizer=args.optimizer,
                       img_size=args.img_size)
        print(f"linear probe on {r['data']} ({r['train_images']:,} train -> {r['test_images']:,} {r['test_split']}; "
              f"{args.optimizer.upper()}, batch {r['recipe']['batch_size']}, {r['recipe']['epochs']} epochs)")
        for kind, label in (("cls", "CLS"), ("mean", "mean-pool")):
            res = r["results"][kind]
            top5 = f", top-5 {res['top5']:.2f}%" if "top5" in res else ""
            print(f"  {label:<9}  top-1 {res['top1']:.2f}%{top5}")
        px = r["pixels"]
        top5 = f", top-5 {px['top5']:.2f}%" if "top5" in px else ""
        print(f"  {'pixels':<9}  top-1 {px['top1']:.2f}%{top5}  (the same probe on raw pixels)")
        return _unsaved(r)
    if args.protocol == "finetune":
        from unmasked.eval.finetune import run_finetune

        for name in ("epochs", "train_batch", "subset", "steps"):
            v = getattr(args, name)
            if v is not None and v < 1:
                raise UserError(f"--{name.replace('_', '-')} {v}: must be a positive integer")
        if args.train_batch is not None and args.train_batch % 2:
            raise UserError(f"--train-batch {args.train_batch}: mixup/cutmix need an even batch size")
        r = run_finetune(args.run, data=args.data, device=args.device, num_workers=args.num_workers,
                         progress=not args.no_progress, subset=args.subset, epochs=args.epochs,
                         warmup_epochs=args.warmup_epochs, base_lr=args.base_lr, layer_decay=args.layer_decay,
                         drop_path=args.drop_path, mixup=args.mixup, cutmix=args.cutmix,
                         label_smoothing=args.label_smoothing, randaug_magnitude=args.randaug_magnitude,
                         batch_size=args.train_batch, steps=args.steps, lr_rule=args.lr_rule)
        print(f"fine-tuning on {r['data']} ({r['train_images']:,} train -> {r['test_images']:,} {r['test_split']}, "
              f"{r['steps']} steps): top-1 {r['top1']['last']:.2f}% after the last epoch (best epoch "
              f"{r['best']['epoch']}: {r['top1']['best']:.2f}%, chosen on the test split, for reference only)")
        return _unsaved(r)
    raise UserError("eval needs a protocol: unmasked eval {knn,linear,finetune} RUN")


def cmd_analyze(args: argparse.Namespace) -> int:
    from unmasked.analysis.analyze import analyze

    if args.images < 1 or args.map_images < 1 or args.batch_size < 1:
        raise UserError("--images, --map-images and --batch-size must be positive integers")
    _refuse_a_file_as_folder(args.out, "--out")
    layers = None if args.layers is None else [v - 1 for v in args.layers]
    r = analyze(args.run, data=args.data, device=args.device, images=args.images, map_images=args.map_images,
                patch_layers=layers, batch_size=min(args.batch_size, 100), out=args.out,
                progress=not args.no_progress)
    ad = r["attention_distance"]
    print(f"analysis of {r['label']} on {r['images']} {r['split']} images of {r['data']}")
    print("  mean attention distance per layer (px): " + " ".join(f"{v:.1f}" for v in ad["per_layer"]))
    print(f"  last {ad['last_layers_count']} layer(s): {ad['last_layers']:.2f} px (uniform attention: "
          f"{ad['uniform']:.2f} px)")
    print("  attention NMI per layer: " + " ".join(f"{v:.2f}" for v in r["attention_nmi"]["per_layer"]))
    rk = r["spectrum"]["rankme"]
    print(f"  RankMe: CLS {rk['cls']:.1f}, mean-pooled {rk['mean']:.1f} (of {r['spectrum']['images']} images)")
    out = args.out or str(__import__("pathlib").Path(r["encoder"]).parent / "analysis")
    if not r.get("not_saved"):
        print(f"  files in {out}: analysis.json, " + ", ".join(
            f for v in r["files"].values() for f in (v if isinstance(v, list) else [v])))
    return _unsaved(r)


def cmd_compare(args: argparse.Namespace) -> int:
    from unmasked.analysis.report import compare

    _refuse_a_file_as_folder(args.out, "--out")
    r = compare(args.runs, args.out, compute=not args.no_compute, device=args.device, progress=not args.no_progress)
    print(f"report written to {args.out}/report.md and {args.out}/report.html ({len(r['files'])} files)")
    for n in r["notes"]:
        print(f"  note: {n}")
    return _unsaved(r)


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from unmasked.bench import (
        BenchOptions,
        bench,
        bench_config,
        bench_pair,
        format_result,
        pair_line,
    )

    if args.profile and (args.baseline or args.compare_precision):
        raise UserError("--profile profiles one path: drop --compare-plain/--compare-reference/--compare-eager/"
                        "--compare-precision")
    compiled = getattr(args, "compile", False)
    if args.baseline == "eager" and not compiled:
        raise UserError("--compare-eager sets the eager step beside the compiled one: add --compile")
    if compiled and args.path != "optimised":
        raise UserError("--compile applies to the optimised path; --plain and --reference time the eager "
                        "baselines (use --compare-plain/--compare-reference --compile to set one beside it)")
    if args.json:  # checked before the benchmark runs, not after
        _refuse_unwritable_file(args.json, "--json")
    typed = {f.name for f in all_option_fields() if hasattr(args, f.name)} - NOT_BENCH_OPTIONS
    cfg = bench_config(**{name: getattr(args, name) for name in typed})
    options = BenchOptions(steps=args.steps, warmup=args.warmup, path=args.path, with_augment=args.with_augment,
                           profile=args.profile, compare_precision=args.compare_precision)
    paired = args.baseline or args.compare_precision
    results = bench_pair(cfg, options, baseline=args.baseline) if paired else [bench(cfg, options)]
    for r in results:
        print(format_result(r))
    if results[0]["device_type"] == "cpu":
        print("note: measured on a CPU; GPU anchors and targets (docs) are not comparable with these figures; "
              "peak memory is measured on CUDA only")
    if len(results) == 2:
        print(pair_line(results, args.steps))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        except OSError as e:
            raise UserError(f"--json {args.json}: could not write the results ({e.strerror or e}); they are "
                            "printed above") from None
    return 0


def _refuse_unwritable_file(path: str, option: str) -> None:
    import os.path

    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a folder, expected a file name")
    if not os.path.isdir(parent):
        raise UserError(f"{option} {path}: no such folder {parent}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{option} {path}: the folder {parent} is not writable")


def _refuse_a_file_as_folder(path: str | None, option: str) -> None:
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{option} {path}: is a file, expected a folder (it is written into)")


def speedup(baseline: dict, row: dict) -> float:
    """From unrounded step times where the rows have them (a ViT-B row at 0.9 images/s would
    otherwise give 1.12x where its step times give 1.06x)."""
    if "step_s" in baseline and "step_s" in row:
        return baseline["step_s"] / row["step_s"]
    return baseline["step_ms"] / row["step_ms"]


def cmd_study(args: argparse.Namespace) -> int:
    from unmasked.study.command import run_study

    run_study(args.file, out=args.out, dry=args.dry_run, report_only=args.report_only, device=args.device,
              progress=not args.no_progress, results_dir=args.results_dir)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from unmasked.demo import run_demo

    return run_demo(args.out, device=args.device, progress=not args.no_progress,
                    objective=args.objective, transcript=args.transcript).get("exit_code", 0)


def main(argv: list[str] | None = None) -> int:
    tolerate_any_encoding()
    try:
        return _main(argv)
    except BrokenPipeError:  # `unmasked ... | head -1`: the reader left; nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 141  # 128 + SIGPIPE, as a shell reports a command ended by a closed pipe


def _resolve_source(args: argparse.Namespace) -> None:
    """A source (timm:, hf-hub:, local-dir:, random:) becomes its results folder, written now, so that
    every command downstream reads it as it reads a run folder; its input size is fixed there."""
    if args.command not in ("eval", "analyze"):
        return
    from unmasked.sources import is_source, prepare

    if not is_source(args.run):
        if args.weights:
            raise UserError(f"--weights {args.weights}: only for a timm:NAME source; {args.run} brings its own")
        return
    args.run = str(prepare(args.run, args.out, args.data, args.weights, getattr(args, "img_size", None)))
    if hasattr(args, "img_size"):
        args.img_size = None  # the encoder is built at that size
    if args.command == "analyze":
        args.out = None  # <results>/analysis


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.simplefilter("default")
    try:
        if command_of(args):
            check_values(command_of(args), args)  # every option, before any slow work
        if args.command != "pretrain" and getattr(args, "max_image_pixels", None):
            from unmasked.data.image_folder import set_max_image_pixels

            set_max_image_pixels(args.max_image_pixels)  # pretrain takes it from its config
        if args.command == "pretrain":
            return cmd_pretrain(args)
        _resolve_source(args)
        if args.command == "eval":
            with run_lock(run_folder_of(args.run), f"eval {args.protocol}", must_write=False):
                return cmd_eval(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "analyze":
            with run_lock(run_folder_of(args.run), "analyze", must_write=False):
                return cmd_analyze(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "study":
            return cmd_study(args)
        if args.command in TOOL_COMMANDS:
            return TOOL_COMMANDS[args.command](args)
    except UserError as e:
        print(f"unmasked: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"unmasked: training stopped: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("unmasked: interrupted", file=sys.stderr)
        return 130
    return 0
