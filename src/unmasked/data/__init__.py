from unmasked.data.augment import AugmentSpec, BatchAugment, eval_view
from unmasked.data.dataset import ImageData, Split, channel_stats, is_fashion_mnist, load_data

__all__ = ["AugmentSpec", "BatchAugment", "eval_view",
           "ImageData", "Split", "channel_stats", "is_fashion_mnist", "load_data"]
