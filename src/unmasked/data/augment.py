"""Batched image augmentation on uint8 batches, on whatever device the batch lives on.

Every random parameter is drawn per sample from a `BatchRandom`, so one call augments a whole
batch with a handful of kernels (GPU-friendly) and the result does not depend on how the batch is
split across processes. The operations follow torchvision's definitions:

- "rrc": RandomResizedCrop(scale, ratio 3/4-4/3) with bicubic sampling, then horizontal flip
  (MAE). Crops are sampled with grid_sample, without antialiasing when shrinking.
- "pad": resize to the model size, random crop with reflect padding, horizontal flip (LUT).
- "none": resize only (plus flip if enabled).

Images of one batch may differ in shape (`StoredImages`: a fixed-size buffer and each image's
extent, see data/image_folder.py). Then "rrc" samples its boxes over each image's whole extent,
with scale and ratio relative to the whole image (torchvision's get_params per image); "pad" is
LUT's `Resize(size)` (shorter side) of the whole image then `RandomCrop(size, padding, reflect)`,
so it translates over the whole longer side; "none" resizes the centre square. A batch of
square images that all fill a square buffer takes exactly the square path.
- color=True adds LUT's second-view photometry: ColorJitter(0.4, 0.4, 0.2, 0.1) with p = 0.8
  (the order of the four jitters is drawn once per batch rather than per image), then exactly
  one of {grayscale, solarize, Gaussian blur}, chosen per image.
- color_dino=True gives DINO's photometry instead: the same ColorJitter with p = jitter_p, then
  grayscale with p = grayscale_p, Gaussian blur with p = blur_p, solarize with p = solarize_p,
  each drawn per image (DINO v1: blur 1.0 / 0.1 / 0.5 for global 1 / global 2 / local crops,
  solarize 0.2 on global 2 only). The output size is `img_size`, so local crops are views of
  their own, smaller size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from unmasked.rng import BatchRandom

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's
CROP_MODES = ("rrc", "pad", "none")


@dataclass(frozen=True)
class AugmentSpec:
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: str = "rrc"
    rrc_scale: tuple[float, float] = (0.2, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    flip: bool = True
    color: bool = False
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_p: float = 0.8
    blur_sigma: tuple[float, float] = field(default=(0.1, 2.0))
    color_dino: bool = False
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0

    def __post_init__(self):
        if self.crop not in CROP_MODES:
            raise ValueError(f"unknown crop mode {self.crop!r}; choose one of {', '.join(CROP_MODES)}")
        if self.color and self.color_dino:
            raise ValueError("choose one photometry: color (LUT) or color_dino (DINO), not both")


@dataclass
class StoredImages:
    """uint8 images of different shapes in one buffer: image i fills images[i, :, :h_i, :w_i] (the
    rest repeats its last row and column); every image's shorter side is `short` pixels."""

    images: torch.Tensor  # uint8 (B, C, H, W)
    extents: torch.Tensor  # int64 (B, 2): h, w
    short: int | None = None  # filled from the extents (on the host) when not given
    full: bool | None = None  # every image fills a square buffer: the square path applies

    def __post_init__(self):
        if self.short is None or self.full is None:
            e = self.extents.cpu()
            self.short = int(e.min()) if len(e) else 0
            # a buffer that every image fills but which is not square (a folder of 4:3 photos) is
            # not the square path: LUT's crop and 'none' would stretch it
            h, w = self.images.shape[-2:]
            self.full = bool(h == w and (e[:, 0] == h).all() and (e[:, 1] == w).all())

    def __len__(self) -> int:
        return len(self.images)

    def pin_memory(self) -> StoredImages:  # a DataLoader with pin_memory=True calls this
        return StoredImages(self.images.pin_memory(), self.extents.pin_memory(), self.short, self.full)

    def to(self, device, non_blocking: bool = False) -> StoredImages:
        return StoredImages(self.images.to(device, non_blocking=non_blocking),
                            self.extents.to(device, non_blocking=non_blocking), self.short, self.full)


def centre_squares(images: torch.Tensor, extents: torch.Tensor) -> torch.Tensor:
    """The centre square (side = shorter side) of each stored image: what the square decode keeps."""
    out = []
    for img, (h, w) in zip(images, extents.tolist()):
        s = min(h, w)
        t, left = (h - s) // 2, (w - s) // 2
        out.append(img[:, t : t + s, left : left + s])
    return torch.stack(out)


def default_pad(img_size: int) -> int:
    """4 px at every size: LUT's code pads by 4 (`RandomCrop(224, padding=4, padding_mode='reflect')`)."""
    return 4


def default_blur_sigma(img_size: int) -> tuple[float, float]:
    """Blur sigma range (0.1, 2) is for 224 px; shrink it with the image, but not to nothing."""
    s = max(img_size / 224.0, 0.25)
    return (0.1 * s, 2.0 * s)


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def eval_view(images: torch.Tensor, img_size: int, mean, std, crop_pct: float = 1.0) -> torch.Tensor:
    """Deterministic view for evaluation: resize to img_size / crop_pct, centre crop img_size."""
    x = to_float(images)
    base = round(img_size / crop_pct)
    if x.shape[-1] != base or x.shape[-2] != base:
        x = F.interpolate(x, size=(base, base), mode="bilinear", antialias=True, align_corners=False)
    if base > img_size:
        o = (base - img_size) // 2
        x = x[..., o : o + img_size, o : o + img_size]
    return _normalize(x, mean, std)


# ---- geometry -------------------------------------------------------------------------------


def _rrc_boxes(rng: BatchRandom, h: int, w: int, scale, ratio, attempts: int = 10):
    """torchvision's RandomResizedCrop.get_params, vectorised: (x0, y0, cw, ch) per sample."""
    area = float(h * w)
    target = rng.uniform(attempts, low=scale[0], high=scale[1]) * area
    log_r = rng.uniform(attempts, low=math.log(ratio[0]), high=math.log(ratio[1]))
    r = torch.exp(log_r)
    cw = torch.sqrt(target * r).round()
    ch = torch.sqrt(target / r).round()
    ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    first = ok.float().argmax(dim=1, keepdim=True)
    cw = torch.gather(cw, 1, first).squeeze(1)
    ch = torch.gather(ch, 1, first).squeeze(1)
    # Fallback (no valid attempt): whole image clamped to the ratio range, as torchvision does.
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(h * ratio[1]), h
    else:
        fw, fh = w, h
    has = ok.any(dim=1)
    cw = torch.where(has, cw, torch.full_like(cw, fw))
    ch = torch.where(has, ch, torch.full_like(ch, fh))
    u = rng.uniform(2)
    x0 = torch.floor(u[:, 0] * (w - cw + 1)).clamp(max=w - cw)
    y0 = torch.floor(u[:, 1] * (h - ch + 1)).clamp(max=h - ch)
    x0 = torch.where(has, x0, torch.full_like(x0, (w - fw) // 2))
    y0 = torch.where(has, y0, torch.full_like(y0, (h - fh) // 2))
    return x0, y0, cw, ch


def _rrc_boxes_within(rng: BatchRandom, h: torch.Tensor, w: torch.Tensor, scale, ratio, attempts: int = 10):
    """_rrc_boxes with each image's own extent (float tensors h, w): boxes over the whole image."""
    area = (h * w)[:, None]
    target = rng.uniform(attempts, low=scale[0], high=scale[1]) * area
    log_r = rng.uniform(attempts, low=math.log(ratio[0]), high=math.log(ratio[1]))
    r = torch.exp(log_r)
    cw = torch.sqrt(target * r).round()
    ch = torch.sqrt(target / r).round()
    ok = (cw > 0) & (ch > 0) & (cw <= w[:, None]) & (ch <= h[:, None])
    first = ok.float().argmax(dim=1, keepdim=True)
    cw = torch.gather(cw, 1, first).squeeze(1)
    ch = torch.gather(ch, 1, first).squeeze(1)
    in_ratio = w / h
    narrow, wide = in_ratio < ratio[0], in_ratio > ratio[1]
    fw = torch.where(wide, (h * ratio[1]).round(), w)
    fh = torch.where(narrow, (w / ratio[0]).round(), h)
    has = ok.any(dim=1)
    cw = torch.where(has, cw, fw)
    ch = torch.where(has, ch, fh)
    u = rng.uniform(2)
    x0 = torch.minimum(torch.floor(u[:, 0] * (w - cw + 1)), w - cw)
    y0 = torch.minimum(torch.floor(u[:, 1] * (h - ch + 1)), h - ch)
    x0 = torch.where(has, x0, torch.floor((w - fw) / 2))
    y0 = torch.where(has, y0, torch.floor((h - fh) / 2))
    return x0, y0, cw, ch


def random_resized_crop(x: torch.Tensor, rng: BatchRandom, size: int, scale, ratio, flip: torch.Tensor,
                        extents: torch.Tensor | None = None):
    """Crop boxes sampled per image (within its extent, when given) and resampled to size x size
    (bicubic); flip folded in."""
    b, c, h, w = x.shape
    if extents is None:
        x0, y0, cw, ch = _rrc_boxes(rng, h, w, scale, ratio)
    else:
        e = extents.to(x.dtype)
        x0, y0, cw, ch = _rrc_boxes_within(rng, e[:, 0], e[:, 1], scale, ratio)
    sx = cw / w
    sy = ch / h
    tx = (2 * x0 + cw) / w - 1
    ty = (2 * y0 + ch) / h - 1
    sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), (b, c, size, size), align_corners=False)
    out = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)


def pad_crop(x: torch.Tensor, rng: BatchRandom, size: int, pad: int) -> torch.Tensor:
    """Resize to size, reflect-pad by `pad`, take a random size x size window per image."""
    x = resize(x, size)
    b = x.shape[0]
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    off = rng.randint(2 * pad + 1, 2)
    ar = torch.arange(size, device=x.device)
    rows = (off[:, 0:1] + ar)[:, :, None]
    cols = (off[:, 1:2] + ar)[:, None, :]
    bidx = torch.arange(b, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2)


def _reflect(i: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Index i of a row of n pixels, reflected at both ends without repeating the edge (as F.pad)."""
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def pad_crop_within(stored: StoredImages, rng: BatchRandom, size: int, pad: int) -> torch.Tensor:
    """LUT's view of whole images: Resize(size) (shorter side), then RandomCrop(size, padding=pad,
    reflect): each image's window moves over its whole padded extent, (h + 2 pad - size + 1) x
    (w + 2 pad - size + 1) positions."""
    x, ext = to_float(stored.images), stored.extents
    if stored.short != size:  # every shorter side is `short`: one resize of the buffer for the batch
        f = size / stored.short
        x = F.interpolate(x, size=(round(x.shape[-2] * f), round(x.shape[-1] * f)), mode="bilinear",
                          antialias=True, align_corners=False)
        ext = (ext.double() * f).round().long()
    b = x.shape[0]
    h, w = ext[:, 0].clamp(max=x.shape[-2]), ext[:, 1].clamp(max=x.shape[-1])
    u = rng.uniform(2)
    oy = torch.floor(u[:, 0] * (h + 2 * pad - size + 1).clamp(min=1)).long()
    ox = torch.floor(u[:, 1] * (w + 2 * pad - size + 1).clamp(min=1)).long()
    ar = torch.arange(size, device=x.device)
    rows = _reflect(oy[:, None] + ar - pad, h[:, None]).clamp(0, x.shape[-2] - 1)[:, :, None]
    cols = _reflect(ox[:, None] + ar - pad, w[:, None]).clamp(0, x.shape[-1] - 1)[:, None, :]
    bidx = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[bidx, rows, cols].permute(0, 3, 1, 2)


# ---- photometry -----------------------------------------------------------------------------


def grayscale(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).expand_as(x)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * a + (1 - f) * b).clamp_(0.0, 1.0)


def adjust_brightness(x, f):
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x, f):
    mean = grayscale(x)[:, :1].mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean.expand_as(x), f)


def adjust_saturation(x, f):
    return x if x.shape[1] == 1 else _blend(x, grayscale(x), f)


def _rgb_to_hsv(x: torch.Tensor):
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = delta / maxc.clamp(min=1e-12)
    d = delta.clamp(min=1e-12)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return h, s, maxc


def _hsv_to_rgb(h, s, v):
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros(h.shape[0], 3, *h.shape[1:], device=h.device, dtype=h.dtype)
    for k, (rr, gg, bb) in enumerate(choices):
        sel = (i == k).unsqueeze(1)
        out = torch.where(sel, torch.stack([rr, gg, bb], 1), out)
    return out


def adjust_hue(x, f):
    if x.shape[1] == 1:
        return x
    h, s, v = _rgb_to_hsv(x)
    h = (h + f.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(h, s, v).clamp_(0.0, 1.0)


def solarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return torch.where(x >= threshold, 1.0 - x, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (grouped convolution)."""
    b, c, h, w = x.shape
    half = kernel // 2
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = k / k.sum(dim=1, keepdim=True)
    k = k.repeat_interleave(c, dim=0)  # (b*c, kernel)
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (half, half, half, half), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, kernel, 1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel), groups=b * c)
    return y.view(b, c, h, w)


def blur_kernel_size(img_size: int) -> int:
    k = max(3, round(0.1 * img_size))
    return k if k % 2 else k + 1


def random_jitter(x: torch.Tensor, rng: BatchRandom, spec: AugmentSpec) -> torch.Tensor:
    """ColorJitter(spec.jitter) applied to each image with probability spec.jitter_p."""
    bri, con, sat, hue = spec.jitter
    apply = rng.uniform() < spec.jitter_p
    fb = rng.uniform(low=1 - bri, high=1 + bri)
    fc = rng.uniform(low=1 - con, high=1 + con)
    fs = rng.uniform(low=1 - sat, high=1 + sat)
    fh = rng.uniform(low=-hue, high=hue)
    order = rng.shared_permutation(4).tolist()
    y = x
    for op in order:
        if op == 0:
            y = adjust_brightness(y, fb)
        elif op == 1:
            y = adjust_contrast(y, fc)
        elif op == 2:
            y = adjust_saturation(y, fs)
        else:
            y = adjust_hue(y, fh)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


def color_view(x: torch.Tensor, rng: BatchRandom, spec: AugmentSpec) -> torch.Tensor:
    x = random_jitter(x, rng, spec)
    # exactly one of grayscale / solarize / blur per image
    choice = rng.randint(3).view(-1, 1, 1, 1)
    sigma = rng.uniform(low=spec.blur_sigma[0], high=spec.blur_sigma[1])
    blurred = gaussian_blur(x, sigma, blur_kernel_size(x.shape[-1]))
    return torch.where(choice == 0, grayscale(x), torch.where(choice == 1, solarize(x), blurred))


def _with_p(x: torch.Tensor, rng: BatchRandom, p: float, op) -> torch.Tensor:
    """op(x) for each image with probability p (nothing drawn when p is 0)."""
    if p <= 0:
        return x
    apply = (rng.uniform() < p).view(-1, 1, 1, 1)
    return torch.where(apply, op(x), x)


def dino_color_view(x: torch.Tensor, rng: BatchRandom, spec: AugmentSpec) -> torch.Tensor:
    """DINO's photometry: jitter, grayscale, blur, solarize, each with its own probability."""
    x = random_jitter(x, rng, spec)
    x = _with_p(x, rng, spec.grayscale_p, grayscale)
    if spec.blur_p > 0:
        sigma = rng.uniform(low=spec.blur_sigma[0], high=spec.blur_sigma[1])
        x = _with_p(x, rng, spec.blur_p, lambda y: gaussian_blur(y, sigma, blur_kernel_size(y.shape[-1])))
    return _with_p(x, rng, spec.solarize_p, solarize)


class BatchAugment:
    """uint8 (B, C, H, W) -> normalised float (B, C, S, S), one view."""

    def __init__(self, spec: AugmentSpec):
        self.spec = spec

    def __call__(self, images: torch.Tensor | StoredImages, rng: BatchRandom) -> torch.Tensor:
        s = self.spec
        stored = None
        if isinstance(images, StoredImages):
            stored, images = (None if images.full else images), images.images
        x = to_float(images) if stored is None or s.crop == "rrc" else None
        b, dev = images.shape[0], images.device
        flip = rng.uniform() < 0.5 if s.flip else torch.zeros(b, dtype=torch.bool, device=dev)
        if s.crop == "rrc":
            x = random_resized_crop(x, rng, s.img_size, s.rrc_scale, s.rrc_ratio, flip,
                                    None if stored is None else stored.extents)
        else:
            if stored is not None:
                x = (pad_crop_within(stored, rng, s.img_size, s.pad) if s.crop == "pad"
                     else resize(to_float(centre_squares(stored.images, stored.extents)), s.img_size))
            else:
                x = pad_crop(x, rng, s.img_size, s.pad) if s.crop == "pad" else resize(x, s.img_size)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if s.color:
            x = color_view(x, rng, s)
        elif s.color_dino:
            x = dino_color_view(x, rng, s)
        return _normalize(x, s.mean, s.std)
