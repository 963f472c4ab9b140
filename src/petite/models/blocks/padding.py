"""Pad a volume batch to a multiple of a network's total downsampling factor, and crop back.

Fully convolutional encoder-decoders with ``k`` stride-2 stages need every
spatial size to be a multiple of ``2**k`` so that the skip connections line up.
Rather than refusing other shapes (a 128x128x63 scanner grid, a sliding-window
tile at a volume's edge), the models pad with :func:`pad_to_multiple`, run, and
crop the output back with :func:`crop_to_shape`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = "constant", value: float = 0.0
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial dims of ``x`` (B, C, *spatial) up to multiples of ``multiple``.

    Padding is split as evenly as possible between both sides (the extra voxel,
    if any, goes after), so the border effect is symmetric.  Returns the padded
    tensor and the original spatial shape (for :func:`crop_to_shape`).
    ``mode`` is any mode of :func:`torch.nn.functional.pad`.
    """
    spatial = tuple(int(s) for s in x.shape[2:])
    mults = [int(multiple)] * len(spatial) if isinstance(multiple, int) else [int(m) for m in multiple]
    if len(mults) != len(spatial):
        raise ValueError(f"multiple {multiple} does not match {len(spatial)} spatial dims")
    pads: list[int] = []
    # F.pad takes (last dim before, last dim after, second-to-last before, ...).
    for size, mult in reversed(list(zip(spatial, mults))):
        total = (-size) % mult
        pads += [total // 2, total - total // 2]
    if not any(pads):
        return x, spatial
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=value), spatial
    return F.pad(x, pads, mode=mode), spatial


def crop_to_shape(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: centre-crop the spatial dims of ``x`` to ``spatial``.

    The crop offsets match the padding split of :func:`pad_to_multiple`
    (``(padded - original) // 2`` before).
    """
    slices: list[slice] = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], spatial):
        before = (int(have) - int(want)) // 2
        slices.append(slice(before, before + int(want)))
    return x[tuple(slices)]
