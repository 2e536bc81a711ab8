"""The one evaluation view of a dataset, whatever crop the encoder was trained with.

kNN, linear probe, fine-tune evaluation and the analyses all look at the same deterministic view,
so two objectives trained with different crops (MAE's RandomResizedCrop, LUT's pad-crop) are
judged on the same pixels:

- image folders: the shorter side resized to img_size / 0.875, then an img_size centre crop
  (the usual ImageNet evaluation: 256 -> 224);
- small data (Fashion-MNIST, or any model input of at most 64 px): the native image, resized to
  the model input only when the sizes differ; a 0.875 crop would cut away the border of a
  28 or 32 px image, where such objects often touch the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from unmasked.data.dataset import is_fashion_mnist

CENTRE_CROP_PCT = 0.875
SMALL_IMAGE_PX = 64  # model inputs up to this size are evaluated on the whole image
FASHION_MNIST_PX = 28


@dataclass(frozen=True)
class EvalView:
    img_size: int  # what the encoder sees
    base_size: int  # images are decoded to base x base (shorter side resized, centre square)
    crop_pct: float  # eval_view resizes to img_size / crop_pct, then centre-crops img_size

    def describe(self) -> dict:
        """The record a result file keeps of the view it was computed on."""
        if self.crop_pct < 1.0:
            text = f"resize shorter side to {round(self.img_size / self.crop_pct)}, centre crop {self.img_size}"
        elif self.base_size == self.img_size:
            text = f"native {self.base_size} px image"
        else:
            text = f"native {self.base_size} px image resized to {self.img_size}"
        return {"resize": round(self.img_size / self.crop_pct), "crop": self.img_size, "crop_pct": self.crop_pct,
                "base_size": self.base_size, "description": text}


def eval_view_for(data: str, img_size: int) -> EvalView:
    """The evaluation view of `data` for an encoder with `img_size` inputs (not of its training crop)."""
    if is_fashion_mnist(data):
        return EvalView(img_size, FASHION_MNIST_PX, 1.0)
    if img_size <= SMALL_IMAGE_PX:
        return EvalView(img_size, img_size, 1.0)
    return EvalView(img_size, round(img_size / CENTRE_CROP_PCT), CENTRE_CROP_PCT)
