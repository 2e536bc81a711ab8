"""Small data and official-layout checkpoints for the encoder-source tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch

from unmasked.data import fashion_mnist


def small_fashion_mnist(root: Path, train: int = 200, test: int = 100) -> Path:
    """The first images of Fashion-MNIST as IDX files in `root`, a --data folder like the full set."""
    fm = fashion_mnist.load()
    root.mkdir(parents=True, exist_ok=True)
    parts = {"train-images-idx3-ubyte": fm["train_images"][:train, 0],
             "train-labels-idx1-ubyte": fm["train_labels"][:train],
             "t10k-images-idx3-ubyte": fm["test_images"][:test, 0],
             "t10k-labels-idx1-ubyte": fm["test_labels"][:test]}
    for name, a in parts.items():
        a = np.ascontiguousarray(a.astype(np.uint8))
        magic = (fashion_mnist.IMAGE_MAGIC if a.ndim == 3 else fashion_mnist.LABEL_MAGIC).to_bytes(4, "big")
        header = magic + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
        with gzip.open(root / f"{name}.gz", "wb") as f:
            f.write(header + a.tobytes())
    return root


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights of realistic size everywhere (timm's init leaves CLS, registers and LayerScale near zero,
    where a comparison would test nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if p.ndim < 2 or "token" in name or "pos_embed" in name else 0.05
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if name.endswith("norm1.weight") or
                    name.endswith("norm2.weight") or name == "norm.weight" else 0.0))
    return model.eval()


def save_local_dir(model: torch.nn.Module, folder: Path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> Path:
    """A timm ViT as a `local-dir:` folder (config.json + model.safetensors, as export writes them)."""
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from unmasked import export

    folder.mkdir(parents=True, exist_ok=True)
    config = export.timm_config(SimpleNamespace(data=None, mean=list(mean), std=list(std)),
                                export.timm_model_args(model))
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder
