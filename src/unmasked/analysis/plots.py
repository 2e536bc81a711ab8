"""Matplotlib figures for the analyses (headless backend, readable sizes, labelled axes)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

from unmasked.files import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def save(fig, path: Path) -> Path:
    """Written atomically: a full disk or a read-only folder leaves no half-written PNG (and the
    figure is closed either way)."""
    path = Path(path)
    try:
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
    return path


def attention_distance_plot(runs: list[dict], path: Path, title: str = "Mean attention distance") -> Path:
    """runs: [{"label", "per_head": (layers, heads), "uniform": px}] -> one dot per head, mean line per run."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(runs):
        per_head = np.asarray(r["per_head"])
        layers = np.arange(1, per_head.shape[0] + 1)
        color = COLORS[i % len(COLORS)]
        offset = (i - (len(runs) - 1) / 2) * 0.12
        for h in range(per_head.shape[1]):
            ax.scatter(layers + offset, per_head[:, h], s=14, color=color, alpha=0.45, linewidths=0)
        ax.plot(layers + offset, per_head.mean(axis=1), "-o", color=color, markersize=4,
                label=f"{r['label']} (mean of heads)")
    if runs and runs[0].get("uniform") is not None:
        ax.axhline(runs[0]["uniform"], color="grey", linestyle="--", linewidth=1,
                   label=f"uniform attention ({runs[0]['uniform']:.1f} px)")
    ax.set_xlabel("layer (block index)")
    ax.set_ylabel("mean attention distance (pixels of the model input)")
    ax.set_title(title + " — dots: heads")
    ax.set_xticks(np.arange(1, np.asarray(runs[0]["per_head"]).shape[0] + 1))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def layer_curve_plot(runs: list[dict], key: str, path: Path, ylabel: str, title: str, ylim=None) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(runs):
        v = np.asarray(r[key])
        ax.plot(np.arange(1, len(v) + 1), v, "-o", color=COLORS[i % len(COLORS)], markersize=4, label=r["label"])
    ax.set_xlabel("layer (block index)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        top = max(max(float(np.max(r[key])) for r in runs) * 1.25, 0.1)
        ax.set_ylim(ylim[0], min(ylim[1], top))  # zoom in on small values, never past the range
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def spectrum_plot(runs: list[dict], path: Path) -> Path:
    """runs: [{"label", "spectra": {"cls": [...], "mean": [...]}, "rankme": {...}}], two panels."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    floor = 1.0
    for ax, kind, name in zip(axes, ("cls", "mean"), ("CLS token", "mean-pooled patch tokens")):
        for i, r in enumerate(runs):
            s = np.asarray(r["spectra"][kind])
            s = s / s[0]
            # The final LayerNorm leaves one direction (near) empty; do not let it set the axis.
            floor = min(floor, s[-2] if len(s) > 1 else s[-1])
            ax.semilogy(np.arange(1, len(s) + 1), s, color=COLORS[i % len(COLORS)],
                        label=f"{r['label']} (RankMe {r['rankme'][kind]:.1f})")
        ax.set_xlabel("singular value index (sorted)")
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylim(bottom=max(10 ** np.floor(np.log10(max(floor, 1e-12))), 1e-6), top=1.5)
    axes[0].set_ylabel("singular value / largest (log scale)")
    fig.suptitle("Singular values of centred embeddings", fontsize=11)
    return save(fig, path)


def image_grid(rows: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str], path: Path,
               title: str, cmaps: list[str] | None = None, marks: list[list] | None = None) -> Path:
    """rows of images (H, W) or (H, W, 3) in [0, 1]; marks[r][c] = (y, x, size) draws a square."""
    n_r, n_c = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.6 * n_c + 0.6, 1.6 * n_r + 0.6), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_c):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            img = row[c]
            cmap = (cmaps[c] if cmaps else None) or ("gray" if img.ndim == 2 else None)
            ax.imshow(img, cmap=cmap, vmin=0 if cmap == "gray" else None, vmax=1 if cmap == "gray" else None,
                      interpolation="nearest")
            if marks and marks[r] and c < len(marks[r]) and marks[r][c] is not None:
                y, x, s = marks[r][c]
                ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), s, s, fill=False, edgecolor="red", linewidth=1.5))
            if r == 0 and c < len(col_labels):
                ax.set_title(textwrap.fill(col_labels[c], 20), fontsize=8)  # long labels must not collide
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def knn_monitor_plot(records: list[dict], path: Path, title: str = "kNN monitor during pretraining") -> Path:
    """A run's kNN monitor (metrics.jsonl records with knn20_cls / knn20_mean) against epochs, with
    the same kNN on the raw pixels of the monitor's images as a dashed line where it was logged."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    epochs = [r["epoch"] for r in records]
    for i, (key, label) in enumerate((("knn20_cls", "CLS"), ("knn20_mean", "mean-pooled"))):
        ax.plot(epochs, [r[key] for r in records], "-o", color=COLORS[i], markersize=3, label=label)
    pixels = records[-1].get("knn20_pixels") if records else None
    if pixels is not None:
        ax.axhline(pixels, color="grey", linestyle="--", linewidth=1, label=f"raw pixels ({pixels:.1f}%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN20 top-1 (%), monitor subset")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
