"""Study figures: one line per arm with a band over seeds, and metric vs ablation value."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unmasked.analysis.plots import COLORS, plt, save


def band_plot(series: list[dict], path: Path, xlabel: str, ylabel: str, title: str, hline=None) -> Path:
    """series: [{"label", "x": [...], "ys": [[...] per seed]}] -> mean line, min-max band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(series):
        ys = np.asarray(s["ys"], dtype=float)
        color = COLORS[i % len(COLORS)]
        ax.plot(s["x"], ys.mean(0), "-o", color=color, markersize=3, label=f"{s['label']} ({len(ys)} seeds)")
        if len(ys) > 1:
            ax.fill_between(s["x"], ys.min(0), ys.max(0), color=color, alpha=0.2, linewidth=0)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def grid_plot(lines: dict[str, list[tuple[float, dict]]], path: Path, xlabel: str, ylabel: str,
              hline=None) -> Path:
    """lines: {label: [(grid value, {"mean", "std"}), ...]} -> mean with std error bars; hline:
    (value, label) of a reference drawn dashed (the raw pixels)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, pts) in enumerate(lines.items()):
        pts = sorted(pts, key=lambda p: p[0])
        x = [p[0] for p in pts]
        m = [p[1]["mean"] for p in pts]
        e = [p[1]["std"] or 0.0 for p in pts]
        ax.errorbar(x, m, yerr=e, fmt="-o", color=COLORS[i % len(COLORS)], capsize=3, markersize=4, label=label)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} vs {xlabel}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
