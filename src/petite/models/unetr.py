"""UNETR (Hatamizadeh et al. 2022) assembled from MONAI's blocks, with separate q/k/v layers.

Differences from :class:`monai.networks.nets.UNETR`, all needed for PEFT:

- **separate q, k, v** ``nn.Linear`` layers (``TransformerBlock(...,
  use_combined_linear=False)`` gives ``attn.to_q/to_k/to_v``), so LoRA can adapt
  the query and key projections alone.  :func:`load_monai_unetr_state_dict`
  splits a MONAI checkpoint's fused ``qkv`` rows ``[q; k; v]``.
- **no dead parameters**: MONAI's ``TransformerBlock`` always creates a
  ``norm_cross_attn`` LayerNorm that self-attention never uses; it is replaced
  by ``nn.Identity`` so no count ("% trainable", BitFit, LayerNorm tuning) sees it.
- **configurable depth and patch size**: skips come from the hidden states at
  1/4, 2/4 and 3/4 of the depth (indices ``num_layers * k // 4``, k = 1, 2, 3:
  3, 6, 9 for 12 layers, 1, 2, 3 for 4 layers, 0, 1, 2 for 3 layers), and
  ``patch_size`` may be any power of two from 2 to 16 so small crops still give
  enough tokens.  With patch 16 the decoder is exactly MONAI's; with a smaller
  patch the decoder stages that would upsample beyond the token grid use
  stride-1 (kernel 1) transposed convolutions, keeping MONAI's block names.
- **VPT**: the 2nd transformer block (``vit.blocks.1``) is a prompt site.

``img_size`` is the size of the learnable position embedding, i.e. the crop
the model is trained on; whole volumes go through
``monai.inferers.sliding_window_inference(roi_size=img_size)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import (
    UnetrBasicBlock,
    UnetrPrUpBlock,
    UnetrUpBlock,
)

from petite.errors import UserError
from petite.models.contract import init_contract, mark_prompt_site

#: Constructor arguments of each preset.  ``paper`` is the reference setting of
#: the PETITE paper: 101,670,049 parameters, 88,224,000 in the ViT (img_size 64^3
#: with patch 16 gives the 64 position embeddings that make those counts exact).
UNETR_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(
        in_channels=1, out_channels=1, img_size=[64, 64, 64], patch_size=16, feature_size=32,
        hidden_size=768, mlp_dim=3072, num_layers=12, num_heads=12, proj_type="perceptron",
        pos_embed_type="learnable", norm_name="instance", res_block=True, dropout_rate=0.0, qkv_bias=False,
        residual=False,
    ),
    "small": dict(
        in_channels=1, out_channels=1, img_size=[64, 64, 64], patch_size=8, feature_size=16,
        hidden_size=192, mlp_dim=768, num_layers=6, num_heads=6, proj_type="perceptron",
        pos_embed_type="learnable", norm_name="instance", res_block=True, dropout_rate=0.0, qkv_bias=False,
        residual=False,
    ),
    "tiny": dict(
        in_channels=1, out_channels=1, img_size=[64, 64, 64], patch_size=8, feature_size=8,
        hidden_size=32, mlp_dim=64, num_layers=4, num_heads=2, proj_type="perceptron",
        pos_embed_type="learnable", norm_name="instance", res_block=True, dropout_rate=0.0, qkv_bias=False,
        residual=False,
    ),
}

#: Index of the transformer block that is the VPT prompt site (the 2nd one).
PROMPT_BLOCK = 1


def skip_layers(num_layers: int) -> tuple[int, int, int]:
    """Hidden-state indices used as skips: 1/4, 2/4 and 3/4 of the depth (3, 6, 9 for 12 layers)."""
    return tuple(num_layers * k // 4 for k in (1, 2, 3))  # type: ignore[return-value]


class ViTEncoder(nn.Module):
    """MONAI's ViT layout (``patch_embedding``, ``blocks``, ``norm``) with separate q/k/v and VPT.

    ``forward`` returns the final normalised tokens and the per-block hidden
    states, both with any prompt tokens already removed.
    """

    def __init__(
        self,
        in_channels: int,
        img_size: Sequence[int],
        patch_size: int,
        hidden_size: int,
        mlp_dim: int,
        num_layers: int,
        num_heads: int,
        proj_type: str,
        pos_embed_type: str,
        dropout_rate: float,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type=proj_type,
            pos_embed_type=pos_embed_type,
            dropout_rate=dropout_rate,
            spatial_dims=3,
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(
                hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias=qkv_bias, use_combined_linear=False
            )
            for _ in range(num_layers)
        )
        for block in self.blocks:
            # Unused without cross-attention; an Identity keeps the attribute but owns no parameters.
            block.norm_cross_attn = nn.Identity()
        mark_prompt_site(self.blocks[PROMPT_BLOCK], hidden_size, default_tokens=50)  # the paper's 50 tokens
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.encode_tokens(self.patch_embedding(x))

    def encode_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The transformer on already embedded tokens ``(B, N, hidden)`` (e.g. a fused CT/PET embedding)."""
        n_prompts = 0
        hidden_states: list[torch.Tensor] = []
        for block in self.blocks:
            prompts = getattr(block, "prompts", None)
            if prompts is not None:
                # VPT-shallow: prompts enter here and travel through the later blocks.
                x = torch.cat([prompts.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
                n_prompts += prompts.shape[0]
            x = block(x)
            hidden_states.append(x[:, n_prompts:])
        return self.norm(x)[:, n_prompts:], hidden_states


class UNETR(nn.Module):
    """UNETR for image-to-image regression (e.g. short-scan -> long-scan PET), see module docstring.

    Args:
        in_channels / out_channels: image channels.
        img_size: training crop size (the position embedding's grid times ``patch_size``).
        patch_size: isotropic ViT patch size, a power of two in [2, 16].
        feature_size: channels of the first CNN decoder level (doubled per level).
        hidden_size, mlp_dim, num_layers, num_heads: ViT width, MLP width, depth (>= 3), heads.
        proj_type: MONAI patch embedding, ``"perceptron"`` or ``"conv"``.
        pos_embed_type: ``"learnable"``, ``"sincos"`` or ``"none"``.
        norm_name: decoder normalisation (MONAI name, e.g. ``"instance"``, ``"batch"``).
        res_block: residual CNN blocks in the decoder.
        dropout_rate: ViT dropout.
        qkv_bias: biases on the q/k/v projections.
        residual: predict a correction added to the input (``output = input + net(input)``, as the
            CVT-GAN does; a deviation from UNETR that starts a denoiser at the identity, documented
            in the README).  Needs ``in_channels == out_channels``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: Sequence[int] | int = (64, 64, 64),
        patch_size: int = 16,
        feature_size: int = 32,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        proj_type: str = "perceptron",
        pos_embed_type: str = "learnable",
        norm_name: str | tuple = "instance",
        res_block: bool = True,
        dropout_rate: float = 0.0,
        qkv_bias: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if residual and in_channels != out_channels:
            raise ValueError(f"residual needs in_channels == out_channels, got {in_channels} and {out_channels}")
        self.residual = bool(residual)
        img = [int(img_size)] * 3 if isinstance(img_size, int) else [int(s) for s in img_size]
        patch_size = int(patch_size)
        if len(img) != 3:
            raise ValueError(f"img_size must have 3 entries, got {img_size}")
        if patch_size < 2 or patch_size > 16 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of two in [2, 16], got {patch_size}")
        if any(s % patch_size for s in img):
            raise ValueError(f"img_size {img} must be divisible by patch_size {patch_size}")
        if num_layers < 3:
            raise ValueError(f"num_layers must be >= 3 (skips at 1/4, 2/4, 3/4 depth), got {num_layers}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")

        self.img_size = tuple(img)
        self.patch_size = patch_size
        self.feat_size = tuple(s // patch_size for s in img)
        self.hidden_size = hidden_size
        self.skip_layers = skip_layers(num_layers)
        self.vit = ViTEncoder(
            in_channels, img, patch_size, hidden_size, mlp_dim, num_layers, num_heads,
            proj_type, pos_embed_type, dropout_rate, qkv_bias,
        )

        # Resolution bookkeeping: the tokens live at 1/2**levels; MONAI's decoder
        # (built for levels = 4) has one x2 upsampling per level.
        levels = int(math.log2(patch_size))
        common = dict(spatial_dims=3, kernel_size=3, norm_name=norm_name, res_block=res_block)
        self.encoder1 = UnetrBasicBlock(in_channels=in_channels, out_channels=feature_size, stride=1, **common)
        for j, mult in ((2, 2), (3, 4), (4, 8)):
            # Skip j lives at 1/2**(j-1) (or at the token grid if that is coarser).
            factor = 2 ** (levels - min(j - 1, levels))
            block = UnetrPrUpBlock(
                in_channels=hidden_size,
                out_channels=feature_size * mult,
                num_layer=max(int(math.log2(factor)) - 1, 0),
                stride=1,
                upsample_kernel_size=2 if factor > 1 else 1,
                conv_block=True,
                **common,
            )
            setattr(self, f"encoder{j}", block)
        for k, cin, cout in (
            (5, hidden_size, feature_size * 8),
            (4, feature_size * 8, feature_size * 4),
            (3, feature_size * 4, feature_size * 2),
            (2, feature_size * 2, feature_size),
        ):
            # decoder k upsamples 1/2**(k-1) -> 1/2**(k-2); below the token grid it keeps the size.
            block = UnetrUpBlock(
                in_channels=cin, out_channels=cout, upsample_kernel_size=2 if k - 1 <= levels else 1, **common
            )
            setattr(self, f"decoder{k}", block)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=feature_size, out_channels=out_channels)

        decoder_blocks = ["encoder1", "encoder2", "encoder3", "encoder4", "decoder5", "decoder4", "decoder3", "decoder2"]
        init_contract(
            self,
            config=dict(
                name="unetr", preset=None, in_channels=in_channels, out_channels=out_channels, img_size=list(img),
                patch_size=patch_size, feature_size=feature_size, hidden_size=hidden_size, mlp_dim=mlp_dim,
                num_layers=num_layers, num_heads=num_heads, proj_type=proj_type, pos_embed_type=pos_embed_type,
                norm_name=list(norm_name) if isinstance(norm_name, tuple) else norm_name, res_block=res_block,
                dropout_rate=dropout_rate, qkv_bias=qkv_bias, residual=bool(residual),
            ),
            # The paper's encoder is the ViT; MONAI's "encoder1-4" CNN blocks are the decoder path.
            components={"encoder": ["vit"], "decoder": [*decoder_blocks, "out"]},
            peft_roles={
                "query": ["vit.blocks.*.attn.to_q"],
                "key": ["vit.blocks.*.attn.to_k"],
                "value": ["vit.blocks.*.attn.to_v"],
                "attn_out": ["vit.blocks.*.attn.out_proj"],
                "mlp": ["vit.blocks.*.mlp"],
                "mlp_out": ["vit.blocks.*.mlp.linear2"],
                # MONAI's Convolution wraps the real layer as ".conv" and names norms normN.
                "norm": ["vit.blocks.*.norm1", "vit.blocks.*.norm2", "vit.norm"]
                + [f"{b}.*norm[0-9]" for b in decoder_blocks],
                "conv": [f"{b}.*.conv" for b in decoder_blocks] + ["out.conv.conv"],
                "conv_block": decoder_blocks,
                "prompt_site": [f"vit.blocks.{PROMPT_BLOCK}"],
            },
            # Recomputable in backward: each transformer block, each CNN block of the decoder path.
            checkpoint_blocks=["vit.blocks.*", *decoder_blocks],
        )

    def _tokens_to_volume(self, x: torch.Tensor) -> torch.Tensor:
        # (B, N, C) -> (B, C, D, H, W), the token order of MONAI's patch embedding.
        return x.transpose(1, 2).reshape(x.shape[0], self.hidden_size, *self.feat_size)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *img_size)`` to ``(B, out_channels, *img_size)``."""
        if tuple(x_in.shape[2:]) != self.img_size:
            raise UserError(
                f"UNETR was built for crops of {list(self.img_size)} voxels but got {list(x_in.shape[2:])}; "
                "run whole volumes with sliding_window_inference(roi_size=img_size)"
            )
        x, hidden_states = self.vit(x_in)
        out = self.decode(x, hidden_states, self.encoder1(x_in))
        return out + x_in if self.residual else out

    def decode(self, x: torch.Tensor, hidden_states: list[torch.Tensor], enc1: torch.Tensor) -> torch.Tensor:
        """The CNN decoder: final tokens ``x``, the blocks' hidden states and the first-level skip ``enc1``."""
        enc2 = self.encoder2(self._tokens_to_volume(hidden_states[self.skip_layers[0]]))
        enc3 = self.encoder3(self._tokens_to_volume(hidden_states[self.skip_layers[1]]))
        enc4 = self.encoder4(self._tokens_to_volume(hidden_states[self.skip_layers[2]]))
        dec3 = self.decoder5(self._tokens_to_volume(x), enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        return self.out(self.decoder2(dec1, enc1))


def load_monai_unetr_state_dict(model: UNETR, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a :class:`monai.networks.nets.UNETR` state dict (fused ``qkv``) into ``model``.

    Each ``vit.blocks.N.attn.qkv.weight`` (rows ``[q; k; v]``, and its bias if
    any) is split into ``to_q``/``to_k``/``to_v``; MONAI's unused
    ``norm_cross_attn`` parameters are dropped.  Loading is strict otherwise,
    so the architectures must match (MONAI's UNETR has 12 layers and patch 16).

    Raises:
        UserError: the state dict does not fit the model.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if ".norm_cross_attn." in key:
            continue
        if ".attn.qkv." in key:
            prefix, kind = key.rsplit(".attn.qkv.", 1)
            if value.shape[0] % 3:
                raise UserError(f"{key}: fused qkv has {value.shape[0]} rows, not a multiple of 3")
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                converted[f"{prefix}.attn.{name}.{kind}"] = part.clone()
        else:
            converted[key] = value
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as err:
        raise UserError(f"MONAI UNETR state dict does not fit this model: {err}") from err
