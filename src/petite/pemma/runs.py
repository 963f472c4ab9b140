"""Multi-modal run folders: save and reload CT/PET segmenters, baselines and PEMMA models exactly.

A run folder is written whole or not at all: everything goes into a hidden
staging folder beside it, which is renamed into place at the end
(:func:`petite.atomic.staged_folder`).  Safetensors and JSON only, never pickle.

Every run folder holds::

    config.json     {"format": "petite-mm-run/1", "kind": ..., "crop": [x, y, z], "pet_norm": ...,
                     "datalist", "centre", "steps" or "max_steps"/"val_every"/"patience", "lr", "seed", ...}
                    (how it was made)
    metrics.jsonl   one line per training step: {"step", "loss", "mode"}  (absent for ``late``)
    final.json      summary: trainable parameters, % trainable, time, step time, how training
                    ended ("stopped", "converged", "capped", "best_step", the learning curve
                    "curve"), validation metrics of the kept state when a validation split was scored

plus the weights of its kind (:data:`RUN_KINDS`):

``ct`` / ``pet`` / ``early``
    a plain segmenter (1, 1 or 2 input channels): ``model.safetensors`` +
    ``model.json`` from :mod:`petite.models.checkpoint` (config and fingerprint;
    strict reload).
``pemma``
    ``pemma.safetensors``: only the tensors the CT base does not determine (LoRA /
    DoRA tensors, PET embedding and skip, adapters and fusions of the channels
    design; every state-dict entry whose name, with ``backbone.`` and PEFT's
    ``.base_layer`` removed, is not a tensor of the base), plus the decoder and
    head when the design trains them (``config.json["pemma"]["train_decoder"]``).  ``config.json["base"]`` names the CT
    run (path relative to this folder, absolute path as a fallback) and the
    fingerprint of its ``model.safetensors``; ``config.json["pemma"]`` has the
    PEFT spec, fusion, whether the decoder trains and the adapter width (runs
    without ``fusion`` are read as the channels design with a frozen decoder).
    Reloading rebuilds the PEMMA model on the CT
    base and loads these tensors: the outputs are bit-identical, and a run
    refuses a base whose fingerprint changed.  A continual adaptation
    (``parent``, ``trained_groups``) is again a complete ``pemma`` run on the same base.
``late``
    no weights: ``config.json["members"]`` names the CT-only and PET-only runs
    (paths and fingerprints) and ``weight`` the CT weight of the logit average.

:func:`load_run` returns ``(model, info)`` for every kind; ``info`` is the
config plus ``path``, ``kind``, ``modes`` (input modes the model supports),
``mode`` (its default) and ``crop``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from petite.atomic import atomic_path, to_jsonable, write_json, write_text
from petite.documents import read_json
from petite.errors import UserError
from petite.models import fingerprint, load_model, save_model
from petite.models.checkpoint import read_sidecar
from petite.pemma.baselines import LateFusion
from petite.pemma.upgrade import PEMMA, decoder_state_names

FORMAT = "petite-mm-run/1"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
PEMMA_WEIGHTS = "pemma.safetensors"

#: Run kinds: CT-only, PET-only, early fusion (2 channels), late fusion (CT-only + PET-only), PEMMA.
RUN_KINDS: tuple[str, ...] = ("ct", "pet", "early", "late", "pemma")
#: Input modes each kind accepts (the first is its default).
KIND_MODES: dict[str, tuple[str, ...]] = {
    "ct": ("ct",), "pet": ("pet",), "early": ("ctpet",), "late": ("ctpet", "ct", "pet"), "pemma": ("ctpet", "ct", "pet"),
}
#: Plain kind trained on an input mode (``petite mm pretrain --inputs``).
INPUTS_KIND: dict[str, str] = {"ct": "ct", "pet": "pet", "ctpet": "early"}


# ----------------------------------------------------------------------------- writing


def write_metrics(folder: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON object per line."""
    write_text(Path(folder) / METRICS_FILE, "".join(json.dumps(dict(r)) + "\n" for r in rows))


def _base_name(name: str) -> str:
    # "backbone.vit.blocks.0.attn.to_q.base_layer.weight" -> "vit.blocks.0.attn.to_q.weight"
    return name.removeprefix("backbone.").replace(".base_layer.", ".")


def _own_names(model: nn.Module, base_keys: set[str]) -> set[str]:
    """State-dict names a PEMMA run stores: what the base lacks, plus the decoder when the design trains it."""
    own = {n for n in model.state_dict() if _base_name(n) not in base_keys}
    if model.config.get("train_decoder"):
        own.update(decoder_state_names(model))
    return own


def _checkpoint_keys(weights: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        return set(handle.keys())


def run_link(run: Path, folder: Path) -> dict[str, str]:
    """A reference to run folder ``run`` from ``folder``: relative (movable together) and absolute."""
    run = run.resolve()
    return {"path": os.path.relpath(run, folder.resolve()), "abs_path": str(run)}


def _resolve_link(link: Mapping[str, Any], folder: Path, what: str) -> Path:
    for candidate in (folder / str(link.get("path", "")), Path(str(link.get("abs_path", "")))):
        if str(candidate) and (candidate / CONFIG_FILE).is_file():
            return candidate.resolve()
    raise UserError(f"{what} run not found (looked for {link.get('path')!r} and {link.get('abs_path')!r})",
                    folder / CONFIG_FILE)


def save_run(folder: str | Path, model: nn.Module, kind: str, config: Mapping[str, Any], *,
             final: Mapping[str, Any] | None = None, metrics: Sequence[Mapping[str, Any]] = (),
             base_run: str | Path | None = None, destination: str | Path | None = None,
             members: Mapping[str, str | Path] | None = None, full_state: bool = False) -> Path:
    """Write a run of ``kind`` into ``folder`` (usually a :func:`~petite.atomic.staged_folder`).

    Args:
        model: the trained model (plain segmenter, :class:`~petite.pemma.upgrade.PEMMA`
            or :class:`~petite.pemma.baselines.LateFusion`).
        config: how the run was made; must hold ``crop``; ``kind`` and ``format`` are added.
        base_run: ``pemma`` only: the CT run the model was built on.
        members: ``late`` only: ``{"ct": CT run, "pet": PET run}``.
        full_state: ``pemma`` only: store every tensor, the CT base's included (a continual adaptation
            that updated shared weights); by default only what the base lacks (and the trained decoder).
        destination: where ``folder`` will finally live (for relative links; default ``folder``).
    """
    if kind not in RUN_KINDS:
        raise UserError(f"unknown run kind {kind!r}; kinds: {', '.join(RUN_KINDS)}")
    folder = Path(folder)
    where = Path(destination) if destination is not None else folder
    cfg: dict[str, Any] = {"format": FORMAT, "kind": kind, **to_jsonable(dict(config))}
    if "crop" not in cfg:
        raise UserError("a run config needs 'crop'")
    if kind in ("ct", "pet", "early"):
        save_model(model, folder / "model")
        cfg["model"] = to_jsonable(model.config)
    elif kind == "pemma":
        from safetensors.torch import save_file

        if base_run is None:
            raise UserError("a PEMMA run needs its CT base run")
        base = Path(base_run)
        meta = read_sidecar(base / "model")
        base_keys = _checkpoint_keys(base / "model.safetensors")
        own = set(model.state_dict()) if full_state else _own_names(model, base_keys)
        tensors = {n: t.detach().to("cpu").contiguous().clone() for n, t in model.state_dict().items() if n in own}
        with atomic_path(folder / PEMMA_WEIGHTS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
        cfg["base"] = {**run_link(base, where), "fingerprint": meta["fingerprint"]}
        cfg["pemma"] = {"peft": model.config["peft"], "adapter_dim": model.config["adapter_dim"],
                        "fusion": model.config["fusion"], "train_decoder": model.config["train_decoder"],
                        "arch": model.arch, "base_model": model.config["base"], "full_state": bool(full_state)}
        cfg["pemma_fingerprint"] = fingerprint(tensors)
    else:  # late
        if members is None or set(members) != {"ct", "pet"}:
            raise UserError("a late-fusion run needs its 'ct' and 'pet' member runs")
        cfg["members"] = {}
        for role, run in members.items():
            fingerprint_ = read_sidecar(Path(run) / "model")["fingerprint"]
            cfg["members"][role] = {**run_link(Path(run), where), "fingerprint": fingerprint_}
        cfg["weight"] = float(model.weight)
    write_json(folder / CONFIG_FILE, cfg)
    if metrics:
        write_metrics(folder, metrics)
    write_json(folder / FINAL_FILE, to_jsonable(dict(final or {})))
    return folder


# ----------------------------------------------------------------------------- reading


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The validated ``config.json`` of a run folder (UserError if ``path`` is not a multi-modal run)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError("run folder not found", path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"not a multi-modal run folder (no {CONFIG_FILE})", path)
    config = read_json(config_path, "run config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"not a multi-modal run (format must be {FORMAT!r})", config_path)
    if config.get("kind") not in RUN_KINDS:
        raise UserError(f"unknown run kind {config.get('kind')!r}; kinds: {', '.join(RUN_KINDS)}", config_path)
    crop = config.get("crop")
    if not (isinstance(crop, list) and len(crop) == 3 and all(isinstance(c, int) and c > 0 for c in crop)):
        raise UserError("'crop' must be three positive integers", config_path)
    return config


def run_kind(path: str | Path) -> str:
    """The kind (:data:`RUN_KINDS`) of the run at ``path``."""
    return str(read_run_config(path)["kind"])


def require_kind(path: str | Path, kinds: Sequence[str], what: str) -> dict[str, Any]:
    """The run config at ``path``, or UserError when its kind is not one of ``kinds``."""
    config = read_run_config(path)
    if config["kind"] not in kinds:
        raise UserError(f"{what} must be a {' or '.join(kinds)} run, but this is a {config['kind']!r} run", path)
    return config


def run_base_path(path: str | Path) -> Path:
    """The CT base run of a ``pemma`` run."""
    config = require_kind(path, ("pemma",), "this")
    return _resolve_link(config.get("base") or {}, Path(path), "CT base")


def _load_plain(path: Path, expected_fingerprint: str | None = None) -> nn.Module:
    if expected_fingerprint is not None and read_sidecar(path / "model").get("fingerprint") != expected_fingerprint:
        raise UserError("weights changed since the run that refers to them was made (fingerprint mismatch)",
                        path / "model.json")
    return load_model(path / "model")


def load_run(path: str | Path, device: str | torch.device | None = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder of any kind; returns ``(model in eval mode, info)``.

    ``info``: the run's ``config.json`` plus ``path``, ``kind``, ``modes``, ``mode``
    (default input mode), ``crop`` and, for ``pemma``, ``base_path``.

    Raises:
        UserError: not a run folder, missing or changed files (fingerprints), tensors that do not fit.
    """
    path = Path(path)
    config = read_run_config(path)
    kind = config["kind"]
    info: dict[str, Any] = {**config, "path": str(path.resolve()), "modes": list(KIND_MODES[kind]),
                            "mode": KIND_MODES[kind][0]}
    if kind in ("ct", "pet", "early"):
        model = _load_plain(path)
        channels = int(model.config.get("in_channels", 1))
        if channels != (2 if kind == "early" else 1):
            raise UserError(f"a {kind!r} run must hold a {2 if kind == 'early' else 1}-channel model, got {channels}",
                            path / "model.json")
    elif kind == "late":
        members = config.get("members") or {}
        loaded = {}
        for role in ("ct", "pet"):
            if role not in members:
                raise UserError(f"late-fusion run lacks its {role!r} member", path / CONFIG_FILE)
            member = _resolve_link(members[role], path, f"{role.upper()} member")
            require_kind(member, (role,), f"the late-fusion {role.upper()} member")
            loaded[role] = _load_plain(member, members[role].get("fingerprint"))
        model = LateFusion(loaded["ct"], loaded["pet"], weight=float(config.get("weight", 0.5)))
    else:
        model, base = _load_pemma(path, config)
        info["base_path"] = str(base)
    if device is not None:
        model.to(device)
    return model.eval(), info


def _load_pemma(path: Path, config: Mapping[str, Any]) -> tuple[nn.Module, Path]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path = path / CONFIG_FILE
    base = _resolve_link(config.get("base") or {}, path, "CT base")
    require_kind(base, ("ct",), "the PEMMA base")
    ct_model = _load_plain(base, (config.get("base") or {}).get("fingerprint"))
    options = config.get("pemma") or {}
    if "peft" not in options:
        raise UserError("PEMMA run config lacks 'pemma.peft'", config_path)
    # Runs made before the reference design became the default have neither key: channels, frozen decoder.
    fusion, train_decoder = options.get("fusion", "channels"), bool(options.get("train_decoder", False))
    model = PEMMA(ct_model, peft=options["peft"], adapter_dim=options.get("adapter_dim"), fusion=fusion,
                  train_decoder=train_decoder, fingerprint=False)
    weights = path / PEMMA_WEIGHTS
    if not weights.is_file():
        raise UserError("PEMMA weights not found", weights)
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"corrupt safetensors file: {err}", weights) from None
    if config.get("pemma_fingerprint") not in (None, fingerprint(tensors)):
        raise UserError("tensors do not match the fingerprint in config.json", weights)
    state = model.state_dict()
    base_keys = _checkpoint_keys(base / "model.safetensors")
    expected = set(state) if options.get("full_state") else _own_names(model, base_keys)
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise UserError(f"PEMMA tensors do not fit the model: {len(missing)} missing, {len(extra)} unexpected "
                        f"(e.g. {(missing or extra)[0]})", weights)
    with torch.no_grad():
        for name, value in tensors.items():
            if state[name].shape != value.shape:
                raise UserError(f"tensor {name} has shape {tuple(value.shape)}, the model expects "
                                f"{tuple(state[name].shape)}", weights)
            state[name].copy_(value)
    return model, base


def read_final(path: str | Path) -> dict[str, Any]:
    """A run's ``final.json`` (empty dict when absent)."""
    file = Path(path) / FINAL_FILE
    return read_json(file, "run summary") if file.is_file() else {}


__all__ = ["CONFIG_FILE", "FINAL_FILE", "FORMAT", "INPUTS_KIND", "KIND_MODES", "METRICS_FILE", "PEMMA_WEIGHTS",
           "RUN_KINDS", "load_run", "read_final", "read_run_config", "require_kind", "run_base_path", "run_kind",
           "run_link", "save_run", "write_metrics"]
