"""`unmasked compare RUN...`: one report (Markdown + self-contained HTML), objectives side by side.

Everything in it is read from files the other commands write (summary.json, knn.json,
linear.json, finetune.json, analysis/analysis.json). What is missing is computed (kNN, linear
probe, analyses) or, for fine-tuning, named with the command that would compute it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unmasked import document as doc
from unmasked.analysis import plots
from unmasked.analysis.analyze import (
    ANALYSIS_DIR,
    _uint8_images,
    _upsample,
    across_classes,
    analyze,
    fixed_sample,
)
from unmasked.analysis.attention import attention_weights
from unmasked.analysis.compute import training_compute
from unmasked.analysis.differences import config_differences
from unmasked.analysis.protocols import is_default_protocol, protocol_text
from unmasked.analysis.reconstruct import reconstructions, to_display
from unmasked.config import read_run_config
from unmasked.data.augment import eval_view
from unmasked.data.dataset import load_data
from unmasked.devices import resolve_device
from unmasked.errors import UserError
from unmasked.eval.common import base_size_for, evaluation_view
from unmasked.eval.knn import run_knn
from unmasked.eval.linear import run_linear
from unmasked.files import atomic_write_text, read_json
from unmasked.lock import run_folder_of, run_lock
from unmasked.models.vit import num_prefix_tokens
from unmasked.options import DEVICE, FLAG, opt
from unmasked.run_folder import config_from_file, load_run_objective, run_reconstructs
from unmasked.runs import load_encoder
from unmasked.sources import read_source


@dataclass
class CompareSettings:
    """What `unmasked compare` computes for its report, and where."""

    no_compute: bool = opt(False, "only report what is already computed", rule=FLAG)
    device: str = opt("auto", "'auto', 'cpu' or 'cuda'", rule=DEVICE)


def _read(path: Path):
    return read_json(path) if path.is_file() else None


def _fmt(v, digits=2, suffix=""):
    return "—" if v is None else f"{v:.{digits}f}{suffix}"


def _run_folder(run: Path) -> Path:
    if run.is_file() and (run.parent / "config.json").is_file():
        return run.parent  # a run's checkpoint.pt or encoder.safetensors: its results live beside it
    return run


def _run_data(run: Path) -> str | None:
    """The data a run (or a source's results folder) was trained or measured on, as recorded."""
    run = _run_folder(run)
    source = read_source(run) if run.is_dir() else None
    if source is not None:
        data = source.get("data")
    elif (run / "config.json").is_file():
        data = read_run_config(run / "config.json").get("data")
    else:
        return None  # collect() names what is missing
    return data if not isinstance(data, str) or data == "fashion-mnist" else os.path.realpath(data)


def check_same_data(runs: list[Path]) -> None:
    """Every column of the report is measured on its run's own data: runs on different data would
    put numbers of different datasets side by side (and the figures use the first run's images)."""
    data = {r: _run_data(r) for r in runs}
    if len({d for d in data.values() if d is not None}) > 1:
        listed = "; ".join(f"{r}: {d}" for r, d in data.items())
        raise UserError(f"compare: the runs were trained on different data ({listed}); a report compares "
                        "encoders on one dataset: compare the runs of each dataset separately")


def collect(run: Path, compute: bool, device: str, progress: bool, notes: list[str]) -> dict:
    run = _run_folder(run)
    if not run.is_dir():
        raise UserError(f"{run}: not a run folder (compare reads the results that evaluations write into "
                        "run folders; for an encoder exported elsewhere use `unmasked eval ...` and "
                        "`unmasked analyze`)")
    summary, cfg = _read(run / "summary.json"), _read(run / "config.json")
    source = read_source(run)
    if source is not None:  # a public or random encoder's results folder: no pretraining, no config
        cfg = {"objective": "random init" if source["source"].startswith("random:") else "public",
               "model": source["source"], "data": source["data"]}
    if cfg is None:
        raise UserError(f"{run}: no config.json; is this a folder written by `unmasked pretrain` (or a "
                        "results folder of a source, with source.json)?")
    if source is None:
        cfg = read_run_config(run / "config.json")  # valid JSON, but `[1, 2]` or `{}`: named, not a traceback
        config_from_file(run / "config.json")  # an objective this version lacks: named with the file
    label = f"{source['source'] if source else cfg['objective'].upper()} ({run.name})"
    entry = {"run": run, "label": label, "summary": summary, "config": cfg, "source": source, "not_saved": []}
    for name, fn, cmd in (("knn", run_knn, "eval knn"), ("linear", run_linear, "eval linear")):
        res = _read(run / f"{name}.json")
        if res is not None and not is_default_protocol(res, cfg):
            notes.append(f"{label}: {name}.json does not hold the default protocol ({protocol_text(res)}); "
                         + ("recomputed" if compute else "not shown"))
            res = None
        if res is None and compute:
            res = fn(run, device=device, progress=progress)
            entry["not_saved"] += [f"{label}: {problem}" for problem in res.get("not_saved", [])]
        elif res is None:
            notes.append(f"{label}: {name} not computed — `unmasked {cmd} {run}`")
        entry[name] = res
    entry["finetune"] = _read(run / "finetune.json")
    if entry["finetune"] is None:
        notes.append(f"{label}: fine-tuning not computed (it is the slow one) — `unmasked eval finetune {run}`")
    ana = _read(run / ANALYSIS_DIR / "analysis.json")
    if ana is None and compute:
        ana = analyze(run, device=device, progress=progress, label=label)
        entry["not_saved"] += [f"{label}: {problem}" for problem in ana.get("not_saved", [])]
    elif ana is None:
        notes.append(f"{label}: analyses not computed — `unmasked analyze {run}`")
    entry["analysis"] = ana
    if source is not None:
        entry["compute"] = None  # not pretrained here
        return entry
    try:
        entry["compute"] = training_compute(run)
    except Exception as e:  # noqa: BLE001 - a run whose step cannot be rebuilt still gets its other columns
        entry["compute"] = None
        notes.append(f"{label}: training compute not counted ({e})")
    return entry


def _compute_cell(c: dict | None) -> str:
    if not c:
        return "—"
    return (f"{c['train_flops'] / 1e15:.3g} PFLOP ({c['flops_per_image'] / 1e9:.3g} GFLOP/image x "
            f"{c['images_seen']:,}), {c['time_s'] / 60:.1f} min")


def pixel_row(entries: list[dict], width: int) -> list[str] | None:
    """The raw-pixel reference of the first run's data, in the kNN and linear columns."""
    for e in entries:
        knn, lin = e["knn"] or {}, e["linear"] or {}
        if "pixels" in knn or "pixels" in lin:
            row = ["raw pixels (reference)", "—", "—", (knn or lin).get("data", "?")] + ["—"] * (width - 4)
            row[7] = f"{knn['pixels']['top1']:.2f} %" if "pixels" in knn else "—"
            row[8] = f"{lin['pixels']['top1']:.2f} %" if "pixels" in lin else "—"
            return row
    return None


def _knn_cell(knn: dict) -> str:
    """The k = 20 column, labelled with the k actually used when the training set is smaller."""
    used = knn.get("k_used", {}).get(str(knn["headline_k"]), knn["headline_k"])
    k_note = f" (k={used}: all training images)" if used != 20 else ""
    return f"{_fmt(knn['top1']['cls'])} / {_fmt(knn['top1']['mean'])} %{k_note}"


def _distance_cell(ad: dict) -> str:
    """'3.21 px, layers 5-6 of 6 (uniform 9.80)'; files without the layer count say 'last layers'."""
    which = "last layers"
    if "last_layers_count" in ad and "per_layer" in ad:
        depth, k = len(ad["per_layer"]), ad["last_layers_count"]
        which = f"layer {depth}" if k == 1 else f"layers {depth - k + 1}-{depth}"
        which += f" of {depth}"
    return f"{ad['last_layers']:.2f} px, {which} (uniform {ad['uniform']:.2f})"


def _collect_locked(run: Path, compute: bool, device: str, progress: bool, notes: list[str]) -> dict:
    """collect() holding the run folder's lock when it may compute results into it."""
    if not compute:
        return collect(run, compute, device, progress, notes)
    with run_lock(run_folder_of(run), "compare", must_write=False):
        return collect(run, compute, device, progress, notes)


def table(entries: list[dict]) -> list[list[str]]:
    head = ["run", "objective", "model", "data", "images seen", "pretrain time", "training compute",
            "kNN k=20 CLS / mean",
            "linear CLS / mean", "fine-tune last (best epoch, chosen on test)",
            "attn. distance, last quarter of layers", "RankMe CLS / mean"]
    rows = [head]
    for e in entries:
        s, c = e["summary"] or {}, e["config"]
        knn, lin, ft, ana = e["knn"], e["linear"], e["finetune"], e["analysis"]
        rows.append([
            str(e["run"]), c["objective"], s.get("model", c.get("model", "?")), s.get("data", c["data"]),
            f"{s['images_seen']:,}" if s else "—",
            f"{s['time_s'] / 60:.1f} min on {s['device']}" if s else "—",
            _compute_cell(e.get("compute")),
            _knn_cell(knn) if knn else "—",
            f"{_fmt(lin['top1']['cls'])} / {_fmt(lin['top1']['mean'])} %" if lin else "—",
            (f"{_fmt(ft['top1']['last'])} % ({_fmt(ft['top1']['best'])} %), {ft['recipe']['epochs']} ep."
             if ft else "—"),
            _distance_cell(ana["attention_distance"]) if ana else "—",
            f"{ana['spectrum']['rankme']['cls']:.1f} / {ana['spectrum']['rankme']['mean']:.1f}" if ana else "—",
        ])
    pixels = pixel_row(entries, len(head))
    if pixels:
        rows.append(pixels)
    return rows


def differences_blocks(entries: list[dict]) -> list:
    """The settings besides the objective on which the runs differ, with a warning."""
    entries = [e for e in entries if not e.get("source")]  # a public encoder has no training settings
    diffs = config_differences([e["config"] for e in entries])
    if not diffs:
        return [doc.Paragraph("Besides the objective, the runs agree on crop, pad, lr rule and peak lr, epochs, "
                              "batch, mask ratio, precision, data, subset and seed.")]
    rows = [["setting"] + [e["label"] for e in entries]]
    rows += [[label] + ["—" if v is None else str(v) for v in values] for label, values in diffs]
    return [doc.Heading("What differs besides the objective"),
            doc.Paragraph(f"**Warning:** these runs differ in more than the objective "
                          f"({', '.join(d for d, _ in diffs)}); a gap between them is not the objective's alone. "
                          "Equal training compute is in the table above."),
            doc.Table(rows)]


def _maps_and_reconstructions(entries, out: Path, device: str, n: int = 4) -> list[str]:
    """Last-block CLS attention (mean over heads) and reconstructions of the same images, run by run."""
    dev = resolve_device(device)
    att_cols, rec_cols, inputs = [], [], None
    for e in entries:
        loaded = load_encoder(e["run"])
        enc = loaded.encoder.to(dev).eval()
        ds = load_data(loaded.data, base_size=base_size_for(loaded, loaded.data), channels=loaded.spec.in_chans,
                       progress=False)
        split = ds.heldout if ds.heldout is not None else ds.train
        sub, _ = fixed_sample(split, 1000)
        pick = across_classes(sub.labels, n) if sub.labels is not None else torch.arange(min(n, len(sub)))
        x = eval_view(_uint8_images(sub, ds.base_size, ds.channels)[pick].to(dev), loaded.spec.img_size,
                      loaded.mean, loaded.std, evaluation_view(loaded, loaded.data).crop_pct)
        if inputs is None:
            inputs = [to_display(x[b], loaded.mean, loaded.std) for b in range(len(x))]
        with torch.no_grad():
            last = attention_weights(enc, x, layers=[len(enc.blocks) - 1])[0].mean(1)
        pre = num_prefix_tokens(enc)
        att_cols.append([_upsample(last[b, 0, pre:], loaded.spec.grid, loaded.spec.patch_size) for b in range(len(x))])
        ckpt = e["run"] / "checkpoint.pt"
        if ckpt.is_file() and run_reconstructs(ckpt):
            obj, cfg = load_run_objective(ckpt, dev)
            rec = reconstructions(obj, x, obj.norm_pix_loss)
            if not rec_cols:  # every run draws the same mask (same seed, grid and ratio): show it once
                masked = [to_display(rec["masked"][b], cfg.mean, cfg.std) for b in range(len(x))]
                ratio = f"{rec['mask'].float().mean().item():.0%}"
            rec_cols.append((e["label"], [to_display(rec["pasted"][b], cfg.mean, cfg.std) for b in range(len(x))]))
    labels = [e["label"] for e in entries]
    files = []
    rows = [[inputs[b]] + [col[b] for col in att_cols] for b in range(len(inputs))]
    files.append(plots.image_grid(rows, [f"image {b + 1}" for b in range(len(rows))], ["input"] + labels,
                                  out / "attention_maps.png",
                                  "CLS-query attention of the last block, mean over heads",
                                  cmaps=["gray"] + ["inferno"] * len(labels)).name)
    if rec_cols:
        rows = [[inputs[b], masked[b]] + [c[1][b] for c in rec_cols] for b in range(len(inputs))]
        files.append(plots.image_grid(rows, [f"image {b + 1}" for b in range(len(rows))],
                                      ["original", f"masked ({ratio} hidden)"] + [lab for lab, _ in rec_cols],
                                      out / "reconstructions.png",
                                      "Reconstructions of the same masked images (visible patches pasted back)").name)
    return files


def compare(runs: list[str], out: str, compute: bool = True, device: str = "auto", progress: bool = True) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out)
    check_same_data([Path(r) for r in runs])
    try:  # before any evaluation runs
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / ".write-test", "ok")
        (out_dir / ".write-test").unlink()
    except OSError as e:
        raise UserError(f"--out {out}: the report folder is not writable ({e.strerror or e})") from None
    notes: list[str] = []
    entries = [_collect_locked(Path(r), compute, device, progress, notes) for r in runs]
    not_saved = [p for e in entries for p in e["not_saved"]]
    notes += not_saved  # in the report too
    figures = []
    with_ana = [e for e in entries if e["analysis"]]
    if with_ana:
        curves = [{"label": e["label"], "per_head": e["analysis"]["attention_distance"]["per_head"],
                   "uniform": e["analysis"]["attention_distance"]["uniform"],
                   "nmi": e["analysis"]["attention_nmi"]["per_layer"],
                   "spectra": e["analysis"]["spectrum"]["singular_values"],
                   "rankme": e["analysis"]["spectrum"]["rankme"]} for e in with_ana]
        figures.append(("Mean attention distance per layer (dots: heads)",
                        plots.attention_distance_plot(curves, out_dir / "attention_distance.png").name))
        figures.append(("Attention NMI per layer",
                        plots.layer_curve_plot(curves, "nmi", out_dir / "attention_nmi.png",
                                               "NMI(query position; key position)",
                                               "Attention NMI per layer (mean over heads)", (0, 1)).name))
        figures.append(("Singular-value spectra of the embeddings",
                        plots.spectrum_plot(curves, out_dir / "spectrum.png").name))
    for name in _maps_and_reconstructions(entries, out_dir, device):
        title = "Attention maps, side by side" if name.startswith("attention") else "Reconstructions, side by side"
        figures.append((title, name))
    rows = table(entries)
    blocks = [doc.Heading("unmasked: comparison report", 1),
              doc.Paragraph(f"Runs: {', '.join(e['label'] for e in entries)}. Generated by `unmasked compare "
                            f"{' '.join(str(e['run']) for e in entries)} --out {out}`."),
              doc.Table(rows),
              doc.Paragraph("kNN: weighted 20-NN on L2-normalised features (T = 0.07). Linear: BatchNorm + Linear "
                            "on frozen features (optimiser and recipe in each run's linear.json). Both on one "
                            "evaluation view per dataset, whatever the training crop; 'raw pixels' is the same "
                            "protocol on that view's pixels. Fine-tune: accuracy after the last epoch; the best "
                            "epoch, in brackets, is chosen on the test split (optimistic). Training compute: FLOPs "
                            "per training image (counted as `unmasked bench` counts them) x images seen, and wall "
                            "time. Attention distance: mean over the last quarter of the layers (the layers are "
                            "named in each cell), in pixels of the model input.")]
    blocks += differences_blocks(entries)
    if notes:
        blocks += [doc.Heading("Not computed"), doc.Bullets(notes)]
    blocks += [doc.Figure(title, name) for title, name in figures]
    doc.write(blocks, out_dir, "unmasked comparison")
    result = {"runs": [str(e["run"]) for e in entries], "files": ["report.md", "report.html"] + [f for _, f in figures],
              "notes": notes, "time_s": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out_dir / "report.json", json.dumps(result, indent=2) + "\n")
    if not_saved:
        result["not_saved"] = not_saved
    return result
