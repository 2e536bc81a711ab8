"""Warm starts: `pretrain --init-from SOURCE [--weights FILE]` initialises a new run's encoder from
another one before step 0.

SOURCE is anything an evaluation takes (unmasked/sources.py): a run folder, checkpoint.pt or
encoder.safetensors, a results folder, `timm:NAME` (with `--weights FILE`, offline), `hf-hub:`,
`local-dir:` or `random:...`. The shape options the user did not give (--model, --width, --depth,
--heads together; --patch-size; --pos-embed) are taken from the source; given ones must match it.
Its structure comes along: register tokens (and whether the prefix tokens have positions),
LayerScale with its gammas. The weights go through timm's own `checkpoint_filter_fn` with the new
encoder as target, which converts the official layouts and resamples learned position embeddings to
the training grid; fixed sin-cos positions (this project's) are rebuilt for the grid instead,
exactly. A source with other input
channels gets timm's `adapt_input_conv` (RGB summed for greyscale data). Decoders, heads, the
mask token and the optimiser start fresh; an EMA teacher starts as the student.

What was loaded is recorded in config.json (`init_record`): resuming never reloads the source,
and `show` says where the run started from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.models import adapt_input_conv
from timm.models.vision_transformer import checkpoint_filter_fn

from unmasked import sources
from unmasked.errors import UserError
from unmasked.models.pos_embed import sincos_2d
from unmasked.models.vit import PRESETS, sincos_table
from unmasked.notes import note
from unmasked.runs import load_encoder

# Keys of a timm ViT that belong to its head: a warm start drops them (heads start fresh).
HEAD_PREFIXES = ("head.", "fc_norm.", "attn_pool.", "head_drop.")
SHAPE_OPTIONS = ("model", "width", "depth", "heads")
# every option a warm start may take from its source when it is not given (adopt_shape)
ADOPTED_OPTIONS = (*SHAPE_OPTIONS, "patch_size", "layer_scale", "pos_embed")


@dataclass
class WarmSource:
    name: str
    state: dict  # the encoder's tensors under timm VisionTransformer names
    shape: dict  # embed_dim, depth, num_heads, patch_size, mlp_ratio, in_chans, grid, and its structure:
    # reg_tokens, no_embed_class, layer_scale (has LayerScale), pos_embed ("sincos" fixed or "learned")
    record: dict  # what config.json's init_record keeps: source, weights, sha256, kind, shape
    model: torch.nn.Module  # the source encoder itself (for its structure: registers, LayerScale, ...)
    notes: list[str] = field(default_factory=list)  # what adopt_shape changed, said once the source fits


def open_warm_source(source: str, weights: str | None, data: str | None, seed: int) -> WarmSource:
    """The source's encoder, built once (a bad source fails here, before any data is loaded)."""
    if sources.is_source(source):
        loaded = sources.open_source(source, weights=weights, data=data, seed=seed)
        info = loaded.source_info or {}
        kind = "random" if source.startswith("random:") else "public"
    else:
        if weights:
            raise UserError(f"--weights {weights}: only with --init-from timm:NAME; {source} brings its own "
                            "weights")
        loaded = load_encoder(source)
        info = {"name": str(loaded.source), "weights": None, "weights_sha256": None}
        kind = "run"
    enc = loaded.encoder
    missing = _unsupported(enc)
    if missing:
        raise UserError(f"--init-from {source}: has {', '.join(missing)}, which this project's encoder (a timm "
                        "ViT with a class token, position embeddings, qkv bias and a plain MLP; registers and "
                        "LayerScale allowed) cannot hold; measure it with `unmasked eval` instead, or warm-start "
                        "from another ViT")
    spec = sources.spec_of(enc)
    shape = {"embed_dim": spec.embed_dim, "depth": spec.depth, "num_heads": spec.num_heads,
             "patch_size": spec.patch_size, "mlp_ratio": spec.mlp_ratio, "in_chans": spec.in_chans,
             "grid": list(enc.patch_embed.grid_size), "reg_tokens": int(getattr(enc, "num_reg_tokens", 0)),
             "no_embed_class": bool(getattr(enc, "no_embed_class", False)),
             "layer_scale": not isinstance(getattr(enc.blocks[0], "ls1", torch.nn.Identity()), torch.nn.Identity)}
    pos = getattr(enc, "pos_embed", None)
    prefix_rows = 0 if shape["no_embed_class"] else int(getattr(enc, "num_prefix_tokens", 1))
    shape["pos_embed"] = "sincos" if pos is not None and _is_sincos(pos, spec.embed_dim, shape["grid"],
                                                                    prefix_rows) else "learned"
    record = {"source": source, "kind": kind, "loaded_from": info.get("name") if kind == "run" else None,
              "weights": info.get("weights"), "weights_sha256": info.get("weights_sha256"),
              "seed": seed if kind == "random" else None, "shape": shape}
    state = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    return WarmSource(source, state, shape, record, enc)


def describe(shape: dict) -> str:
    return (f"width {shape['embed_dim']}, depth {shape['depth']}, {shape['num_heads']} heads, patch "
            f"{shape['patch_size']}, MLP ratio {shape['mlp_ratio']:g}")


def adopt_shape(cfg, ws: WarmSource, explicit: set[str] | frozenset = frozenset()) -> None:
    """The source's shape for the options not given: --model / --width / --depth / --heads (all
    unset: the preset of that shape, else its width, depth and heads), --patch-size, --pos-embed
    (not in `explicit`, the options typed); its register tokens and LayerScale always."""
    s = ws.shape
    if all(getattr(cfg, name) is None for name in SHAPE_OPTIONS):
        whd = (s["embed_dim"], s["depth"], s["num_heads"])
        # the preset of that width and heads names the model (ViT-S with 6 blocks: vit_small, --depth 6)
        preset = next((p for p, v in PRESETS.items() if v == whd), None) or next(
            (p for p, (w, _, h) in PRESETS.items() if (w, h) == (whd[0], whd[2])), None)
        cfg.model = preset or "vit_base"
        if PRESETS[cfg.model] != whd:
            cfg.width, cfg.depth, cfg.heads = whd
    if cfg.patch_size is None:
        cfg.patch_size = s["patch_size"]
    src = ws.record["source"]
    cfg.reg_tokens, cfg.no_embed_class = s["reg_tokens"], s["no_embed_class"]
    # LayerScale as the source's blocks: new gammas on a source without them would scale its blocks
    # down to almost nothing; the source's own gammas replace the initial value given here
    if s["layer_scale"] and not cfg.layer_scale:
        ws.notes.append(f"--init-from {src}: LayerScale on (the source's blocks have it; their gammas are loaded)")
        cfg.layer_scale = 1e-5
    elif not s["layer_scale"] and cfg.layer_scale:
        ws.notes.append(f"--init-from {src}: LayerScale off (the source's blocks have none)")
        cfg.layer_scale = 0.0
    if "pos_embed" not in explicit and cfg.pos_embed != s["pos_embed"]:
        kind = "fixed sin-cos" if s["pos_embed"] == "sincos" else "learned (trained)"
        ws.notes.append(f"--init-from {src}: {kind} positions, as the source's (--pos-embed chooses)")
        cfg.pos_embed = s["pos_embed"]


def _unsupported(model) -> list[str]:
    """What the source encoder has that this project's encoder (a plain timm ViT) has not."""
    found = []
    blk = model.blocks[0]
    if not getattr(model, "has_class_token", True) or getattr(model, "cls_token", None) is None:
        found.append("no class token")
    if getattr(model, "pos_embed", None) is None:
        found.append("no position embedding")
    if getattr(blk.attn, "qkv", None) is None or blk.attn.qkv.bias is None:
        found.append("attention without qkv bias")
    for name in ("q_norm", "k_norm"):
        if not isinstance(getattr(blk.attn, name, torch.nn.Identity()), torch.nn.Identity):
            found.append("qk-norm")
            break
    if not isinstance(getattr(model, "norm_pre", torch.nn.Identity()), torch.nn.Identity):
        found.append("a norm before the blocks")
    if getattr(blk.mlp, "fc1", None) is None:
        found.append(f"a {type(blk.mlp).__name__} MLP")
    return found


def _is_sincos(pos: torch.Tensor, dim: int, grid, prefix_rows: int = 1) -> bool:
    """Whether `pos` is this project's fixed sin-cos table (zero rows for the prefix tokens)."""
    if dim % 4:
        return False
    ref = sincos_2d(dim, tuple(grid), cls_token=False)
    ref = torch.cat([ref.new_zeros(1, prefix_rows, dim), ref], dim=1)
    return pos.shape == ref.shape and torch.allclose(pos.detach().float(), ref, atol=1e-5)


def check_fits(spec, ws: WarmSource, announce: bool = False) -> None:
    """Refuse, in one line naming both, a source of another shape than this run's encoder (`spec`,
    an EncoderSpec); called once the run's config is resolved, before any data. `announce`: then
    say what adopt_shape changed (after a refusal, nothing is)."""
    mine = {"embed_dim": spec.embed_dim, "depth": spec.depth, "num_heads": spec.num_heads,
            "patch_size": spec.patch_size, "mlp_ratio": spec.mlp_ratio}
    theirs = {k: ws.shape[k] for k in mine}
    if mine != theirs:
        raise UserError(f"--init-from {ws.name}: its encoder ({describe(ws.shape)}) does not fit this run's "
                        f"({describe(mine)}); leave --model, --width, --depth, --heads and --patch-size unset to "
                        "take the source's shape, or give matching ones")
    for line in ws.notes if announce else ():
        note(line)


def load_into(encoder, ws: WarmSource) -> dict:
    """Load the source into `encoder` (this run's, a ViTEncoder); returns the record for config.json.
    Refuses, in one line, an encoder of another shape or with parts this encoder lacks."""

    spec = encoder.spec
    check_fits(spec, ws)
    sd = {k: v for k, v in ws.state.items() if not k.startswith(HEAD_PREFIXES)}
    notes: dict = {}
    src_grid, grid = ws.shape["grid"], [spec.grid, spec.grid]
    trained = spec.pos_embed == "learned"
    if ws.shape["pos_embed"] == "sincos":
        sd["pos_embed"] = sincos_table(spec)  # fixed positions: the sin-cos table of this grid, exact
        notes["positions"] = f"fixed sin-cos, rebuilt for the {grid[0]}x{grid[1]} training grid"
        notes["positions"] += "; trained from there (--pos-embed learned)" if trained else ""
    else:
        notes["positions"] = (f"learned, {src_grid[0]}x{src_grid[1]} -> {grid[0]}x{grid[1]} (timm's "
                              "resample_abs_pos_embed, bicubic)" if src_grid != grid else
                              f"learned, at the source's {grid[0]}x{grid[1]} grid")
        notes["positions"] += ("; trained (--pos-embed learned)" if trained else
                               "; kept fixed during pretraining (--pos-embed sincos)")
    if ws.shape["reg_tokens"] or ws.shape["layer_scale"]:
        notes["structure"] = ", ".join(
            ([f"{ws.shape['reg_tokens']} register tokens"] if ws.shape["reg_tokens"] else [])
            + (["LayerScale"] if ws.shape["layer_scale"] else [])) + " from the source"
    w = sd["patch_embed.proj.weight"]
    if w.shape[1] != spec.in_chans:
        sd["patch_embed.proj.weight"] = adapt_input_conv(spec.in_chans, w, base_chans=w.shape[1])
        notes["channels"] = (f"{w.shape[1]} -> {spec.in_chans} input channels (timm's adapt_input_conv: "
                             + ("the source's channels summed)" if spec.in_chans == 1 else "channels repeated)"))
    sd = checkpoint_filter_fn(sd, encoder)  # timm's own: resamples learned positions to this grid
    try:
        encoder.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise UserError(f"--init-from {ws.name}: its weights do not fit this run's encoder ({msg[:300]})") from None
    return {**ws.record, **notes, "fresh": "decoder, heads, mask token and optimiser"}


def started_from(config) -> str | None:
    """'timm:NAME (weights FILE)' for a warm-started run's config, None for a run from scratch."""
    if config is None:
        return None
    rec = getattr(config, "init_record", None)
    if rec:
        return rec["source"] + (f" (weights {rec['weights']})" if rec.get("weights") else "")
    return getattr(config, "init_from", None)
