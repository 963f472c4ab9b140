"""PEMMA: upgrade a CT-only segmentation transformer to CT+PET, cheaply and without forgetting.

A trained CT-only UNETR or Swin UNETR (:func:`petite.pemma.segmentation.build_segmenter`)
becomes the *backbone*, frozen except for what the design trains.  Two designs
(``fusion=``), the reference one by default:

**``fusion="tokens"`` (default: the authors' public PEMMA code, BRIEF section 7).**

- ``pet_embedding``: a PET patch embedding, a copy of the CT one (UNETR: the
  ``PatchEmbeddingBlock`` with its position embedding; Swin: ``patch_embed``);
- ``pet_skip``: a PET first-level skip block, a copy of ``encoder1``;
- CT and PET tokens are concatenated along the sequence, so the ViT sees 2N
  tokens and attends across modalities; the two first-level skips are summed.
  The decoder needs N tokens per level: the CT and PET halves of the ViT's
  output and of every hidden state it reads are summed, as the skips are (the
  public code does not show this step; summing is our reading, consistent with
  the skips).  One modality alone is just its N tokens and its own skip.
  Swin UNETR's attention is windowed, so its "sequence" is the token grid: the
  two grids are joined along the last spatial axis and each level's output is
  split there and summed.  Patch merging never mixes the two halves (each half
  stays even-sized at every level, the input being padded to a multiple of 32),
  so the modalities meet only in attention windows that straddle the seam:
  for Swin this design is mostly two streams through one encoder, fused level
  by level.
- LoRA on attention only: UNETR q and v, rank 4 (the public code adds ``B A x``
  unscaled: alpha = r); Swin the fused qkv, rank 4, alpha 8, dropout 0.1.
- The CNN decoder and output head train (backbone component ``decoder``:
  UNETR/Swin ``encoder1-4`` skip blocks, the decoder blocks, ``out``); that and
  the PET parts are where the paper's "~8 %" comes from.

At initialisation LoRA's B is zero and the decoder is the CT model's, so a
CT-only input gives exactly the CT model's output (tested).  With CT+PET there
is no identity at init in this design: the CT tokens attend to the PET tokens
and the PET skip (a copy of the CT one) is added; the tests check shapes and
that gradients reach exactly the intended tensors instead.

**``fusion="channels"`` (our variant, the earlier default).**

- ``fusion``: concatenate CT and PET embeddings along channels and project back
  to the embedding width (a 1x1x1 convolution, implemented as an ``nn.Linear``
  over the channel axis, which is the same map); ``skip_fusion`` does the same
  for the two first-level skips;
- ``ct_adapter`` / ``pet_adapter``: residual bottlenecks ``x + up(gelu(down(x)))``
  on the embedding of a modality that comes *alone*; the result goes into its own
  slot of the same fusion and the missing modality's slot is zero.
- Used with ``targets="extended"`` (LoRA/DoRA r 8, alpha 16 on every attention
  q/k/v (Swin: the fused qkv), attention output and both MLP linears) and a
  frozen decoder, it is the earlier default.  The fusion weights start at
  ``[I, 0]``, the adapters' up-projections and LoRA's B at zero, so every input
  mode gives exactly the CT model's output at init (tested, 1e-6).

Every choice is an option (``targets``: ``"reference"``, ``"extended"`` or role
names; ``train_decoder``; ``method="dora"``), so the variants can be compared;
:mod:`petite.pemma.params` tabulates their % trainable.

Continual adaptation (:func:`set_trainable`, :data:`MODALITY_PARTS`): a new
centre with PET only trains only the PET parts (embedding, skip, and in the
channels design the PET adapter), which leaves every CT-only prediction
unchanged (CT-only inputs never touch them).  The CT-only counterpart exists
only in the channels design (its CT adapter): in the token design every CT
parameter also serves CT+PET inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from petite.errors import UserError
from petite.models.blocks.padding import crop_to_shape, pad_to_multiple
from petite.models.contract import component_modules
from petite.peft import PeftState, Spec, apply_spec, peft_state

#: Trainable parameter groups of a PEMMA model (a design has a subset; :attr:`PEMMA.default_groups`).
GROUPS: tuple[str, ...] = ("lora", "pet", "ct_adapter", "fusion", "decoder")
#: Groups a single-modality continual adaptation trains (:func:`set_trainable`).
MODALITY_PARTS: dict[str, tuple[str, ...]] = {"pet": ("pet",), "ct": ("ct_adapter",)}
#: What a continual adaptation updates (:func:`continual_trainable`): ``modality``, PEMMA's design (only the new
#: modality's parts); ``adapter``, every group the upgrade trained, shared ones included (LoRA without
#: freezing: a forgetting baseline); ``full``, every weight of the model (full fine-tuning: a forgetting baseline).
CONTINUAL_UPDATES: tuple[str, ...] = ("modality", "adapter", "full")
#: How CT and PET meet: sequence concatenation (reference) or a channel projection (ours).
FUSIONS: tuple[str, ...] = ("tokens", "channels")
#: Top-level module names of each group that is not LoRA or the backbone's decoder.
_GROUP_MODULES: dict[str, tuple[str, ...]] = {
    "pet": ("pet_embedding", "pet_skip", "pet_adapter"),
    "ct_adapter": ("ct_adapter",),
    "fusion": ("fusion", "skip_fusion"),
}
#: The reference LoRA per architecture (authors' public code): targets, rank, alpha, dropout.
REFERENCE_LORA: dict[str, dict[str, Any]] = {
    "unetr": {"targets": ("query", "value"), "r": 4, "alpha": 4.0, "dropout": 0.0},
    "swin_unetr": {"targets": ("qkv",), "r": 4, "alpha": 8.0, "dropout": 0.1},
}
#: Our wider LoRA/DoRA: attention q/k/v (Swin: fused qkv), output projection, both MLP linears; r 8, alpha 16.
EXTENDED_LORA: dict[str, dict[str, Any]] = {
    "unetr": {"targets": ("query", "key", "value", "attn_out", "*.mlp.linear1", "mlp_out"), "r": 8, "alpha": 16.0,
              "dropout": 0.0},
    "swin_unetr": {"targets": ("qkv", "attn_out", "*.mlp.linear1", "mlp_out"), "r": 8, "alpha": 16.0,
                   "dropout": 0.0},
}
#: Named target sets of :func:`pemma_spec`.
TARGET_PRESETS: dict[str, dict[str, dict[str, Any]]] = {"reference": REFERENCE_LORA, "extended": EXTENDED_LORA}
#: Kept for callers of the earlier API: the extended targets.
PEMMA_TARGETS: dict[str, tuple[str, ...]] = {arch: v["targets"] for arch, v in EXTENDED_LORA.items()}
#: Swin UNETR's total downsampling (patch 2, four 2x merges); inputs are padded to it.
_SWIN_MULTIPLE = 32


def _parse_targets(targets: str | Sequence[str]) -> tuple[str, ...]:
    items = targets.replace(",", "/").split("/") if isinstance(targets, str) else list(targets)
    out = tuple(t.strip() for t in items if t.strip())
    if not out:
        raise UserError("LoRA targets must name at least one role or module pattern (or 'reference' / 'extended')")
    return out


def pemma_spec(arch: str, method: str = "lora", r: int | None = None, alpha: float | None = None,
               dropout: float | None = None, targets: str | Sequence[str] = "reference") -> Spec:
    """The PEFT spec PEMMA applies to the backbone: ``encoder=<method>:r=..:alpha=..:dropout=..:targets=...``.

    ``targets``: ``"reference"`` (default; :data:`REFERENCE_LORA`), ``"extended"``
    (:data:`EXTENDED_LORA`) or role names / module patterns (``"query,value"``).
    ``r``, ``alpha`` and ``dropout`` default to the named set's (explicit
    targets: the reference values).

    Raises:
        UserError: unknown architecture, method other than ``lora`` / ``dora``, empty targets.
    """
    if arch not in REFERENCE_LORA:
        raise UserError(f"PEMMA supports {', '.join(REFERENCE_LORA)}, not {arch!r}")
    if method not in ("lora", "dora"):
        raise UserError(f"PEMMA adapts the backbone with 'lora' or 'dora', not {method!r}")
    if isinstance(targets, str) and targets in TARGET_PRESETS:
        defaults = TARGET_PRESETS[targets][arch]
        names = defaults["targets"]
    else:
        defaults = REFERENCE_LORA[arch]
        names = _parse_targets(targets)
    r = int(defaults["r"] if r is None else r)
    alpha = float(defaults["alpha"] if alpha is None else alpha)
    dropout = float(defaults["dropout"] if dropout is None else dropout)
    return Spec.parse(f"encoder={method}:r={r}:alpha={alpha!r}:dropout={dropout!r}:targets={'/'.join(names)}")


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
        r, alpha, dropout: rank, scale numerator (scale = alpha / r) and LoRA dropout
            (default: those of ``targets``' set, see :func:`pemma_spec`).
        targets: ``"reference"`` (default), ``"extended"`` or role names / module patterns.
        fusion: ``"tokens"`` (default, the reference) or ``"channels"`` (ours).
        train_decoder: train the backbone's CNN decoder and output head (default, the reference).
        adapter_dim: channels design only: bottleneck of the modality adapters (default ``max(4, width // 8)``).
        peft: a PEFT spec replacing :func:`pemma_spec` (``method``/``r``/``alpha``/``dropout``/``targets`` unused).
        fingerprint: hash the backbone before PEFT (needed to save its LoRA part with
            :func:`petite.peft.save_adapter`; off for quick parameter counts).

    ``forward(ct=None, pet=None)`` takes ``(B, 1, X, Y, Z)`` images (at least one)
    and returns ``(B, 3, X, Y, Z)`` logits.  After construction the trainable set
    is :attr:`default_groups` and nothing else.

    Raises:
        UserError: unsupported architecture or fusion, multi-channel input, or PEFT already applied.
    """

    accepts_modalities = True

    def __init__(
        self,
        ct_model: nn.Module,
        method: str = "lora",
        r: int | None = None,
        alpha: float | None = None,
        dropout: float | None = None,
        targets: str | Sequence[str] = "reference",
        fusion: str = "tokens",
        train_decoder: bool = True,
        adapter_dim: int | None = None,
        peft: str | Spec | None = None,
        fingerprint: bool = True,
    ) -> None:
        super().__init__()
        base_config = dict(getattr(ct_model, "config", None) or {})
        arch = base_config.get("name")
        if arch not in REFERENCE_LORA:
            raise UserError(f"PEMMA upgrades a 'unetr' or 'swin_unetr' CT model, not {arch or type(ct_model).__name__!r}")
        if int(base_config.get("in_channels", 1)) != 1:
            raise UserError(f"PEMMA upgrades a single-channel CT model; this one has {base_config['in_channels']} channels")
        if peft_state(ct_model) is not None:
            raise UserError("PEMMA needs the plain CT model; PEFT is already applied to this one")
        if fusion not in FUSIONS:
            raise UserError(f"unknown PEMMA fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
        spec = Spec.parse(peft) if peft is not None else pemma_spec(arch, method, r, alpha, dropout, targets)

        self.arch: str = arch
        self.fusion_kind: str = fusion
        #: Modality blocks side by side in the last forward (token design: 2 with CT+PET); read by
        #: :mod:`petite.prognosis.features`, which hooks the Swin encoder and must undo the side-by-side grid.
        self.last_parts = 1
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
        bottleneck: int | None = None
        if fusion == "channels":
            bottleneck = int(adapter_dim) if adapter_dim is not None else max(4, width // 8)
            if bottleneck < 1:
                raise UserError(f"adapter_dim must be >= 1, got {adapter_dim}")
        # Module names of the backbone's CNN decoder and head (before PEFT: it only wraps encoder layers).
        self._decoder_modules = tuple(component_modules(ct_model, "decoder"))

        # New parts first (copies of the CT parts before any PEFT wrapping), then LoRA/DoRA.
        reference = next(ct_model.parameters())
        self.pet_embedding = copy.deepcopy(embedding)
        self.pet_skip = copy.deepcopy(ct_model.encoder1)
        if fusion == "channels":
            assert bottleneck is not None
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
            "fusion": fusion,
            "train_decoder": bool(train_decoder),
        }
        groups = trainable_groups(self)
        #: The groups this design trains (every non-empty group; ``decoder`` only with ``train_decoder``).
        self.default_groups: tuple[str, ...] = tuple(
            g for g in GROUPS if groups[g] and (g != "decoder" or train_decoder))
        set_trainable(self, self.default_groups)

    # ------------------------------------------------------------------ pieces

    def mode_of(self, ct: torch.Tensor | None, pet: torch.Tensor | None) -> str:
        """``"ctpet"``, ``"ct"`` or ``"pet"`` from which inputs are given."""
        if ct is None and pet is None:
            raise UserError("PEMMA needs at least one of ct= and pet=")
        return "ctpet" if ct is not None and pet is not None else ("ct" if ct is not None else "pet")

    def fuse_embeddings(
        self, e_ct: torch.Tensor | None, e_pet: torch.Tensor | None, channel_dim: int = -1
    ) -> torch.Tensor:
        """Channels design: both embeddings ``fusion(e_ct, e_pet)``; one alone: its adapter, into its slot."""
        if e_ct is not None and e_pet is not None:
            return self.fusion(e_ct, e_pet, channel_dim)
        if e_ct is not None:
            return self.fusion(self.ct_adapter(e_ct, channel_dim), None, channel_dim)
        return self.fusion(None, self.pet_adapter(e_pet, channel_dim), channel_dim)  # type: ignore[arg-type]

    def fuse_skips(self, ct: torch.Tensor | None, pet: torch.Tensor | None) -> torch.Tensor:
        """First-level skip from the CT ``encoder1`` and ``pet_skip``: summed (tokens) or ``skip_fusion`` (channels)."""
        s_ct = self.backbone.encoder1(ct) if ct is not None else None
        s_pet = self.pet_skip(pet) if pet is not None else None
        if self.fusion_kind == "channels":
            return self.skip_fusion(s_ct, s_pet, channel_dim=1)
        if s_ct is None or s_pet is None:
            return s_ct if s_ct is not None else s_pet  # type: ignore[return-value]
        return s_ct + s_pet

    @staticmethod
    def merge_sequence(x: torch.Tensor, parts: int, dim: int) -> torch.Tensor:
        """Sum the ``parts`` equal modality blocks of ``x`` along ``dim`` (token design: 2N -> N)."""
        if parts == 1:
            return x
        return sum(x.chunk(parts, dim=dim))  # type: ignore[return-value]

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
        if self.fusion_kind == "channels":
            x = self.fuse_embeddings(e_ct, e_pet, channel_dim=-1)
            # UNETR's own transformer (VPT prompts included) and decoder, with the fused first-level skip.
            x, hidden_states = bb.vit.encode_tokens(x)
            return bb.decode(x, hidden_states, self.fuse_skips(ct, pet))
        tokens = [e for e in (e_ct, e_pet) if e is not None]
        # (B, 2N, C): every CT token attends to every PET token and back.
        x, hidden_states = bb.vit.encode_tokens(torch.cat(tokens, dim=1))
        parts = len(tokens)
        x = self.merge_sequence(x, parts, dim=1)
        hidden_states = [self.merge_sequence(h, parts, dim=1) for h in hidden_states]
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
        if self.fusion_kind == "channels":
            parts = 1
            x = self.fuse_embeddings(e_ct, e_pet, channel_dim=1)
        else:
            grids = [e for e in (e_ct, e_pet) if e is not None]
            parts = len(grids)
            x = torch.cat(grids, dim=-1)  # the token grids side by side along the last axis (module docstring)
        self.last_parts = parts
        # The rest of monai's SwinTransformer.forward from the patch embedding on.
        x = sv.pos_drop(x)
        hidden = [sv.proj_out(x, bb.normalize)]
        for stage in ("layers1", "layers2", "layers3", "layers4"):
            if sv.use_v2:
                x = getattr(sv, f"{stage}c")[0](x.contiguous())
            x = getattr(sv, stage)[0](x.contiguous())
            hidden.append(sv.proj_out(x, bb.normalize))
        hidden = [self.merge_sequence(h, parts, dim=-1) for h in hidden]
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


def _under(name: str, modules: Iterable[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def trainable_groups(model: nn.Module) -> dict[str, list[str]]:
    """Parameter names per group (:data:`GROUPS`), in ``named_parameters`` order.

    ``lora``: the LoRA/DoRA tensors in the backbone; ``pet``: PET embedding, PET
    skip (and PET adapter); ``ct_adapter``; ``fusion``: embedding and skip fusion;
    ``decoder``: the backbone's CNN decoder and output head.  A group a design
    lacks is empty.  Membership is fixed; which groups currently train is
    :func:`set_trainable`'s.
    """
    pemma = _check_pemma(model)
    lora = {f"backbone.{n}" for n in pemma.peft_state.trainable}
    decoder = [f"backbone.{m}" for m in pemma._decoder_modules]
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, _ in pemma.named_parameters():
        if name in lora:
            groups["lora"].append(name)
            continue
        if _under(name, decoder):
            groups["decoder"].append(name)
            continue
        top = name.split(".", 1)[0]
        for group, modules in _GROUP_MODULES.items():
            if top in modules:
                groups[group].append(name)
    return groups


def decoder_state_names(model: nn.Module) -> list[str]:
    """State-dict names (parameters and buffers) of the backbone's decoder and head, in state-dict order."""
    pemma = _check_pemma(model)
    decoder = [f"backbone.{m}" for m in pemma._decoder_modules]
    return [n for n in pemma.state_dict() if _under(n, decoder)]


def set_trainable(model: nn.Module, parts: Iterable[str] | str) -> list[str]:
    """Train exactly the groups ``parts`` (names from :data:`GROUPS`, or ``"all"``: the model's
    :attr:`~PEMMA.default_groups`); freeze the rest.

    Continual adaptation to a new centre with one modality:
    ``set_trainable(model, MODALITY_PARTS["pet"])`` trains only the PET
    embedding, PET skip (and PET adapter).  Returns the trainable parameter names.

    Raises:
        UserError: unknown group name, a group this design does not have, or no group given.
    """
    pemma = _check_pemma(model)
    chosen = list(pemma.default_groups) if parts == "all" else ([parts] if isinstance(parts, str) else list(parts))
    unknown = [p for p in chosen if p not in GROUPS]
    if unknown:
        raise UserError(f"unknown PEMMA parameter group(s) {', '.join(unknown)}; groups: {', '.join(GROUPS)}")
    if not chosen:
        raise UserError("set_trainable needs at least one parameter group")
    groups = trainable_groups(pemma)
    empty = [g for g in chosen if not groups[g]]
    if empty:
        raise UserError(f"this PEMMA model (fusion {pemma.fusion_kind!r}) has no {', '.join(empty)} parameters"
                        + ("; CT-only continual adaptation needs --fusion channels (its CT adapter)"
                           if "ct_adapter" in empty else ""))
    names = {n for g in chosen for n in groups[g]}
    pemma.requires_grad_(False)
    out = []
    for name, p in pemma.named_parameters():
        if name in names:
            p.requires_grad_(True)
            out.append(name)
    return out


def check_continual(modality: str, update: str) -> None:
    """Refuse an unknown ``modality`` or ``update`` of a continual adaptation (before any output exists)."""
    if update not in CONTINUAL_UPDATES:
        raise UserError(f"--update must be one of {', '.join(CONTINUAL_UPDATES)}, got {update!r}")
    if modality not in MODALITY_PARTS:
        raise UserError(f"--modality must be one of {', '.join(MODALITY_PARTS)} (the one modality the new "
                        f"centre has), got {modality!r}")


def continual_trainable(model: nn.Module, modality: str, update: str = "modality") -> list[str]:
    """Set what a continual adaptation with ``modality`` alone trains (:data:`CONTINUAL_UPDATES`); the names.

    ``modality`` keeps every prediction that does not use the new modality unchanged; the two other
    settings update weights the old centre's inputs also pass through, which is what forgetting needs.
    """
    check_continual(modality, update)
    if update == "modality":
        return set_trainable(model, MODALITY_PARTS[modality])
    if update == "adapter":
        return set_trainable(model, "all")
    pemma = _check_pemma(model)
    pemma.requires_grad_(True)
    return [name for name, _ in pemma.named_parameters()]


def summary(model: nn.Module) -> dict[str, Any]:
    """Parameter counts: per group, trainable now, base (the CT model before PEFT) and % of the base."""
    pemma = _check_pemma(model)
    params = dict(pemma.named_parameters())
    groups = {g: sum(params[n].numel() for n in names) for g, names in trainable_groups(pemma).items()}
    trainable = sum(p.numel() for p in pemma.parameters() if p.requires_grad)
    base = pemma.base_parameters
    return {
        "peft": pemma.config["peft"],
        "fusion": pemma.fusion_kind,
        "train_decoder": pemma.config["train_decoder"],
        "base": base,
        "groups": groups,
        "group_percent": {g: 100.0 * n / base for g, n in groups.items()},
        "trainable": trainable,
        "percent": 100.0 * trainable / base,
    }
