"""Swin UNETR with the petite contract."""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from petite.models import (
    build_model,
)

NORM_TYPES = (nn.LayerNorm, nn.InstanceNorm3d, nn.BatchNorm3d)
CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(name: str, **overrides):
    return build_model(name, "tiny", **overrides)


@pytest.mark.parametrize("shape", [(64, 64, 32), (40, 36, 20)])
def test_swin_unetr_any_shape(shape) -> None:
    model = tiny("swin_unetr").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, *shape))
    assert out.shape == (1, model.config["out_channels"], *shape)
