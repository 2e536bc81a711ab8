"""`unmasked show SOURCE IMAGE... --out DIR`: what an encoder makes of your own images, one figure each.

Each figure shows the image as the encoder sees it; the first three principal components of its
patch features as RGB (PCA over the patches of that image, as in the DINOv2 paper's Figure 1,
without its foreground threshold); the last block's CLS-to-patch attention of every head
(recomputed from the block's own qkv, prefix tokens such as registers dropped, renormalised over
the patches); and, for runs whose objective reconstructs (MAE, LUT), a masked view with its
reconstruction. An image of any size is brought to the encoder's input size, as `--aspect` says
and the figure states: `crop` (default) resizes the shorter side and keeps the centre, `pad`
resizes the longer side and pads with the normalisation mean, `stretch` ignores the aspect ratio.
`show.json` in DIR lists each image with its figure and what was done to it.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unmasked.analysis.attention import attention_weights
from unmasked.analysis.reconstruct import reconstructions, to_display
from unmasked.data import image_folder
from unmasked.devices import resolve_device
from unmasked.errors import UserError
from unmasked.files import atomic_write_text
from unmasked.options import CHOICE, count, opt
from unmasked.run_folder import load_run_objective, run_reconstructs
from unmasked.runs import open_encoder
from unmasked.train.warm_start import started_from

ASPECTS = ("crop", "pad", "stretch")


@dataclass
class ShowSettings:
    """How `unmasked show` brings an image to the encoder's input, and its reconstruction's mask."""

    aspect: str = opt("crop", "crop: shorter side resized, centre kept (default); pad: longer side "
                      "resized, padded with the mean colour; stretch: aspect ratio not kept",
                      choices=ASPECTS, rule=CHOICE)
    seed: int = opt(0, "seed of the reconstruction's random mask and of a random: source's weights",
                    rule=count("seed 0, like any other"))


def pyplot():
    """matplotlib is an optional dependency (the `plots` extra): a clear error when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("show draws figures with matplotlib, which is not installed: "
                        "pip install 'unmasked[plots]' (or pip install matplotlib)") from None
    return plt


def check_inputs(images: list[str], out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file; show writes its figures into a folder")
    for f in images:
        p = Path(f)
        if not p.exists():
            raise UserError(f"{p}: no such image file")
        if p.is_dir():
            raise UserError(f"{p}: a folder; show takes image files (e.g. {p}/*.jpg)")
    return out


def load_image(path: Path, size: tuple[int, int], channels: int, aspect: str, mean) -> tuple[torch.Tensor, str]:
    """(C, H, W) uint8 at the encoder's input size, and the sentence that says how it got there."""
    h, w = size
    try:
        with Image.open(path) as img:
            ow, oh = img.size
            if ow * oh > image_folder.MAX_PIXELS:
                raise UserError(f"{path}: {ow}x{oh} pixels, over --max-image-pixels {image_folder.MAX_PIXELS:,}")
            img.load()
            img = image_folder._normalise_mode(image_folder._upright(img))
            a = image_folder._to_array(img, channels)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    img = Image.fromarray(a[:, :, 0] if channels == 1 else a)
    ow, oh = img.size
    if aspect == "stretch":
        img = img.resize((w, h), Image.BICUBIC)
        text = f"{ow}x{oh} px stretched to {w}x{h} (aspect ratio not kept)"
    elif aspect == "crop":
        s = max(w / ow, h / oh)
        nw, nh = max(w, round(ow * s)), max(h, round(oh * s))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - w) // 2, (nh - h) // 2
        img = img.crop((left, top, left + w, top + h))
        text = f"{ow}x{oh} px resized to {nw}x{nh}, centre {w}x{h} kept"
    else:
        s = min(w / ow, h / oh)
        nw, nh = max(1, min(w, round(ow * s))), max(1, min(h, round(oh * s)))
        fill = tuple(round(float(m) * 255) for m in mean)
        canvas = Image.new(img.mode, (w, h), fill[0] if channels == 1 else fill)
        canvas.paste(img.resize((nw, nh), Image.BICUBIC), ((w - nw) // 2, (h - nh) // 2))
        img = canvas
        text = f"{ow}x{oh} px resized to {nw}x{nh}, padded to {w}x{h} with the mean colour"
    a = np.asarray(img, dtype=np.uint8)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a.transpose(2, 0, 1).copy()), text


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def pca_rgb(patch_features: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(L, D) -> (rows, cols, 3) in [0, 1]: the first three principal components, each min-max scaled.
    Signs are fixed (largest |value| positive) so the same features always give the same colours."""
    x = patch_features.float() - patch_features.float().mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    k = min(3, v.shape[0])
    proj = x @ v[:k].T  # (L, k)
    sign = torch.sign(proj.gather(0, proj.abs().argmax(0, keepdim=True)))
    proj = proj * torch.where(sign == 0, torch.ones_like(sign), sign)
    lo, hi = proj.min(0).values, proj.max(0).values
    proj = (proj - lo) / (hi - lo).clamp(min=1e-12)
    if k < 3:
        proj = torch.cat([proj, torch.zeros(proj.shape[0], 3 - k)], dim=1)
    return proj.reshape(*grid, 3).cpu().numpy()


def cls_attention(encoder, x: torch.Tensor) -> torch.Tensor | None:
    """(heads, L) last-block attention of the CLS query to the patches (prefix dropped, rows
    renormalised), or None for an encoder without a class token."""
    if getattr(encoder, "cls_token", None) is None:
        return None
    prefix = encoder.num_prefix_tokens
    a = attention_weights(encoder, x, layers=[len(encoder.blocks) - 1])[0][0]  # (H, N, N)
    row = a[:, 0, prefix:]
    return row / row.sum(-1, keepdim=True).clamp(min=1e-12)


def _display(x: torch.Tensor, mean, std) -> np.ndarray:
    return to_display(x, mean, std)


def _upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (rows, cols[, 3]) grid map at pixel size, each patch one flat square."""
    ry, rx = size[0] // m.shape[0], size[1] // m.shape[1]
    return np.repeat(np.repeat(m, ry, axis=0), rx, axis=1)


def _scaled(m: torch.Tensor) -> np.ndarray:
    m = m.float()
    return ((m - m.min()) / (m.max() - m.min()).clamp(min=1e-12)).cpu().numpy()


def figure(plt, panels: list[tuple[np.ndarray, str, str | None]], heads: list[np.ndarray], title: str, path: Path):
    """Top row: the panels (image, title, colour map); below, one attention map per head."""
    per_row = max(len(panels), min(len(heads), 6), 1)
    head_rows = (len(heads) + per_row - 1) // per_row
    rows = 1 + head_rows
    fig, axes = plt.subplots(rows, per_row, figsize=(2.0 * per_row + 0.4, 2.1 * rows + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for c, (img, name, cmap) in enumerate(panels):
        ax = axes[0][c]
        ax.axis("on")
        ax.imshow(img, cmap=cmap or ("gray" if img.ndim == 2 else None), vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(textwrap.fill(name, 24), fontsize=8)
    for i, m in enumerate(heads):
        ax = axes[1 + i // per_row][i % per_row]
        ax.axis("on")
        ax.imshow(m, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"CLS attention, head {i + 1}", fontsize=8)
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _reconstructor(source, device):
    """(objective, config) of a run whose objective reconstructs (MAE, LUT), else None."""
    p = Path(str(source))
    ckpt = p / "checkpoint.pt" if p.is_dir() else p
    if not ckpt.is_file() or ckpt.suffix != ".pt" or not run_reconstructs(ckpt):
        return None
    return load_run_objective(ckpt, device)


def _figure_names(images: list[Path]) -> list[str]:
    names, seen = [], {}
    for p in images:
        stem = p.stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.png")
    return names


@torch.no_grad()
def show(source, images: list[str], out: str | Path, device: str = "auto", aspect: str = "crop",
         seed: int = 0, weights: str | None = None, img_size: int | None = None, data: str | None = None) -> dict:
    """`source` is anything `runs.open_encoder` takes (a run or results folder, timm:NAME with
    `weights`, hf-hub:, local-dir:, random:... with `data`); `seed` draws the reconstruction's mask
    and a random: encoder's weights."""
    if aspect not in ASPECTS:
        raise UserError(f"--aspect {aspect}: choose one of {', '.join(ASPECTS)}")
    if not images:
        raise UserError("show needs at least one image file")
    out = check_inputs(images, out)
    plt = pyplot()
    dev = resolve_device(device)
    loaded = open_encoder(source, weights=weights, img_size=img_size, data=data, seed=seed)
    enc = loaded.encoder.to(dev).eval().float()
    size = tuple(enc.patch_embed.img_size)
    grid = tuple(enc.patch_embed.grid_size)
    channels = enc.patch_embed.proj.in_channels
    prefix = enc.num_prefix_tokens
    paths = [Path(f) for f in images]
    loaded_images = [load_image(p, size, channels, aspect, loaded.mean) for p in paths]  # all checked first
    recon = _reconstructor(source, dev)
    out.mkdir(parents=True, exist_ok=True)
    origin = started_from(loaded.config)
    label = f"{loaded.objective} ({Path(str(source)).name or source})" + (
        f", warm-started from {origin}" if origin else "")
    entries = []
    for path, name, (img, how) in zip(paths, _figure_names(paths), loaded_images):
        x = normalise(img[None], loaded.mean, loaded.std).to(dev)
        tokens = enc.forward_features(x)[0, prefix:]
        panels = [(_display(x[0], loaded.mean, loaded.std), "input as the encoder sees it", None),
                  (_upsample(pca_rgb(tokens, grid), size), "patch features: PCA 1-3 as RGB", None)]
        att = cls_attention(enc, x)
        heads = [] if att is None else [_upsample(_scaled(att[h].reshape(grid)), size) for h in range(att.shape[0])]
        if recon is not None:
            obj, cfg = recon
            rec = reconstructions(obj, x, obj.norm_pix_loss, seed=seed)
            panels += [(_display(rec[k][0], cfg.mean, cfg.std), t, None) for k, t in (
                ("masked", f"masked view ({obj.mask_ratio:.0%} of patches hidden)"),
                ("reconstruction", "reconstruction" + (" (de-normalised)" if obj.norm_pix_loss else "")),
                ("pasted", "reconstruction + visible patches"))]
        note = "" if att is not None else "; no class token, so no CLS attention"
        title = (f"{label}: {path.name}. {how} ({grid[0]}x{grid[1]} patches of "
                 f"{size[0] // grid[0]} px{', ' + str(prefix) + ' prefix tokens left out' if prefix > 1 else ''})"
                 f"{note}. Attention: last block (layer {len(enc.blocks)}), CLS query, each head scaled to its "
                 "own range.")
        figure(plt, panels, heads, title, out / name)
        entries.append({"image": str(path), "figure": name, "input": how, "heads": len(heads),
                        "reconstruction": recon is not None})
    result = {"source": str(source), "objective": loaded.objective, "aspect": aspect,
              "input_size": list(size), "grid": list(grid), "prefix_tokens": int(prefix),
              "started_from": origin, "source_info": loaded.source_info, "images": entries}
    atomic_write_text(out / "show.json", json.dumps(result, indent=1) + "\n")
    return result
