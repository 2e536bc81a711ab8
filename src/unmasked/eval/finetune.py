"""Full fine-tuning (the MAE recipe): layer-wise lr decay, drop path, mixup / cutmix, label
smoothing, RandAugment and random erasing, global-average-pool head whose norm (fc_norm) is trained.

Every encoder gets the same augmentation, whatever crop it was pretrained with: MAE's
`timm.data.create_transform(is_training=True, auto_augment='rand-m9-mstd0.5-inc1',
interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)`, i.e. RandomResizedCrop
(0.08-1) of the whole training image (kept at its aspect ratio), flip, timm's RandAugment, random
erasing with per-pixel noise. Sizes follow MAE's fine-tuning table (B / L / H: drop path 0.1 / 0.2 /
0.3, base lr 5e-4 / 1e-3 / 1e-3, layer decay 0.65 / 0.75 / 0.75, 100 / 50 / 50 epochs). The
`lut` rule is LUT's own: base lr 1e-3, lr = base_lr * sqrt(batch) / 8, layer decay 0.75.
Fashion-MNIST (28 px) keeps the small-image pad crop, a choice of the data, not of the encoder.

The classifier is timm's VisionTransformer built from the run's encoder description with
global_pool='avg' and fc_norm=True; the pretrained weights load into it with only the head and
fc_norm missing (and the encoder's final norm unused), which is checked rather than assumed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image
from safetensors.torch import save_file
from timm.data import Mixup, create_transform
from timm.data import auto_augment as _timm_aa
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from timm.layers import DropPath
from timm.loss import SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from torch.nn.init import trunc_normal_
from tqdm.auto import tqdm

from unmasked.data import image_folder
from unmasked.data.augment import default_pad, eval_view
from unmasked.data.dataset import Split, is_fashion_mnist, subset_indices
from unmasked.data.workers import ignore_interrupts
from unmasked.devices import resolve_device
from unmasked.errors import UserError
from unmasked.eval.common import feature_precision, labeled_data, result_envelope, write_result
from unmasked.eval.features import iterate_split
from unmasked.eval.knn import topk_accuracy
from unmasked.eval.run_files import save_in_run
from unmasked.eval.view import eval_view_for
from unmasked.options import (
    CHOICE,
    count,
    fraction,
    int_range,
    non_negative,
    opt,
    positive,
    positive_int,
    up_to_one,
)
from unmasked.runs import load_encoder
from unmasked.train.schedules import lr_schedule

LR_RULES = ("mae", "lut")


@dataclass
class FinetuneOptions:
    """What `unmasked eval finetune` may change in the recipe; None: the recipe's own choice, by
    encoder size, data and --lr-rule (`default_recipe`)."""

    epochs: int | None = opt(None, "epochs (default: 30 on Fashion-MNIST, else MAE's 100 for ViT-B and smaller, "
                             "50 for L, H)", rule=positive_int())
    warmup_epochs: int | None = opt(None, "warm-up epochs (default: 5)", rule=count("no warm-up"))
    lr_rule: str | None = opt(None, "mae (default): MAE's recipe, lr = base_lr * batch / 256 with base lr 5e-4 "
                              "(ViT-B) or 1e-3 (L, H) and layer decay 0.65 (B) or 0.75; lut: LUT's own rule, "
                              "lr = base_lr * sqrt(batch) / 8 with base lr 1e-3 and layer decay 0.75",
                              choices=LR_RULES, rule=CHOICE)
    base_lr: float | None = opt(None, "base lr, scaled as --lr-rule says (default: by size and rule, see "
                                "--lr-rule)", rule=positive())
    layer_decay: float | None = opt(None, "layer-wise lr decay (default: by size and rule, see --lr-rule)",
                                    rule=up_to_one())
    drop_path: float | None = opt(None, "stochastic depth (default by size, as MAE: ViT-B 0.1, L 0.2, H 0.3; "
                                  "smaller 0.1)", rule=fraction("no stochastic depth"))
    mixup: float | None = opt(None, "mixup alpha (default: 0.8; 0 = off)", rule=non_negative("mixup off"))
    cutmix: float | None = opt(None, "cutmix alpha (default: 1.0; 0 = off)", rule=non_negative("cutmix off"))
    label_smoothing: float | None = opt(None, "label smoothing (default: 0.1)",
                                        rule=fraction("plain cross-entropy"))
    randaug_magnitude: int | None = opt(None, "timm RandAugment 'rand-m<M>-mstd0.5-inc1' magnitude (default: 9)",
                                        rule=int_range(0, 10, "RandAugment's operations at zero strength"))
    train_batch: int | None = opt(None, "training batch size (default: 256)", rule=positive_int())
    subset: int | None = opt(None, "fine-tune on N training images", metavar="N", rule=positive_int())
    steps: int | None = opt(None, "stop after N steps (smoke tests)", metavar="N", rule=positive_int())

    def overrides(self) -> dict:
        """The recipe's fields these options set (None: the recipe's own choice); `subset` is not one."""
        chosen = asdict(self)
        chosen["batch_size"] = chosen.pop("train_batch")
        del chosen["subset"]
        return chosen

# MAE's fine-tuning table by encoder width: (drop path, base lr, layer decay, epochs)
MAE_BY_WIDTH = {768: (0.1, 5e-4, 0.65, 100), 1024: (0.2, 1e-3, 0.75, 50), 1280: (0.3, 1e-3, 0.75, 50)}
MAE_OTHER_WIDTHS = (0.1, 5e-4, 0.75, 100)  # smaller encoders (not in the table): B's, with decay 0.75
LUT_RULE = {"base_lr": 1e-3, "layer_decay": 0.75}  # LUT's code: lr = blr * sqrt(batch) / 8


def _posterize(img, bits_to_keep, **kwargs):
    """timm's posterize, with 0 bits kept giving the black image it gave under older Pillow (which
    MAE's recipe ran on); Pillow now raises for 0, which 'rand-m9-mstd0.5-inc1' draws at magnitude 10."""
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return _timm_aa.posterize(img, bits_to_keep, **kwargs)


for _name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    _timm_aa.NAME_TO_OP[_name] = _posterize


@dataclass
class FinetuneRecipe:
    epochs: int = 100
    warmup_epochs: int = 5
    batch_size: int = 256
    base_lr: float = 5e-4  # lr = base_lr * batch / 256 (rule mae) or base_lr * sqrt(batch) / 8 (lut)
    lr_rule: str = "mae"
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    randaug_magnitude: int = 9  # timm's 'rand-m{M}-mstd0.5-inc1'
    reprob: float = 0.25
    remode: str = "pixel"  # random erasing fills with per-pixel normal noise (MAE's --remode pixel)
    crop: str = "rrc"  # rrc (scale 0.08-1) or pad (Fashion-MNIST's small-image recipe)
    pad: int = 4
    steps: int | None = None  # stop early (smoke tests)
    eval_every: int = 1
    seed: int = 0


def build_classifier(spec_kwargs: dict, num_classes: int, drop_path: float, encoder_state: dict) -> VisionTransformer:
    model = VisionTransformer(**{**spec_kwargs, "num_classes": num_classes, "global_pool": "avg", "fc_norm": True,
                                 "drop_path_rate": drop_path})
    state = {k: v for k, v in encoder_state.items() if not k.startswith("norm.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected_missing = {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    if set(missing) != expected_missing or unexpected:
        raise UserError(f"pretrained encoder does not fit the classifier: missing {sorted(missing)}, "
                        f"unexpected {sorted(unexpected)}")
    trunc_normal_(model.head.weight, std=2e-5)  # MAE's head init
    nn.init.zeros_(model.head.bias)
    return model


def classifier_from_encoder(encoder: VisionTransformer, num_classes: int, drop_path: float) -> VisionTransformer:
    """The same recipe for a public timm ViT as it is (registers, LayerScale, learned positions): a copy
    of it with the global-average-pool head over the patch tokens, a fresh fc_norm in place of the final
    norm, and stochastic depth rising linearly to `drop_path`."""
    model = copy.deepcopy(encoder)
    model.reset_classifier(num_classes, global_pool="avg")
    model.norm = nn.Identity()
    model.fc_norm = nn.LayerNorm(model.embed_dim, eps=1e-6)
    depth = len(model.blocks)
    for i, blk in enumerate(model.blocks):
        rate = drop_path * i / max(depth - 1, 1)
        for name in ("drop_path1", "drop_path2"):
            if hasattr(blk, name):
                setattr(blk, name, DropPath(rate) if rate > 0 else nn.Identity())
    trunc_normal_(model.head.weight, std=2e-5)
    nn.init.zeros_(model.head.bias)
    return model


def layer_id(name: str, depth: int) -> int:
    """0 for embeddings, i + 1 for block i, depth + 1 for fc_norm and head."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(model: VisionTransformer, weight_decay: float, layer_decay: float) -> list[dict]:
    depth = len(model.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim == 1 or name in ("cls_token", "pos_embed") or name.endswith(".bias")
        lid = layer_id(name, depth)
        key = (lid, no_wd)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_wd else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid), "layer": lid}
        groups[key]["params"].append(p)
    return list(groups.values())


class _AugmentedImages(torch.utils.data.Dataset):
    """uint8 images (in memory or decoded from files) -> augmented float tensors, per sample."""

    def __init__(self, split: Split, base: int, channels: int, transform):
        self.split = split
        self.transform = transform
        self.decoded = None if split.in_memory else image_folder.DecodedImages(split.files, base, channels,
                                                                                max_aspect=split.max_aspect)

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        if self.split.in_memory:
            img = self.split.images[i]
            if self.split.extents is not None:
                h, w = self.split.extents[i].tolist()
                img = img[:, :h, :w]
            return self.transform(to_pil(img)), self.split.labels[i]
        img, used, _ = self.decoded.load(i)  # an unreadable file is replaced by the next one, label too
        if isinstance(img, tuple):  # (buffer, (h, w), cut): the whole image
            (h, w), img = img[1], img[0][:, : img[1][0], : img[1][1]]
        return self.transform(to_pil(img)), self.split.labels[used]


def to_pil(img: torch.Tensor) -> Image.Image:
    a = img.numpy()
    return Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), "RGB")


def randaug_name(magnitude: int) -> str:
    return f"rand-m{magnitude}-mstd0.5-inc1"


def train_transform(recipe: FinetuneRecipe, img_size: int, mean, std):
    """PIL image -> augmented, normalised float tensor: timm's create_transform as MAE calls it."""
    mean, std = tuple(mean), tuple(std)
    aa = randaug_name(recipe.randaug_magnitude)
    if recipe.crop == "rrc" and len(mean) == 3:
        return create_transform(img_size, is_training=True, auto_augment=aa, interpolation="bicubic",
                                re_prob=recipe.reprob, re_mode=recipe.remode, re_count=1, mean=mean, std=std)
    # the same ops, composed here for the pad crop and for greyscale images (a one-value fill)
    if recipe.crop == "rrc":
        crop = [T.RandomResizedCrop(img_size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC)]
    else:
        crop = [T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC),
                T.RandomCrop(img_size, padding=recipe.pad, padding_mode="reflect")]
    ops = crop + [T.RandomHorizontalFlip()]
    if aa:  # always: magnitude 0 is timm's ops at zero strength
        fill = tuple(min(255, round(255 * m)) for m in mean)
        ops.append(rand_augment_transform(aa, {"translate_const": int(img_size * 0.45),
                                               "img_mean": fill[0] if len(fill) == 1 else fill,
                                               "interpolation": Image.BICUBIC}))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if recipe.reprob > 0:
        ops.append(RandomErasing(recipe.reprob, mode=recipe.remode, max_count=1, device="cpu"))
    return T.Compose(ops)


def peak_lr(recipe: FinetuneRecipe) -> float:
    if recipe.lr_rule == "lut":
        return recipe.base_lr * recipe.batch_size ** 0.5 / 8
    return recipe.base_lr * recipe.batch_size / 256


@torch.no_grad()
def evaluate(model, split: Split, mean, std, crop_pct, device, batch_size, base, channels, num_workers=0) -> dict:
    model.eval()
    logits, kept = [], []
    size = model.patch_embed.img_size[0]
    for images, idx in iterate_split(split, batch_size, base, channels, num_workers):
        x = eval_view(images.to(device), size, mean, std, crop_pct)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits.append(model(x).float().cpu())
        kept.append(idx)
    logits = torch.cat(logits)
    labels = split.labels[torch.cat(kept)]
    c = logits.shape[1]
    res = {"top1": topk_accuracy(logits, labels, 1)}
    if c > 5:
        res["top5"] = topk_accuracy(logits, labels, 5)
    return res


def _classifier(loaded, num_classes: int, drop_path: float, device: torch.device) -> VisionTransformer:
    """The encoder under a new head: a public timm model as it is, ours rebuilt as a timm ViT."""
    if loaded.source_info is not None and loaded.objective == "public":
        return classifier_from_encoder(loaded.encoder, num_classes, drop_path).to(device)
    spec_kwargs = loaded.spec.timm_kwargs()
    return build_classifier(spec_kwargs, num_classes, drop_path, loaded.encoder.state_dict()).to(device)


def _train_loader(ds, tf, recipe: FinetuneRecipe, num_workers: int, device: torch.device):
    return torch.utils.data.DataLoader(
        _AugmentedImages(ds.train, ds.base_size, ds.channels, tf), batch_size=recipe.batch_size, shuffle=True,
        drop_last=True, num_workers=num_workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(recipe.seed), persistent_workers=num_workers > 0,
        worker_init_fn=ignore_interrupts,
    )


def _loss_and_mix(recipe: FinetuneRecipe, num_classes: int):
    """(loss, Mixup/CutMix or None): soft-target cross-entropy when images are mixed."""
    if recipe.mixup > 0 or recipe.cutmix > 0:
        mix = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, label_smoothing=recipe.label_smoothing,
                    num_classes=num_classes)
        return SoftTargetCrossEntropy(), mix
    return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing), None


def _optimizer(model: VisionTransformer, recipe: FinetuneRecipe, peak: float, device: torch.device):
    groups = layer_decay_groups(model, recipe.weight_decay, recipe.layer_decay)
    return torch.optim.AdamW(groups, lr=peak, betas=(0.9, 0.999),
                             **({"fused": True} if device.type == "cuda" else {"foreach": True}))


def _train_epoch(model, loader, opt, lrs, loss_fn, mix, step: int, stop_at: int, device: torch.device,
                 bar) -> tuple[int, torch.Tensor]:
    """One pass over `loader` (or up to step `stop_at`): (the step reached, the mean training loss)."""
    model.train()
    loss_sum, n = torch.zeros((), device=device), 0
    for x, y in loader:
        if step >= stop_at:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if mix is not None:
            x, y = mix(x, y)
        for g in opt.param_groups:
            g["lr"] = float(lrs[step]) * g["lr_scale"]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise UserError(f"fine-tuning loss became {loss.item()} at step {step}; lower --base-lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
        n += 1
        step += 1
        bar.update(1)
    return step, loss_sum / max(n, 1)


def finetune(loaded, ds, recipe: FinetuneRecipe, device: torch.device, num_workers: int = 0,
             progress: bool = True, eval_batch: int = 256) -> tuple[VisionTransformer, dict]:
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)  # timm's Mixup draws its mixing ratios from NumPy
    num_classes = len(ds.classes)
    eval_crop_pct = eval_view_for(ds.name, loaded.spec.img_size).crop_pct  # the view kNN and linear use
    model = _classifier(loaded, num_classes, recipe.drop_path, device)
    if recipe.batch_size > len(ds.train):
        # the fine-tuning batch is `eval finetune --train-batch` (`--batch-size` there is the embedding batch)
        raise UserError(f"--train-batch {recipe.batch_size} is larger than the {len(ds.train)} training images; "
                        "give a smaller even --train-batch")
    tf = train_transform(recipe, loaded.spec.img_size, loaded.mean, loaded.std)
    loader = _train_loader(ds, tf, recipe, num_workers, device)
    steps_per_epoch = len(loader)
    total = recipe.epochs * steps_per_epoch
    stop_at = min(total, recipe.steps) if recipe.steps else total
    peak = peak_lr(recipe)
    lrs = lr_schedule(peak, total, recipe.warmup_epochs * steps_per_epoch, recipe.min_lr)
    opt = _optimizer(model, recipe, peak, device)
    loss_fn, mix = _loss_and_mix(recipe, num_classes)
    history, best, step, epoch = [], None, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=stop_at, desc="fine-tune", unit="step", disable=not progress, dynamic_ncols=True)
    while step < stop_at:
        step, train_loss = _train_epoch(model, loader, opt, lrs, loss_fn, mix, step, stop_at, device, bar)
        epoch += 1
        if epoch % recipe.eval_every == 0 or step >= stop_at:
            acc = evaluate(model, ds.heldout, loaded.mean, loaded.std, eval_crop_pct, device, eval_batch,
                           ds.base_size, ds.channels, num_workers)
            rec = {"epoch": epoch, "step": step, "train_loss": float(train_loss), **acc}
            history.append(rec)
            if best is None or acc["top1"] > best["top1"]:
                best = rec
            bar.set_postfix(top1=f"{acc['top1']:.2f}", best=f"{best['top1']:.2f}")
    bar.close()
    info = {"recipe": asdict(recipe), "peak_lr": peak, "steps": step, "total_steps": total, "history": history,
            "best": best, "last": history[-1], "time_s": round(time.perf_counter() - t0, 1)}
    return model, info


def default_recipe(loaded, data_name: str, **overrides) -> FinetuneRecipe:
    """MAE's recipe for the encoder's size (the same crop for every encoder, whatever it was pretrained
    with), or with lr_rule='lut' LUT's base lr, sqrt scaling and layer decay; overrides win."""
    small = is_fashion_mnist(data_name)
    rule = overrides.get("lr_rule") or "mae"
    if rule not in LR_RULES:
        raise UserError(f"--lr-rule {rule}: choose one of {', '.join(LR_RULES)}")
    drop_path, base_lr, layer_decay, epochs = MAE_BY_WIDTH.get(loaded.spec.embed_dim, MAE_OTHER_WIDTHS)
    if rule == "lut":
        base_lr, layer_decay = LUT_RULE["base_lr"], LUT_RULE["layer_decay"]
    cfg = loaded.config
    r = FinetuneRecipe(
        epochs=30 if small else epochs, base_lr=base_lr, lr_rule=rule, layer_decay=layer_decay,
        drop_path=drop_path, crop="pad" if small else "rrc",
        pad=cfg.pad if cfg is not None and cfg.pad else default_pad(loaded.spec.img_size),
    )
    warmup_given = overrides.get("warmup_epochs") is not None
    for k, v in overrides.items():
        if v is not None:
            setattr(r, k, v)
    if not warmup_given:
        r.warmup_epochs = min(5, r.epochs - 1)  # MAE's 5, but never the whole run
    if r.warmup_epochs > r.epochs:
        raise UserError(f"--warmup-epochs {r.warmup_epochs} exceeds --epochs {r.epochs}")
    return r


def run_finetune(path, options: FinetuneOptions | None = None, data: str | None = None, device: str = "auto",
                 num_workers: int = 0, progress: bool = True) -> dict:
    """Fine-tune the encoder with the recipe `options` change (`default_recipe`); writes
    <run>/finetune.json and the fine-tuned model."""
    options = options or FinetuneOptions()
    dev = resolve_device(device)
    loaded = load_encoder(path)
    ds = labeled_data(loaded, data, "fine-tuning", num_workers, progress, keep_aspect=True)
    recipe = default_recipe(loaded, ds.name, **options.overrides())
    idx = subset_indices(len(ds.train), options.subset, recipe.seed)
    if idx is not None:
        ds.train = ds.train.subset(idx)
    model, info = finetune(loaded, ds, recipe, dev, num_workers, progress)
    model_problem = save_in_run(loaded.run_dir, "finetuned.safetensors", lambda tmp: save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp))
    last, best = info.pop("last"), info.pop("best")
    result = result_envelope(
        "finetune", "full fine-tuning, layer-wise lr decay, mixup/cutmix, label smoothing, RandAugment, "
        "global average pool + trained fc_norm", loaded, ds, file="finetune.json", default_protocol=True,
        # "last" is the result; "best" is the epoch with the highest test accuracy, i.e. chosen on the
        # test split: optimistic, kept for reference and never shown in a study table
        top1={"last": last["top1"], "best": best["top1"]},
        results={k: v for k, v in last.items() if k.startswith("top")},
        precision=feature_precision(dev), time_s=info.pop("time_s"),
        best_chosen_on="test split (the held-out images the accuracy is measured on)",
        last=last, best=best, **info,
    )
    if model_problem:
        result["not_saved"] = [model_problem]
    write_result(loaded, "finetune.json", result)
    return result
