"""PEMMA: upgrade a CT-only segmentation transformer to CT+PET, cheaply and without forgetting.

Design (BRIEF section 7; PEMMA, Saadi et al.).  A trained CT-only UNETR or
Swin UNETR (:func:`petite.pemma.segmentation.build_segmenter`) becomes the
frozen *backbone*; new, small parts are added around it:

- ``pet_embedding``: a PET patch embedding, a copy of the CT one (for UNETR the
  ``PatchEmbeddingBlock`` with its position embedding; for Swin the
  ``patch_embed`` convolution);
- ``pet_skip``: a PET first-level skip block, a copy of ``encoder1`` (the only
  decoder block that reads the raw image);
- ``fusion``: concatenate CT and PET embeddings along channels and project back
  to the embedding width (a 1x1x1 convolution, implemented as an ``nn.Linear``
  over the channel axis, which is the same map); ``skip_fusion`` does the same
  for the two first-level skips;
- ``ct_adapter`` / ``pet_adapter``: residual bottlenecks ``x + up(gelu(down(x)))``
  on the embedding of a modality that comes *alone*; the result goes into its own
  slot of the same fusion and the missing modality's slot is zero.
- LoRA or DoRA (r 8, alpha 16) on every attention q/k/v (Swin: the fused qkv),
  attention output projection and both MLP linears of the backbone's
  transformer, attached with :func:`petite.peft.apply_spec` (scope ``encoder``,
  ``targets=`` option; no change to the PEFT package was needed).

Initialisation, and why the CT-only upgraded model *is* the CT model at first:
the fusion weights are ``[I, 0]`` (identity on the CT half, zero on the PET
half) with bias 0, the adapters' up-projections are zero, LoRA's B is zero
(DoRA's magnitude equals the weight norm).  So for CT alone the fused embedding
is ``I @ (e_ct + 0) + 0 @ 0 + 0 = e_ct`` and the fused skip is the CT skip:
every value entering the frozen backbone is exactly what the CT model computes
(on the CPU bit-for-bit; the test checks 1e-6).  With CT+PET the output is also
the CT model's at init; PET enters as soon as the PET half of the fusion moves
off zero (it gets a gradient at the first step, the PET parts from the second,
as LoRA's A does).

Why this shape: the backbone and the CT path stay untouched, so nothing is
forgotten; the only CT/PET coupling is the fusion, and each modality's own parts
(embedding, skip, adapter) can be trained alone later (:func:`set_trainable`,
:data:`MODALITY_PARTS`): a new centre with PET only updates only PET parts,
which leaves every CT-only prediction unchanged (CT-only inputs never touch
them).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from petite.errors import UserError
from petite.models.blocks.padding import crop_to_shape, pad_to_multiple
from petite.peft import PeftState, Spec, apply_spec, peft_state

#: Trainable parameter groups of a PEMMA model.
GROUPS: tuple[str, ...] = ("lora", "pet", "ct_adapter", "fusion")
#: Groups a single-modality continual adaptation trains (:func:`set_trainable`).
MODALITY_PARTS: dict[str, tuple[str, ...]] = {"pet": ("pet",), "ct": ("ct_adapter",)}
#: Top-level module names of each non-LoRA group.
_GROUP_MODULES: dict[str, tuple[str, ...]] = {
    "pet": ("pet_embedding", "pet_skip", "pet_adapter"),
    "ct_adapter": ("ct_adapter",),
    "fusion": ("fusion", "skip_fusion"),
}
#: LoRA/DoRA targets per architecture: attention q/k/v (Swin: fused qkv), output projection, both MLP linears.
PEMMA_TARGETS: dict[str, tuple[str, ...]] = {
    "unetr": ("query", "key", "value", "attn_out", "*.mlp.linear1", "mlp_out"),
    "swin_unetr": ("qkv", "attn_out", "*.mlp.linear1", "mlp_out"),
}
#: Swin UNETR's total downsampling (patch 2, four 2x merges); inputs are padded to it.
_SWIN_MULTIPLE = 32


def pemma_spec(arch: str, method: str = "lora", r: int = 8, alpha: float = 16.0) -> Spec:
    """The PEFT spec PEMMA applies to the backbone: ``encoder=<method>:r=..:alpha=..:targets=...``.

    Raises:
        UserError: unknown architecture or method other than ``lora`` / ``dora``.
    """
    if arch not in PEMMA_TARGETS:
        raise UserError(f"PEMMA supports {', '.join(PEMMA_TARGETS)}, not {arch!r}")
    if method not in ("lora", "dora"):
        raise UserError(f"PEMMA adapts the backbone with 'lora' or 'dora', not {method!r}")
    targets = "/".join(PEMMA_TARGETS[arch])
    return Spec.parse(f"encoder={method}:r={int(r)}:alpha={float(alpha)!r}:targets={targets}")


class ConcatFusion(nn.Module):
    """Concatenate a CT and a PET feature map along channels and project back: a 1x1x1 conv.

    ``proj`` is an ``nn.Linear(2 * width, width)`` applied over the channel axis
    (the same map as ``Conv3d(2 * width, width, 1)``), initialised to ``[I, 0]``
    with zero bias, so at init the output is the CT input.  A missing modality
    is a zero slot.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = int(width)
        self.proj = nn.Linear(2 * self.width, self.width)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.weight[:, : self.width].copy_(torch.eye(self.width))
            self.proj.bias.zero_()

    def forward(self, ct: torch.Tensor | None, pet: torch.Tensor | None, channel_dim: int = -1) -> torch.Tensor:
        """Fuse ``ct`` and ``pet`` (same shape; either may be None) whose channels are on ``channel_dim``."""
        if ct is None and pet is None:
            raise UserError("PEMMA needs at least one of CT and PET")
        ct = torch.zeros_like(pet) if ct is None else ct  # type: ignore[arg-type]
        pet = torch.zeros_like(ct) if pet is None else pet
        x = torch.cat([ct, pet], dim=channel_dim)
        if channel_dim in (-1, x.ndim - 1):
            return self.proj(x)
        return self.proj(x.movedim(channel_dim, -1)).movedim(-1, channel_dim)


class ModalityAdapter(nn.Module):
    """Residual bottleneck ``x + up(gelu(down(x)))`` over the channel axis; ``up`` starts at zero (identity)."""

    def __init__(self, width: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(int(width), int(bottleneck))
        self.up = nn.Linear(int(bottleneck), int(width))
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
        """Adapt ``x`` whose channels are on ``channel_dim``."""
        last = channel_dim in (-1, x.ndim - 1)
        h = x if last else x.movedim(channel_dim, -1)
        h = h + self.up(F.gelu(self.down(h)))
        return h if last else h.movedim(-1, channel_dim)


class PEMMA(nn.Module):
    """A CT-only UNETR / Swin UNETR upgraded to CT+PET (see the module docstring).

    Args:
        ct_model: a trained CT-only segmenter (``unetr`` or ``swin_unetr`` with
            ``in_channels=1``, no PEFT applied).  It becomes ``self.backbone`` and is
            modified in place (frozen, LoRA/DoRA layers injected).
        method: ``"lora"`` or ``"dora"`` on the backbone's transformer.
        r, alpha: rank and scale numerator (scale = alpha / r).
        adapter_dim: bottleneck of the modality adapters (default ``max(4, width // 8)``).
        peft: a PEFT spec replacing the default :func:`pemma_spec` (``method``/``r``/``alpha`` are then unused).
        fingerprint: hash the backbone before PEFT (needed to save its LoRA part with
            :func:`petite.peft.save_adapter`; off for quick parameter counts).

    ``forward(ct=None, pet=None)`` takes ``(B, 1, X, Y, Z)`` images (at least one)
    and returns ``(B, 3, X, Y, Z)`` logits.  After construction the trainable set
    is every group of :data:`GROUPS` and nothing else.

    Raises:
        UserError: unsupported architecture, multi-channel input, or PEFT already applied.
    """

    accepts_modalities = True

    def __init__(
        self,
        ct_model: nn.Module,
        method: str = "lora",
        r: int = 8,
        alpha: float = 16.0,
        adapter_dim: int | None = None,
        peft: str | Spec | None = None,
        fingerprint: bool = True,
    ) -> None:
        super().__init__()
        base_config = dict(getattr(ct_model, "config", None) or {})
        arch = base_config.get("name")
        if arch not in PEMMA_TARGETS:
            raise UserError(f"PEMMA upgrades a 'unetr' or 'swin_unetr' CT model, not {arch or type(ct_model).__name__!r}")
        if int(base_config.get("in_channels", 1)) != 1:
            raise UserError(f"PEMMA upgrades a single-channel CT model; this one has {base_config['in_channels']} channels")
        if peft_state(ct_model) is not None:
            raise UserError("PEMMA needs the plain CT model; PEFT is already applied to this one")
        spec = Spec.parse(peft) if peft is not None else pemma_spec(arch, method, r, alpha)

        self.arch: str = arch
        self.base_parameters = sum(p.numel() for p in ct_model.parameters())
        if arch == "unetr":
            embedding: nn.Module = ct_model.vit.patch_embedding
            width = int(ct_model.hidden_size)
            self.img_size: tuple[int, int, int] | None = tuple(ct_model.img_size)
        else:
            embedding = ct_model.swinViT.patch_embed
            width = int(base_config["feature_size"])
            self.img_size = None
        skip_width = int(base_config["feature_size"])
        bottleneck = int(adapter_dim) if adapter_dim is not None else max(4, width // 8)
        if bottleneck < 1:
            raise UserError(f"adapter_dim must be >= 1, got {adapter_dim}")

        # New parts first (copies of the CT parts before any PEFT wrapping), then LoRA/DoRA.
        reference = next(ct_model.parameters())
        self.pet_embedding = copy.deepcopy(embedding)
        self.pet_skip = copy.deepcopy(ct_model.encoder1)
        self.fusion = ConcatFusion(width).to(reference)
        self.skip_fusion = ConcatFusion(skip_width).to(reference)
        self.ct_adapter = ModalityAdapter(width, bottleneck).to(reference)
        self.pet_adapter = ModalityAdapter(width, bottleneck).to(reference)
        self.backbone = ct_model
        self.peft_state: PeftState = apply_spec(ct_model, spec, fingerprint=fingerprint)
        self.config: dict[str, Any] = {
            "name": "pemma",
            "base": base_config,
            "peft": spec.to_string(),
            "adapter_dim": bottleneck,
        }
        set_trainable(self, GROUPS)

    # ------------------------------------------------------------------ pieces

    def mode_of(self, ct: torch.Tensor | None, pet: torch.Tensor | None) -> str:
        """``"ctpet"``, ``"ct"`` or ``"pet"`` from which inputs are given."""
        if ct is None and pet is None:
            raise UserError("PEMMA needs at least one of ct= and pet=")
        return "ctpet" if ct is not None and pet is not None else ("ct" if ct is not None else "pet")

    def fuse_embeddings(
        self, e_ct: torch.Tensor | None, e_pet: torch.Tensor | None, channel_dim: int = -1
    ) -> torch.Tensor:
        """Both embeddings: ``fusion(e_ct, e_pet)``; one alone: its adapter, into its slot of the fusion."""
        if e_ct is not None and e_pet is not None:
            return self.fusion(e_ct, e_pet, channel_dim)
        if e_ct is not None:
            return self.fusion(self.ct_adapter(e_ct, channel_dim), None, channel_dim)
        return self.fusion(None, self.pet_adapter(e_pet, channel_dim), channel_dim)  # type: ignore[arg-type]

    def fuse_skips(self, ct: torch.Tensor | None, pet: torch.Tensor | None) -> torch.Tensor:
        """First-level skip: the frozen CT ``encoder1`` and ``pet_skip`` outputs through ``skip_fusion``."""
        s_ct = self.backbone.encoder1(ct) if ct is not None else None
        s_pet = self.pet_skip(pet) if pet is not None else None
        return self.skip_fusion(s_ct, s_pet, channel_dim=1)

    # ------------------------------------------------------------------ forward

    def forward(self, ct: torch.Tensor | None = None, pet: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, 3, X, Y, Z)`` from CT and/or PET ``(B, 1, X, Y, Z)``."""
        self.mode_of(ct, pet)
        if ct is not None and pet is not None and ct.shape != pet.shape:
            raise UserError(f"CT {list(ct.shape)} and PET {list(pet.shape)} inputs differ in shape")
        if self.arch == "unetr":
            return self._forward_unetr(ct, pet)
        return self._forward_swin(ct, pet)

    def _forward_unetr(self, ct: torch.Tensor | None, pet: torch.Tensor | None) -> torch.Tensor:
        bb = self.backbone
        x_in = ct if ct is not None else pet
        assert x_in is not None
        if tuple(x_in.shape[2:]) != self.img_size:
            raise UserError(
                f"this PEMMA UNETR was built for crops of {list(self.img_size or ())} voxels but got "
                f"{list(x_in.shape[2:])}; run whole volumes with sliding_window_inference(roi_size=img_size)"
            )
        e_ct = bb.vit.patch_embedding(ct) if ct is not None else None
        e_pet = self.pet_embedding(pet) if pet is not None else None
        x = self.fuse_embeddings(e_ct, e_pet, channel_dim=-1)
        # UNETR's own transformer (VPT prompts included) and decoder, with the fused first-level skip.
        x, hidden_states = bb.vit.encode_tokens(x)
        return bb.decode(x, hidden_states, self.fuse_skips(ct, pet))

    def _forward_swin(self, ct: torch.Tensor | None, pet: torch.Tensor | None) -> torch.Tensor:
        bb = self.backbone
        spatial: tuple[int, ...] = ()
        if ct is not None:
            ct, spatial = pad_to_multiple(ct, _SWIN_MULTIPLE)
        if pet is not None:
            pet, spatial = pad_to_multiple(pet, _SWIN_MULTIPLE)
        sv = bb.swinViT
        e_ct = sv.patch_embed(ct) if ct is not None else None
        e_pet = self.pet_embedding(pet) if pet is not None else None
        # The rest of monai's SwinTransformer.forward from the patch embedding on.
        x = sv.pos_drop(self.fuse_embeddings(e_ct, e_pet, channel_dim=1))
        hidden = [sv.proj_out(x, bb.normalize)]
        for stage in ("layers1", "layers2", "layers3", "layers4"):
            if sv.use_v2:
                x = getattr(sv, f"{stage}c")[0](x.contiguous())
            x = getattr(sv, stage)[0](x.contiguous())
            hidden.append(sv.proj_out(x, bb.normalize))
        # The rest of monai's SwinUNETR.forward, with the fused first-level skip.
        enc0 = self.fuse_skips(ct, pet)
        enc1 = bb.encoder2(hidden[0])
        enc2 = bb.encoder3(hidden[1])
        enc3 = bb.encoder4(hidden[2])
        dec4 = bb.encoder10(hidden[4])
        dec3 = bb.decoder5(dec4, hidden[3])
        dec2 = bb.decoder4(dec3, enc3)
        dec1 = bb.decoder3(dec2, enc2)
        dec0 = bb.decoder2(dec1, enc1)
        return crop_to_shape(bb.out(bb.decoder1(dec0, enc0)), spatial)


def _check_pemma(model: nn.Module) -> PEMMA:
    if not isinstance(model, PEMMA):
        raise UserError(f"expected a PEMMA model, got {type(model).__name__}")
    return model


def trainable_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names per group (:data:`GROUPS`), in ``named_parameters`` order.

    ``lora``: the LoRA/DoRA tensors in the backbone; ``pet``: PET embedding, PET
    skip and PET adapter; ``ct_adapter``; ``fusion``: embedding and skip fusion.
    Membership is fixed; which groups currently train is :func:`set_trainable`'s.
    """
    pemma = _check_pemma(model)
    lora = {f"backbone.{n}" for n in pemma.peft_state.trainable}
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, _ in pemma.named_parameters():
        if name in lora:
            groups["lora"].append(name)
            continue
        top = name.split(".", 1)[0]
        for group, modules in _GROUP_MODULES.items():
            if top in modules:
                groups[group].append(name)
    return groups


def set_trainable(model: nn.Module, parts: Iterable[str] | str) -> list[str]:
    """Train exactly the groups ``parts`` (names from :data:`GROUPS`, or ``"all"``); freeze the rest.

    Continual adaptation to a new centre with one modality:
    ``set_trainable(model, MODALITY_PARTS["pet"])`` trains only the PET
    embedding, PET skip and PET adapter.  Returns the trainable parameter names.

    Raises:
        UserError: unknown group name, or no group given.
    """
    pemma = _check_pemma(model)
    chosen = list(GROUPS) if parts == "all" else ([parts] if isinstance(parts, str) else list(parts))
    unknown = [p for p in chosen if p not in GROUPS]
    if unknown:
        raise UserError(f"unknown PEMMA parameter group(s) {', '.join(unknown)}; groups: {', '.join(GROUPS)}")
    if not chosen:
        raise UserError("set_trainable needs at least one parameter group")
    groups = trainable_groups(pemma)
    names = {n for g in chosen for n in groups[g]}
    pemma.requires_grad_(False)
    out = []
    for name, p in pemma.named_parameters():
        if name in names:
            p.requires_grad_(True)
            out.append(name)
    return out


def summary(model: nn.Module) -> dict[str, Any]:
    """Parameter counts: per group, trainable now, base (the CT model before PEFT) and % of the base."""
    pemma = _check_pemma(model)
    params = dict(pemma.named_parameters())
    groups = {g: sum(params[n].numel() for n in names) for g, names in trainable_groups(pemma).items()}
    trainable = sum(p.numel() for p in pemma.parameters() if p.requires_grad)
    base = pemma.base_parameters
    return {
        "peft": pemma.config["peft"],
        "base": base,
        "groups": groups,
        "group_percent": {g: 100.0 * n / base for g, n in groups.items()},
        "trainable": trainable,
        "percent": 100.0 * trainable / base,
    }
