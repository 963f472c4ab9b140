"""What the PEMMA tests share: tiny in-memory cases and inputs, and the CLI options of tiny runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

#: The tiny UNETR's crop (img_size 16^3, patch 8).
SIZE = 16
EQUAL_MODES = {"ctpet": 1 / 3, "ct": 1 / 3, "pet": 1 / 3}
#: ``petite mm pretrain`` options of a tiny, fast, quiet CPU run.
TRAIN = ["--preset", "tiny", "--crop", "16,16,16", "--batch-size", "1", "--device", "cpu", "--quiet"]
#: ``petite mm adapt`` options of a fast, quiet CPU run.
FAST = ["--batch-size", "1", "--device", "cpu", "--quiet"]


def make_cases(n: int = 2, shape: tuple[int, int, int] = (24, 24, 20), seed: int = 0) -> list[dict]:
    """``n`` loaded-case dicts with a GTVp and a GTVn cube that CT and PET both show."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for k in range(n):
        label = torch.zeros(1, *shape, dtype=torch.int64)
        label[0, 3:8, 3:8, 3:8] = 1
        label[0, 14:19, 12:17, 10:15] = 2
        ct = torch.rand(1, *shape, generator=gen) * 0.5 + 0.25 * (label > 0)
        pet = torch.randn(1, *shape, generator=gen) + 3.0 * (label > 0)
        cases.append({"ct": ct, "pet": pet, "label": label, "patient": f"P{k}", "centre": "A"})
    return cases


def random_inputs(batch: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded ``(ct, pet)`` pair of crop-sized inputs."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, SIZE, SIZE, SIZE, generator=gen), torch.randn(batch, 1, SIZE, SIZE, SIZE, generator=gen)


def file_sha(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
