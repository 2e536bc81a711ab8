"""`unmasked analyze RUN`: every analysis of one encoder, as JSON numbers and PNG figures."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from unmasked.analysis import plots
from unmasked.analysis.attention import attention_weights, patch_attention
from unmasked.analysis.distance import mean_attention_distance
from unmasked.analysis.nmi import attention_nmi
from unmasked.analysis.reconstruct import reconstructions, to_display
from unmasked.analysis.spectrum import rankme, singular_values
from unmasked.data.augment import eval_view
from unmasked.data.dataset import Split, load_data
from unmasked.devices import resolve_device
from unmasked.errors import UserError
from unmasked.eval.common import base_size_for, eval_transform, evaluation_view
from unmasked.eval.features import extract_features, iterate_split
from unmasked.eval.run_files import WRITE_ERRORS, write_problem
from unmasked.files import atomic_write_text
from unmasked.models.vit import num_prefix_tokens
from unmasked.options import opt, positive_int
from unmasked.run_folder import load_run_objective, run_reconstructs
from unmasked.runs import load_encoder
from unmasked.sources import is_source, prepare

ANALYSIS_DIR = "analysis"


@dataclass
class AnalyzeSettings:
    """`unmasked analyze`'s sample sizes and the layers its patch-query maps show."""

    images: int = opt(1000, "images for attention distance and NMI", rule=positive_int())
    map_images: int = opt(4, "images shown in the figures", rule=positive_int())
    layers: tuple[int, ...] | None = opt(None, "layers (1-based) for the patch-query attention maps (default: "
                                         "first, middle, last)", metavar="L", nargs="+", rule=positive_int())


def uniform_distance(grid: int, patch: int) -> float:
    return float(mean_attention_distance(torch.full((grid * grid, grid * grid), 1.0 / grid**2), grid, patch))


def fixed_sample(split: Split, n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """The same n images every time: the first n of a seeded permutation (decoded if needed)."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(split))[: min(n, len(split))])
    sub = split.subset(idx)
    return sub, idx


def across_classes(labels: torch.Tensor, n: int) -> torch.Tensor:
    """n positions that take the classes in turn (first image of each class, then the second, ...), so
    figures show different classes even when a sorted folder puts one class first."""
    seen: dict[int, int] = {}
    rank = []  # how many earlier images share the class
    for c in labels.tolist():
        rank.append(seen.get(c, 0))
        seen[c] = rank[-1] + 1
    order = sorted(range(len(rank)), key=lambda i: (rank[i], i))
    return torch.tensor(order[:n], dtype=torch.long)


def _uint8_images(sub: Split, base: int, channels: int) -> torch.Tensor:
    if sub.in_memory:
        return sub.images

    return torch.cat([images for images, _ in iterate_split(sub, 256, base, channels)])


@torch.no_grad()
def attention_statistics(encoder, x: torch.Tensor, batch_size: int, progress: bool) -> dict:
    """Per layer and head: mean attention distance (px) and NMI, averaged over the images."""
    spec = encoder.spec
    pre = num_prefix_tokens(encoder)
    sums_d, sums_n, count = None, None, 0
    for i in tqdm(range(0, len(x), batch_size), desc="attention", unit="batch", disable=not progress, leave=False):
        xb = x[i : i + batch_size]
        maps = attention_weights(encoder, xb)
        d = torch.stack([mean_attention_distance(patch_attention(a, pre), spec.grid, spec.patch_size).sum(0)
                         for a in maps])
        n = torch.stack([attention_nmi(patch_attention(a, pre)).sum(0) for a in maps])
        sums_d = d if sums_d is None else sums_d + d
        sums_n = n if sums_n is None else sums_n + n
        count += xb.shape[0]
    dist = (sums_d / count).cpu().numpy()
    nmi = (sums_n / count).cpu().numpy()
    return {"distance_per_head": dist, "nmi_per_head": nmi}


def _upsample(m: torch.Tensor, grid: int, patch: int) -> np.ndarray:
    m = m.reshape(grid, grid).float()
    m = (m - m.min()) / (m.max() - m.min()).clamp(min=1e-12)
    return np.kron(m.cpu().numpy(), np.ones((patch, patch)))


@torch.no_grad()
def attention_map_figures(encoder, x, mean, std, out: Path, label: str, patch_layers: list[int]) -> list[str]:
    spec = encoder.spec
    g, p = spec.grid, spec.patch_size
    pre = num_prefix_tokens(encoder)
    depth = len(encoder.blocks)
    maps = attention_weights(encoder, x, layers=sorted(set([depth - 1, *patch_layers])))
    by_layer = dict(zip(sorted(set([depth - 1, *patch_layers])), maps))
    last = by_layer[depth - 1]  # (B, H, 1 + L, 1 + L)
    rows, row_labels = [], []
    for b in range(x.shape[0]):
        cls_to_patch = last[b, :, 0, pre:]
        rows.append([to_display(x[b], mean, std)] + [_upsample(cls_to_patch[h], g, p) for h in range(last.shape[1])])
        row_labels.append(f"image {b + 1}")
    cols = ["input"] + [f"head {h + 1}" for h in range(last.shape[1])]
    files = [plots.image_grid(rows, row_labels, cols, out / "attention_maps_cls.png",
                              f"{label}: CLS-query attention of the last block (layer {depth}), per head",
                              cmaps=["gray"] + ["inferno"] * last.shape[1]).name]
    q = (g // 2) * g + g // 2  # the patch at the centre
    rows, marks = [], []
    for b in range(x.shape[0]):
        row = [to_display(x[b], mean, std)]
        mrow = [((g // 2) * p, (g // 2) * p, p)]
        for lay in patch_layers:
            a = patch_attention(by_layer[lay][b], pre).mean(0)  # heads averaged, (L, L)
            row.append(_upsample(a[q], g, p))
            mrow.append(((g // 2) * p, (g // 2) * p, p))
        rows.append(row)
        marks.append(mrow)
    cols = ["input (query marked)"] + [f"layer {lay + 1}" for lay in patch_layers]
    files.append(plots.image_grid(rows, row_labels, cols, out / "attention_maps_patch.png",
                                  f"{label}: attention of the centre patch (red square), mean over heads",
                                  cmaps=["gray"] + ["inferno"] * len(patch_layers), marks=marks).name)
    return files


def reconstruction_figure(run: Path, x: torch.Tensor, device, out: Path, label: str) -> str | None:
    ckpt_file = run / "checkpoint.pt" if run.is_dir() else run
    if not ckpt_file.is_file() or ckpt_file.suffix != ".pt" or not run_reconstructs(ckpt_file):
        return None
    obj, cfg = load_run_objective(ckpt_file, device)
    rec = reconstructions(obj, x.to(device), obj.norm_pix_loss)
    rows = []
    for b in range(x.shape[0]):
        rows.append([to_display(rec[k][b], cfg.mean, cfg.std)
                     for k in ("original", "masked", "reconstruction", "pasted")])
    cols = ["original", f"masked ({obj.mask_ratio:.0%} hidden)", "reconstruction", "reconstruction + visible"]
    note = ", de-normalised (norm_pix_loss)" if obj.norm_pix_loss else ""
    return plots.image_grid(rows, [f"image {b + 1}" for b in range(x.shape[0])], cols, out / "reconstructions.png",
                            f"{label}: reconstructions{note}").name


def _results(loaded, ds, label: str, split_name: str, x, dist, nmi, uniform: float, last_k: int,
             spectrum_images: int, spectra: dict, ranks: dict) -> dict:
    """analysis.json's numbers (the figures' file names are added to it)."""
    return {
        "transform": eval_transform(loaded, ds),  # the evaluation view, as in knn.json
        "encoder": str(loaded.source),
        "objective": loaded.objective,
        **({"source": loaded.source_info} if loaded.source_info else {}),
        "label": label,
        "data": ds.name,
        "split": split_name,
        "images": int(x.shape[0]),
        "img_size": loaded.encoder.spec.img_size,
        "patch_size": loaded.encoder.spec.patch_size,
        "attention_distance": {
            "units": "pixels of the model input",
            "definition": "prefix tokens (CLS, registers) dropped, rows renormalised, all tokens, float32; "
                          "mean over images",
            "per_head": dist.tolist(),
            "per_layer": dist.mean(1).tolist(),
            "last_layers": float(dist[-last_k:].mean()),
            "last_layers_count": last_k,
            "uniform": uniform,
        },
        "attention_nmi": {"per_head": nmi.tolist(), "per_layer": nmi.mean(1).tolist(),
                          "last_layers": float(nmi[-last_k:].mean())},
        "spectrum": {"images": int(spectrum_images), "centred": True, "singular_values": spectra, "rankme": ranks},
    }


def _figures(out: Path, label: str, dist, uniform: float, nmi, spectra: dict, ranks: dict, enc, x, sub, map_images: int,
             loaded, patch_layers: list[int], path, dev, not_saved: list[str]) -> dict:
    """The figures of one encoder in `out`: {kind: file name}. A failed write (read-only folder, full
    disk) is added to `not_saved` and stops the rest, which would fail alike."""
    run_entry = {"label": label, "per_head": dist, "uniform": uniform, "nmi": nmi.mean(1), "spectra": spectra,
                 "rankme": ranks}
    maps_x = x[across_classes(sub.labels, map_images)] if sub.labels is not None else x[:map_images]
    figures = {
        "attention_distance": (out / "attention_distance.png", lambda: plots.attention_distance_plot(
            [run_entry], out / "attention_distance.png", f"{label}: mean attention distance").name),
        "attention_nmi": (out / "attention_nmi.png", lambda: plots.layer_curve_plot(
            [run_entry], "nmi", out / "attention_nmi.png", "NMI(query position; key position)",
            f"{label}: attention NMI per layer (mean over heads)", (0, 1)).name),
        "spectrum": (out / "spectrum.png", lambda: plots.spectrum_plot([run_entry], out / "spectrum.png").name),
        "attention_maps": (out / "attention_maps_*.png", lambda: attention_map_figures(
            enc, maps_x, loaded.mean, loaded.std, out, label, patch_layers)),
        "reconstructions": (out / "reconstructions.png", lambda: reconstruction_figure(
            Path(path) if Path(path).is_file() else loaded.run_dir, maps_x, dev, out, label)),
    }
    files = {}
    for key, (where, draw) in figures.items():
        if not_saved:
            break  # one folder: after one failed write the others fail alike
        try:
            name = draw()
        except WRITE_ERRORS as e:
            not_saved.append(write_problem(where, e) + "; the other analysis files were not written either")
            break
        if name:
            files[key] = name
    return files


def analyze(path, data: str | None = None, device: str = "auto", images: int = 1000, map_images: int = 4,
            patch_layers: list[int] | None = None, spectrum_images: int = 10_000, batch_size: int = 100,
            out: str | Path | None = None, progress: bool = True, label: str | None = None,
            weights: str | None = None) -> dict:
    """`path`: a run folder or file, a results folder, or a source string (whose results folder is
    `out`, the analyses then going to <out>/analysis)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    if is_source(str(path)):
        path = prepare(str(path), out, data, weights)
        out = None
    loaded = load_encoder(path)
    enc = loaded.encoder.to(dev).eval().float()
    spec = enc.spec
    depth = len(enc.blocks)
    if patch_layers is None:
        patch_layers = sorted({0, depth // 2 - 1, depth - 1})
    bad = [layer for layer in patch_layers if not 0 <= layer < depth]
    if bad:  # checked before the slow work, not after it
        raise UserError(f"--layers {' '.join(str(b + 1) for b in bad)}: the encoder has layers 1-{depth}")
    data = data or loaded.data
    ds = load_data(data, base_size=base_size_for(loaded, data), channels=spec.in_chans, progress=progress)
    split = ds.heldout if ds.heldout is not None and len(ds.heldout) else ds.train
    split_name = ds.heldout_name if split is ds.heldout else "train"
    out = Path(out) if out else loaded.run_dir / ANALYSIS_DIR
    not_saved: list[str] = []  # a read-only run folder or a full disk costs the files, not the numbers
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        not_saved.append(write_problem(out, e))
    label = label or (f"{loaded.source_info['name']} ({loaded.run_dir.name})" if loaded.source_info
                      else f"{loaded.objective.upper()} ({loaded.run_dir.name})")

    sub, _ = fixed_sample(split, images)
    x = eval_view(_uint8_images(sub, ds.base_size, ds.channels).to(dev), spec.img_size, loaded.mean, loaded.std,
                  evaluation_view(loaded, data).crop_pct)
    stats = attention_statistics(enc, x, batch_size, progress)
    dist, nmi = stats["distance_per_head"], stats["nmi_per_head"]
    uniform = uniform_distance(spec.grid, spec.patch_size)
    last_k = max(1, depth // 4)

    spec_sub, _ = fixed_sample(split, spectrum_images, seed=1)
    feats = extract_features(enc, spec_sub, loaded.mean, loaded.std, evaluation_view(loaded, data).crop_pct, dev,
                             base=ds.base_size, channels=ds.channels, progress=progress, desc="features (spectrum)")
    spectra = {k: singular_values(feats[k]).tolist() for k in ("cls", "mean")}
    ranks = {k: rankme(feats[k]) for k in ("cls", "mean")}

    results = _results(loaded, ds, label, split_name, x, dist, nmi, uniform, last_k, len(spec_sub), spectra, ranks)
    results["files"] = _figures(out, label, dist, uniform, nmi, spectra, ranks, enc, x, sub, map_images, loaded,
                                patch_layers, path, dev, not_saved)
    results["time_s"] = round(time.perf_counter() - t0, 1)
    if not not_saved:
        try:
            atomic_write_text(out / "analysis.json", json.dumps(results, indent=1) + "\n")
        except WRITE_ERRORS as e:
            not_saved.append(write_problem(out / "analysis.json", e))
    if not_saved:
        results["not_saved"] = not_saved  # after the write: a stored analysis.json never carries it
    return results



