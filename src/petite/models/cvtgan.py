"""3D CVT-GAN (Zeng et al. 2022): a U-shaped CvT generator and a conditional CvT patch discriminator.

Generator (resolution relative to the input):

    stem       ConvNormAct(in -> c0, stride 2), ConvNormAct(c0 -> c0)     1/2
    down.0     CvTStage(c0 -> c1, depth 1, 2 heads)                        1/4
    down.1     CvTStage(c1 -> c2, depth 2, 4 heads)   VPT site (8 tokens)  1/8
    down.2     CvTStage(c2 -> c3, depth 2, 4 heads)   VPT site (32 tokens) 1/16
    bottleneck ResidualConvBlock(c3 -> c3): k3 conv + 1x1 residual         1/16
    up.0       CvTUpStage(c3 -> c2, skip = down.1, depth 2, 4 heads)   VPT site (32 tokens) 1/8
    up.1       CvTUpStage(c2 -> c1, skip = down.0, depth 1, 2 heads)   VPT site (8 tokens)  1/4
    head       ConvTranspose(c1 -> c1), concat stem, ResidualConvBlock
               (c1 + c0 -> c0), ConvTranspose(c0 -> c0), Conv3d(c0 -> out) 1/1
    output     head(...) + x  (global residual)

(The paper's VPT uses 8 and 32 prompt tokens at down.1 and down.2 in the encoder,
"VPT (0/8/32)", and 32 and 8 at up.0 and up.1 in the decoder, "VPT (32/8)", Table 6.)

The paper preset (c = 64, 128, 256, 512) has 28,574,145 generator (BRIEF: about 28.7 M)
parameters.  **Divisibility**: the generator downsamples by 16 (stem and three
stages, each stride 2), so every spatial size must be a multiple of 16 for the
skips to line up; ``forward`` pads other shapes (``pad_to_multiple``, zeros by
default) and crops the result back, so any shape works (e.g. 128x128x63).
The 64^3 and 64x64x32 training crops need no padding.

Discriminator (conditional, pix2pix-style): input = concat(short, long or
generated); three conv layers (strides 2, 2, 1), two small CvT stages (stride
2 each), a k3 conv to one channel of patch **logits** (no sigmoid: the losses
below use BCE-with-logits).  300,865 parameters in the paper preset (BRIEF: ~0.3 M).

Components: ``encoder`` = the three CvT down-stages, ``decoder`` = the two CvT
up-stages (their skip fusions included), ``discriminator``; stem, bottleneck
and head belong to no component.  PEFT never touches the discriminator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from petite.models.blocks.cvt import (
    ConvNormAct,
    CvTStage,
    CvTUpStage,
    ResidualConvBlock,
)
from petite.models.blocks.padding import crop_to_shape, pad_to_multiple
from petite.models.contract import init_contract

#: Total downsampling factor of the generator (stem + three stride-2 stages).
GENERATOR_MULTIPLE = 16

CVTGAN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(
        in_channels=1, channels=[64, 128, 256, 512], depths=[1, 2, 2], heads=[2, 4, 4],
        up_depths=[2, 1], up_heads=[4, 2], mlp_ratio=4.0,
        disc_channels=[16, 16, 32], disc_stage_channels=[64, 64], disc_depths=[1, 1], disc_heads=[1, 1],
        pad_mode="constant",
    ),
    "small": dict(
        in_channels=1, channels=[16, 32, 64, 128], depths=[1, 2, 2], heads=[1, 2, 2],
        up_depths=[2, 1], up_heads=[2, 1], mlp_ratio=4.0,
        disc_channels=[8, 8, 16], disc_stage_channels=[32, 32], disc_depths=[1, 1], disc_heads=[1, 1],
        pad_mode="constant",
    ),
    "tiny": dict(
        in_channels=1, channels=[8, 16, 32, 64], depths=[1, 2, 2], heads=[1, 2, 2],
        up_depths=[2, 1], up_heads=[2, 1], mlp_ratio=2.0,
        disc_channels=[4, 4, 8], disc_stage_channels=[16, 16], disc_depths=[1, 1], disc_heads=[1, 1],
        pad_mode="constant",
    ),
}


class OutputHead(nn.Module):
    """From the 1/4-resolution decoder output back to full size, fusing the stem features at 1/2."""

    def __init__(self, in_channels: int, stem_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose3d(in_channels, in_channels, kernel_size=2, stride=2)
        self.fuse = ResidualConvBlock(in_channels + stem_channels, stem_channels)
        self.up2 = nn.ConvTranspose3d(stem_channels, stem_channels, kernel_size=2, stride=2)
        # Full resolution is the costliest place for compute: one thin k3 conv only.
        self.out = nn.Conv3d(stem_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, stem: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([self.up1(x), stem], dim=1))
        return self.out(self.up2(x))


class CvTGenerator(nn.Module):
    """U-shaped CvT generator with a global residual (see module docstring)."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        depths: Sequence[int],
        heads: Sequence[int],
        up_depths: Sequence[int],
        up_heads: Sequence[int],
        mlp_ratio: float,
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        if len(channels) != 4 or len(depths) != 3 or len(heads) != 3 or len(up_depths) != 2 or len(up_heads) != 2:
            raise ValueError("need 4 channels, 3 depths/heads and 2 up_depths/up_heads")
        c0, c1, c2, c3 = (int(c) for c in channels)
        self.pad_mode = pad_mode
        self.stem = nn.Sequential(ConvNormAct(in_channels, c0, stride=2), ConvNormAct(c0, c0))
        self.down = nn.ModuleList(
            CvTStage(cin, cout, d, h, mlp_ratio, prompt_tokens=p)
            for cin, cout, d, h, p in zip((c0, c1, c2), (c1, c2, c3), depths, heads, (8, 8, 32))
        )
        self.bottleneck = ResidualConvBlock(c3, c3)
        self.up = nn.ModuleList(
            [
                CvTUpStage(c3, c2, c2, up_depths[0], up_heads[0], mlp_ratio, prompt_tokens=32),
                CvTUpStage(c2, c1, c1, up_depths[1], up_heads[1], mlp_ratio, prompt_tokens=8),
            ]
        )
        self.head = OutputHead(c1, c0, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``(B, C, D, H, W)`` of any spatial size (padded to a multiple of 16, cropped back)."""
        xp, spatial = pad_to_multiple(x, GENERATOR_MULTIPLE, mode=self.pad_mode)
        s = self.stem(xp)
        d0 = self.down[0](s)
        d1 = self.down[1](d0)
        d2 = self.down[2](d1)
        u = self.up[0](self.bottleneck(d2), d1)
        u = self.up[1](u, d0)
        return crop_to_shape(self.head(u, s) + xp, spatial)


class PatchDiscriminator(nn.Module):
    """Conditional CvT patch discriminator returning logits (no sigmoid)."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        stage_channels: Sequence[int],
        depths: Sequence[int],
        heads: Sequence[int],
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        a, b, c = (int(ch) for ch in channels)
        # Three conv layers: no norm on the first (pix2pix convention), strides 2, 2, 1.
        self.conv1 = ConvNormAct(in_channels, a, stride=2, norm=False)
        self.conv2 = ConvNormAct(a, b, stride=2)
        self.conv3 = ConvNormAct(b, c, stride=1)
        s0, s1 = (int(ch) for ch in stage_channels)
        self.stages = nn.ModuleList(
            [CvTStage(c, s0, depths[0], heads[0], mlp_ratio), CvTStage(s0, s1, depths[1], heads[1], mlp_ratio)]
        )
        self.out = nn.Conv3d(s1, 1, kernel_size=3, padding=1)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Patch logits for ``image`` (real long scan or generated) given ``condition`` (short scan)."""
        x = self.conv3(self.conv2(self.conv1(torch.cat([condition, image], dim=1))))
        for stage in self.stages:
            x = stage(x)
        return self.out(x)


class CvTGAN(nn.Module):
    """3D CVT-GAN: ``forward`` is the generator's; ``generator`` and ``discriminator`` are attributes."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (1, 2, 2),
        heads: Sequence[int] = (2, 4, 4),
        up_depths: Sequence[int] = (2, 1),
        up_heads: Sequence[int] = (4, 2),
        mlp_ratio: float = 4.0,
        disc_channels: Sequence[int] = (16, 16, 32),
        disc_stage_channels: Sequence[int] = (64, 64),
        disc_depths: Sequence[int] = (1, 1),
        disc_heads: Sequence[int] = (1, 1),
        pad_mode: str = "constant",
    ) -> None:
        super().__init__()
        self.generator = CvTGenerator(in_channels, channels, depths, heads, up_depths, up_heads, mlp_ratio, pad_mode)
        self.discriminator = PatchDiscriminator(
            2 * in_channels, disc_channels, disc_stage_channels, disc_depths, disc_heads, mlp_ratio
        )
        g = "generator"
        init_contract(
            self,
            config=dict(
                name="cvtgan", preset=None, in_channels=in_channels, channels=list(channels), depths=list(depths),
                heads=list(heads), up_depths=list(up_depths), up_heads=list(up_heads), mlp_ratio=mlp_ratio,
                disc_channels=list(disc_channels), disc_stage_channels=list(disc_stage_channels),
                disc_depths=list(disc_depths), disc_heads=list(disc_heads), pad_mode=pad_mode,
            ),
            components={
                "encoder": [f"{g}.down.0", f"{g}.down.1", f"{g}.down.2"],
                "decoder": [f"{g}.up.0", f"{g}.up.1"],
                "discriminator": ["discriminator"],
            },
            # Roles name generator layers only: the discriminator is frozen in PEFT.
            peft_roles={
                "query": [f"{g}.*.attn.to_q"],
                "key": [f"{g}.*.attn.to_k"],
                "value": [f"{g}.*.attn.to_v"],
                "attn_out": [f"{g}.*.attn.out_proj"],
                "mlp": [f"{g}.*.blocks.*.mlp"],
                "mlp_out": [f"{g}.*.blocks.*.mlp.linear2"],
                "norm": [f"{g}.*.norm1", f"{g}.*.norm2", f"{g}.*.embed_norm", f"{g}.stem.*.norm",
                         f"{g}.up.*.fuse.norm", f"{g}.bottleneck.norm", f"{g}.head.fuse.norm"],
                "conv": [f"{g}.stem.*.conv", f"{g}.down.*.embed", f"{g}.up.*.up", f"{g}.up.*.fuse.conv",
                         f"{g}.up.*.fuse.skip", f"{g}.bottleneck.conv", f"{g}.bottleneck.skip", f"{g}.head.up1",
                         f"{g}.head.fuse.conv", f"{g}.head.fuse.skip", f"{g}.head.up2", f"{g}.head.out"],
                "conv_block": [f"{g}.stem", f"{g}.up.*.fuse", f"{g}.bottleneck", f"{g}.head.fuse"],
                "prompt_site": [f"{g}.down.1", f"{g}.down.2", f"{g}.up.0", f"{g}.up.1"],
                # Extra roles: the depthwise-conv q/k/v projections (the reference code's LoRA target).
                "query_conv": [f"{g}.*.attn.conv_q.0"],
                "key_conv": [f"{g}.*.attn.conv_k.0"],
                "value_conv": [f"{g}.*.attn.conv_v.0"],
            },
            frozen_components=["discriminator"],
            # Recomputable in backward: the generator's stages and conv blocks, the discriminator's layers.
            checkpoint_blocks=[f"{g}.stem", f"{g}.down.*", f"{g}.bottleneck", f"{g}.up.*", f"{g}.head",
                               "discriminator.conv*", "discriminator.stages.*"],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The generator: short-scan ``(B, C, D, H, W)`` -> restored volume of the same shape."""
        return self.generator(x)


def generator_loss(
    disc_fake_logits: torch.Tensor, fake: torch.Tensor, target: torch.Tensor, l1_weight: float = 100.0
) -> torch.Tensor:
    """pix2pix generator loss: BCE-with-logits(D(fake), 1) + ``l1_weight`` * L1(fake, target)."""
    adversarial = F.binary_cross_entropy_with_logits(disc_fake_logits, torch.ones_like(disc_fake_logits))
    return adversarial + l1_weight * F.l1_loss(fake, target)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 * (BCE-with-logits(real, 1) + BCE-with-logits(fake, 0)); pass ``fake`` detached."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)
