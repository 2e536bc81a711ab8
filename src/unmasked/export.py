"""`unmasked export RUN --format timm DIR`: a folder that timm and the Hugging Face Hub load as it is.

The folder holds what timm's own `local-dir:` and `hf-hub:` loaders read (timm/models/_hub.py):
`config.json` with `architecture` (a registered timm ViT), `model_args` (the real shape, which
overrides the architecture's defaults), `num_classes` 0 and `pretrained_cfg` (input size, mean,
std, crop and interpolation of the evaluation view), and `model.safetensors`, the encoder's state
dict under timm's own key names. A `README.md` model card names the source. So

    timm.create_model("local-dir:DIR", pretrained=True)

builds the encoder with no unmasked code, and `huggingface-cli upload ORG/NAME DIR` publishes it.
The shape is read from the encoder's modules (any timm VisionTransformer: registers, LayerScale,
q/k norm, ...), and the export checks itself: timm loads the folder and its features must equal
the encoder's, else nothing is left behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.layers import LayerScale

from unmasked.data.dataset import is_fashion_mnist
from unmasked.errors import UserError
from unmasked.eval.view import eval_view_for
from unmasked.files import atomic_write, atomic_write_text
from unmasked.options import CHOICE, FLAG, opt
from unmasked.runs import load_encoder

FORMATS = ("timm",)
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
# timm's registered ViTs by width; any of them works (model_args set every shape argument), the
# nearest in size only makes the name readable
_ARCHITECTURES = {192: "vit_tiny_patch16_224", 384: "vit_small_patch16_224", 768: "vit_base_patch16_224",
                  1024: "vit_large_patch16_224"}
TOLERANCE = 1e-5


def _pair_or_int(v):
    v = tuple(int(x) for x in (v if isinstance(v, (tuple, list)) else (v, v)))
    return v[0] if v[0] == v[1] else list(v)


def timm_model_args(encoder: nn.Module) -> dict:
    """The `VisionTransformer(...)` arguments that rebuild `encoder`'s architecture, read from its
    modules (JSON-serialisable). Options this cannot see are caught by the round-trip check."""
    blk = encoder.blocks[0]
    dim = encoder.embed_dim
    ls = getattr(blk, "ls1", None)
    args = dict(
        img_size=_pair_or_int(encoder.patch_embed.img_size),
        patch_size=_pair_or_int(encoder.patch_embed.patch_size),
        in_chans=int(encoder.patch_embed.proj.in_channels),
        embed_dim=int(dim),
        depth=len(encoder.blocks),
        num_heads=int(blk.attn.num_heads),
        mlp_ratio=blk.mlp.fc1.out_features / dim,
        qkv_bias=blk.attn.qkv.bias is not None,
        qk_norm=not isinstance(blk.attn.q_norm, nn.Identity),
        init_values=1e-5 if isinstance(ls, LayerScale) else None,  # any value: the weights replace it
        class_token=getattr(encoder, "cls_token", None) is not None,
        reg_tokens=int(getattr(encoder, "num_reg_tokens", 0)),
        no_embed_class=bool(getattr(encoder, "no_embed_class", False)),
        pos_embed="learn" if getattr(encoder, "pos_embed", None) is not None else "none",
        pre_norm=not isinstance(encoder.norm_pre, nn.Identity),
        final_norm=not isinstance(encoder.norm, nn.Identity) or not isinstance(encoder.fc_norm, nn.Identity),
        global_pool=encoder.global_pool or "token",
        dynamic_img_size=bool(getattr(encoder, "dynamic_img_size", False)),
    )
    if args["mlp_ratio"] == int(args["mlp_ratio"]):
        args["mlp_ratio"] = float(int(args["mlp_ratio"]))
    if not args["qk_norm"]:
        del args["qk_norm"]  # the default; older timm versions lack the argument
    return args


def architecture_for(model_args: dict) -> str:
    return _ARCHITECTURES.get(model_args["embed_dim"], "vit_base_patch16_224")


def _input_size(model_args: dict) -> list[int]:
    s = model_args["img_size"]
    h, w = (s, s) if isinstance(s, int) else s
    return [model_args["in_chans"], h, w]


def timm_config(loaded, model_args: dict) -> dict:
    """config.json as timm's save_config_for_hf writes it (the fields its local-dir loader reads)."""
    size = _input_size(model_args)
    crop_pct = eval_view_for(loaded.data, size[1]).crop_pct if loaded.data else 1.0
    arch = architecture_for(model_args)
    return {
        "architecture": arch,
        "num_classes": 0,
        "num_features": model_args["embed_dim"],
        "global_pool": model_args["global_pool"],
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "unmasked",
            "custom_load": False,
            "input_size": size,
            "fixed_input_size": not model_args["dynamic_img_size"],
            "interpolation": "bicubic",
            "crop_pct": crop_pct,
            "crop_mode": "center",
            "mean": [float(v) for v in loaded.mean],
            "std": [float(v) for v in loaded.std],
            "num_classes": 0,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }


def model_card(loaded, config: dict, source: str) -> str:
    size = config["pretrained_cfg"]["input_size"]
    a = config["model_args"]
    # names only: a card meant for the Hub does not carry the local folders it was made from
    data = loaded.data if not loaded.data or is_fashion_mnist(loaded.data) else Path(loaded.data).name
    source = Path(source).name or source
    mean, std = config["pretrained_cfg"]["mean"], config["pretrained_cfg"]["std"]
    prefix = int(a["class_token"]) + a["reg_tokens"]
    return f"""---
tags:
- image-feature-extraction
- timm
- unmasked
library_name: timm
---
# ViT encoder ({loaded.objective}), exported by unmasked

A Vision Transformer encoder: {a['embed_dim']} wide, {a['depth']} blocks, {a['num_heads']} heads, patch
{a['patch_size']}, {size[0]}-channel {size[1]}x{size[2]} input, {a.get('reg_tokens', 0)} register tokens.
Objective: `{loaded.objective}`; data: `{data}`; exported by `unmasked export` from `{source}`.
No classifier head: the model returns features.

```python
import timm
model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True)   # or "hf-hub:ORG/NAME"
cfg = timm.data.resolve_data_config({{}}, model=model)   # mean {mean}, std {std}
features = model.forward_features(images)   # (B, {prefix} prefix + patches, {a['embed_dim']})
```
"""


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def check_folder(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: a file; export writes a folder (config.json, model.safetensors) there")
    if not force:
        present = [n for n in (CONFIG, WEIGHTS) if (out / n).exists()]
        if present:
            raise UserError(f"{out}: already holds {' and '.join(present)}; pass --force to replace them")


@torch.no_grad()
def roundtrip_difference(encoder: nn.Module, folder: Path, input_size: list[int]) -> float:
    """Largest |difference| between the encoder's forward_features and those of the model timm
    builds from `folder` alone, on two seeded random images."""
    model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True).eval()
    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    return float((model.forward_features(x) - encoder.forward_features(x)).abs().max())


@dataclass
class ExportSettings:
    """The export's format, and whether it replaces an earlier export."""

    format: str = opt("timm", "export format", choices=("timm",), rule=CHOICE)
    force: bool = opt(False, "replace an export already in DIR", rule=FLAG)


def export_timm(source: str, out: str | Path, force: bool = False) -> dict:
    """Write DIR/config.json, DIR/model.safetensors and DIR/README.md; returns what was written."""
    out = Path(out)
    check_folder(out, force)
    loaded = load_encoder(source)
    encoder = loaded.encoder.cpu().float().eval()
    try:
        model_args = timm_model_args(encoder)
    except AttributeError as e:
        raise UserError(f"{source}: not a timm VisionTransformer that export can describe ({e})") from None
    config = timm_config(loaded, model_args)
    state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    written = [out / WEIGHTS, out / CONFIG, out / CARD]
    atomic_write(written[0], lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    _write_json(written[1], config)
    atomic_write_text(written[2], model_card(loaded, config, str(source)))
    try:
        diff = roundtrip_difference(encoder, out, config["pretrained_cfg"]["input_size"])
        problem = None if diff <= TOLERANCE else f"its features differ from the encoder's by up to {diff:.2e}"
    except Exception as e:  # noqa: BLE001 - any failure of timm to build or load the folder
        problem = f"timm could not load it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if problem:
        for f in written:
            f.unlink(missing_ok=True)
        raise UserError(f"{source}: export to {out} removed again, {problem}; this encoder's architecture "
                        "is not one timm's VisionTransformer arguments describe")
    return {"folder": str(out), "files": [f.name for f in written], "architecture": config["architecture"],
            "model_args": model_args, "max_difference": diff, "source": str(source)}
