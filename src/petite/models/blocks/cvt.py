"""3D Convolutional vision Transformer (CvT, Wu et al. 2021) blocks, as used by 3D CVT-GAN.

Layout of one attention layer (:class:`ConvAttention3d`):

    tokens (B, N, C) -> volume (B, C, D, H, W)
      -> conv_q: depthwise Conv3d(k3, stride 1, no bias) + BatchNorm3d -> tokens -> to_q (Linear)
      -> conv_k: depthwise Conv3d(k3, stride 2, no bias) + BatchNorm3d -> tokens -> to_k (Linear)
      -> conv_v: same as conv_k                                             -> to_v (Linear)
      -> multi-head attention -> out_proj (Linear)

Extra tokens (VPT prompts) are handled like CvT's class token: they are split
off before the convolutional projection (they have no position in the volume),
concatenated back in front of the projected tokens, and go through the linear
q/k/v projections only.  A stage removes them before reshaping to a volume.
There is no position embedding: the convolutions carry position.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock

from petite.models.contract import mark_prompt_site


def _depthwise_projection(dim: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(dim, dim, kernel_size=3, stride=stride, padding=1, groups=dim, bias=False),
        nn.BatchNorm3d(dim),
    )


class ConvAttention3d(nn.Module):
    """CvT multi-head self-attention with depthwise-conv projections (q stride 1, k/v stride ``kv_stride``)."""

    def __init__(self, dim: int, num_heads: int, kv_stride: int = 2, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.conv_q = _depthwise_projection(dim, 1)
        self.conv_k = _depthwise_projection(dim, kv_stride)
        self.conv_v = _depthwise_projection(dim, kv_stride)
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, spatial: tuple[int, int, int], n_extra: int = 0) -> torch.Tensor:
        """``x``: (B, n_extra + D*H*W, C) tokens, the first ``n_extra`` being prompts."""
        b, _, c = x.shape
        extra, tokens = x[:, :n_extra], x[:, n_extra:]
        volume = tokens.transpose(1, 2).reshape(b, c, *spatial)

        def project(conv: nn.Module, linear: nn.Linear) -> torch.Tensor:
            projected = conv(volume).flatten(2).transpose(1, 2)
            return linear(torch.cat([extra, projected], dim=1) if n_extra else projected)

        q = self._heads(project(self.conv_q, self.to_q))
        k = self._heads(project(self.conv_k, self.to_k))
        v = self._heads(project(self.conv_v, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, -1, c))


class CvTBlock(nn.Module):
    """Pre-LayerNorm transformer block with :class:`ConvAttention3d` and a GELU MLP (MONAI ``MLPBlock``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, kv_stride: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ConvAttention3d(dim, num_heads, kv_stride=kv_stride)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), dropout_rate=0.0, act="GELU")

    def forward(self, x: torch.Tensor, spatial: tuple[int, int, int], n_extra: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), spatial, n_extra)
        return x + self.mlp(self.norm2(x))


def _run_blocks(
    blocks: nn.ModuleList, volume: torch.Tensor, norm: nn.LayerNorm, prompts: torch.Tensor | None
) -> torch.Tensor:
    """Tokenise ``volume``, run ``blocks`` (with optional prompts in front), return a volume."""
    b, c, *spatial_list = volume.shape
    spatial = (spatial_list[0], spatial_list[1], spatial_list[2])
    x = norm(volume.flatten(2).transpose(1, 2))
    n_extra = 0
    if prompts is not None:
        x = torch.cat([prompts.unsqueeze(0).expand(b, -1, -1).to(x.dtype), x], dim=1)
        n_extra = prompts.shape[0]
    for block in blocks:
        x = block(x, spatial, n_extra)
    # Prompts leave here: only the spatial tokens become the output volume.
    return x[:, n_extra:].transpose(1, 2).reshape(b, c, *spatial)


class CvTStage(nn.Module):
    """Down stage: conv token embedding (Conv3d k3 s2 p1 + LayerNorm) then ``depth`` CvT blocks.

    Halves each spatial size (ceil).  A VPT prompt site: ``prompts`` (p, out_channels)
    are prepended to the stage's tokens and removed before the output is reshaped.
    """

    def __init__(
        self, in_channels: int, out_channels: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
        prompt_tokens: int = 8,
    ) -> None:
        super().__init__()
        self.embed = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.embed_norm = nn.LayerNorm(out_channels)
        self.blocks = nn.ModuleList(CvTBlock(out_channels, num_heads, mlp_ratio) for _ in range(depth))
        mark_prompt_site(self, out_channels, prompt_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_blocks(self.blocks, self.embed(x), self.embed_norm, self.prompts)


class CvTUpStage(nn.Module):
    """Up stage: ConvTranspose3d(k2, s2) token embedding, skip concatenation, conv fusion, LayerNorm, CvT blocks.

    The fusion (``fuse``: :class:`ResidualConvBlock`, a k3 conv with a 1x1x1
    residual) maps the concatenation [upsampled, skip] back to ``out_channels``
    before the tokens enter the transformer blocks.  Also a VPT prompt site
    (the paper's Table 6 prompts the decoder too).
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, depth: int, num_heads: int,
        mlp_ratio: float = 4.0, prompt_tokens: int = 8,
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2)
        self.fuse = ResidualConvBlock(out_channels + skip_channels, out_channels)
        self.embed_norm = nn.LayerNorm(out_channels)
        self.blocks = nn.ModuleList(CvTBlock(out_channels, num_heads, mlp_ratio) for _ in range(depth))
        mark_prompt_site(self, out_channels, prompt_tokens)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([self.up(x), skip], dim=1))
        return _run_blocks(self.blocks, x, self.embed_norm, self.prompts)


class ConvNormAct(nn.Module):
    """Conv3d (k3 p1, given stride) + BatchNorm3d + LeakyReLU(0.2); ``norm=False`` drops the norm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        self.norm = nn.BatchNorm3d(out_channels) if norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResidualConvBlock(nn.Module):
    """Conv bottleneck: ConvNormAct(k3) plus a 1x1x1 convolution on the residual path."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels)
        self.act = nn.LeakyReLU(0.2)
        self.skip = nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x))) + self.skip(x)
