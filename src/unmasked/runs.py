"""The one entry point for an encoder: a run of `unmasked pretrain` (run_folder.py) or a source
(a public or random encoder, sources.py)."""

from __future__ import annotations

from pathlib import Path

from unmasked import sources
from unmasked.errors import UserError
from unmasked.run_folder import LoadedEncoder, open_run


def load_encoder(path: str | Path, prefer: str = "checkpoint", *, weights: str | None = None,
                 out: str | Path | None = None, data: str | None = None, img_size: int | None = None,
                 seed: int = 0) -> LoadedEncoder:
    """The one entry point for an encoder. Accepts a run folder (its checkpoint.pt, else
    encoder.safetensors), a .pt or a .safetensors, a results folder of a source (its source.json), or a
    source string (timm:NAME, hf-hub:ORG/NAME, local-dir:PATH, random:PRESET[/PATCH], see sources.py),
    whose results folder `out` is written first (with `weights`, `data`, `img_size` and `seed`)."""
    if sources.is_source(str(path)):
        return sources.load(sources.prepare(str(path), out, data, weights, img_size, seed))
    if weights:
        raise UserError(f"--weights {weights}: only for a timm:NAME source; {path} brings its own weights")
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run folder or file (or a source: {', '.join(sources.PREFIXES)}...)")
    if path.is_dir() and sources.read_source(path) is not None:
        return sources.load(path)
    return open_run(path, prefer)


def open_encoder(source: str | Path, *, weights: str | None = None, img_size: int | None = None,
                 data: str | None = None, seed: int = 0) -> LoadedEncoder:
    """Any source for a tool that writes no results folder (embed, show): a run folder, checkpoint,
    export or results folder as `load_encoder` opens it, or a source string (timm:NAME with `weights`,
    hf-hub:, local-dir:, random:... with `data`, `seed`), built at `img_size` (default: its own)."""
    if sources.is_source(str(source)):
        return sources.open_source(str(source), weights=weights, img_size=img_size, data=data, seed=seed)
    if img_size is not None:
        raise UserError(f"--img-size {img_size}: only for a timm:, hf-hub:, local-dir: or random: source; "
                        f"{source} has its own input size")
    return load_encoder(source, weights=weights)
