"""Swin UNETR (MONAI) with petite's model contract, for the multi-modal (PEMMA) work.

A thin subclass of :class:`monai.networks.nets.SwinUNETR` (MONAI >= 1.5 has no
``img_size`` argument: the network is fully convolutional/windowed).  It adds
the contract attributes and pads inputs to a multiple of 32 (patch 2 x four
2x patch-merging stages) so any volume shape works; the output is cropped back.

Swin's attention keeps MONAI's fused ``qkv`` Linear, so the ``query``/``key``/
``value`` roles are empty and an extra role ``qkv`` names the fused layers
(PEMMA applies LoRA/DoRA to ``qkv``, ``proj`` and the MLP linears).  There are
no prompt sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import SwinUNETR as _MonaiSwinUNETR

from petite.models.blocks.padding import crop_to_shape, pad_to_multiple
from petite.models.contract import init_contract

#: Total downsampling of Swin UNETR: patch 2, then four 2x patch-merging stages.
SWIN_MULTIPLE = 32

SWIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(in_channels=1, out_channels=3, feature_size=48, depths=[2, 2, 2, 2],
                  num_heads=[3, 6, 12, 24], window_size=7, use_v2=False),
    "small": dict(in_channels=1, out_channels=3, feature_size=24, depths=[2, 2, 2, 2],
                  num_heads=[3, 6, 12, 24], window_size=4, use_v2=False),
    "tiny": dict(in_channels=1, out_channels=3, feature_size=12, depths=[1, 1, 1, 1],
                 num_heads=[1, 2, 2, 4], window_size=4, use_v2=False),
}

_DECODER = ["encoder1", "encoder2", "encoder3", "encoder4", "encoder10",
            "decoder5", "decoder4", "decoder3", "decoder2", "decoder1"]


class SwinUNETR(_MonaiSwinUNETR):
    """MONAI's Swin UNETR with the petite model contract and shape padding.

    Args:
        in_channels / out_channels: input channels (e.g. 2 for CT+PET) and output classes.
        feature_size: embedding width (a multiple of 12).
        depths / num_heads: Swin blocks and heads per stage.
        window_size: attention window (clamped by MONAI on small grids).
        use_v2: MONAI's SwinUNETR-V2 residual conv blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        use_v2: bool = False,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            use_v2=use_v2,
        )
        init_contract(
            self,
            config=dict(name="swin_unetr", preset=None, in_channels=in_channels, out_channels=out_channels,
                        feature_size=feature_size, depths=list(depths), num_heads=list(num_heads),
                        window_size=window_size, use_v2=use_v2),
            components={"encoder": ["swinViT"], "decoder": [*_DECODER, "out"]},
            peft_roles={
                "query": [],
                "key": [],
                "value": [],
                "qkv": ["swinViT.*.attn.qkv"],
                "attn_out": ["swinViT.*.attn.proj"],
                "mlp": ["swinViT.*.blocks.*.mlp"],
                "mlp_out": ["swinViT.*.blocks.*.mlp.linear2"],
                "norm": ["swinViT.*.norm1", "swinViT.*.norm2"] + [f"{b}.*norm[0-9]" for b in _DECODER],
                "conv": [f"{b}.*.conv" for b in _DECODER] + ["out.conv.conv"],
                "conv_block": list(_DECODER),
                "prompt_site": [],
            },
            # Recomputable in backward: each Swin stage, each CNN block of the decoder path.
            checkpoint_blocks=["swinViT.layers*.*", *_DECODER],
        )

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Segment ``(B, in_channels, D, H, W)`` of any size (padded to a multiple of 32 and cropped back)."""
        x, spatial = pad_to_multiple(x_in, SWIN_MULTIPLE)
        return crop_to_shape(super().forward(x), spatial)
