"""Building blocks of petite's own networks (MONAI's blocks/nets split)."""

from petite.models.blocks.padding import crop_to_shape, pad_to_multiple

__all__ = ["crop_to_shape", "pad_to_multiple"]
