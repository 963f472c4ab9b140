"""Whole-model checkpoints: ``<stem>.safetensors`` (every tensor) + ``<stem>.json`` (how to rebuild it).

No pickles: tensors go to safetensors, the architecture is the model's
``config`` in JSON, and :func:`load_model` rebuilds with
:func:`petite.models.build_model` and loads **strictly**, so a checkpoint that
does not fit fails loudly instead of silently leaving weights at their
initial values.  Every state-dict entry is saved, BatchNorm running statistics
and ``num_batches_tracked`` included.  VPT prompts present at save time
(``<site>.prompts``) are recreated on load.

The JSON sidecar records a :func:`fingerprint` of the tensors; adapters
reference it to name the base model they were trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from petite.atomic import atomic_path, write_json
from petite.documents import read_json
from petite.errors import UserError
from petite.models.registry import build_model
from petite.version import __version__

FORMAT = "petite-model"
FORMAT_VERSION = 1


def fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the tensors of ``state_dict``, independent of dict order and device.

    For each name in sorted order the hash takes the UTF-8 name, the dtype
    name, the shape, and the raw bytes of the contiguous CPU tensor; fields are
    separated so that no two different state dicts hash alike by concatenation.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}".encode() + b"\0")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """The ``(weights, sidecar)`` pair for ``path``.

    ``path`` is an existing directory (-> ``model.safetensors`` / ``model.json``
    inside it), a path ending in ``.safetensors`` or ``.json`` (its sibling is
    derived), or a stem (``runs/a/best`` -> ``runs/a/best.safetensors``/``.json``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model"
    elif path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_model(model: nn.Module, path: str | Path) -> tuple[Path, Path]:
    """Save ``model`` (built by :func:`petite.models.build_model`) as safetensors + JSON; returns both paths.

    Both files are written atomically (the weights first, the sidecar last).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise UserError("model has no petite `config`; build it with petite.models.build_model", path)
    weights, sidecar = checkpoint_paths(path)
    # Clone so tensors sharing storage (views) are saved independently; safetensors refuses shared memory.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(
        sidecar,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "petite_version": __version__,
            "config": config,
            "fingerprint": fingerprint(state),
            "num_tensors": len(state),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "weights": weights.name,
        },
    )
    return weights, sidecar


def _check_exists(path: str | Path) -> None:
    """UserError naming what the user gave when neither file of the checkpoint exists.

    "nosuch.json: not found" would send the user looking for a JSON file they never named.
    """
    weights, sidecar = checkpoint_paths(path)
    if weights.exists() or sidecar.exists():
        return
    given = Path(path)
    if given.is_dir():
        raise UserError(f"not a run folder or model checkpoint (no {weights.name} + {sidecar.name} in it)", given)
    if given.exists():
        raise UserError(f"not a model checkpoint (a checkpoint is {weights.name} + {sidecar.name})", given)
    raise UserError("no such run folder or model checkpoint", given)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Read and validate the JSON sidecar of the checkpoint at ``path``."""
    _check_exists(path)
    _, sidecar = checkpoint_paths(path)
    meta = read_json(sidecar, "checkpoint sidecar")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise UserError(f"not a {FORMAT} sidecar (missing format/config)", sidecar)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"written by a newer petite (format_version {meta['format_version']})", sidecar)
    return meta


def load_model(path: str | Path) -> nn.Module:
    """Rebuild the model saved at ``path`` and load every tensor strictly; returns it on CPU in eval mode.

    Raises:
        UserError: a file is missing or corrupt, the fingerprint does not match
            the sidecar, or the tensors do not fit the rebuilt architecture.
    """

    weights, sidecar = checkpoint_paths(path)
    meta = read_sidecar(path)
    if not weights.is_file():
        raise UserError("checkpoint weights not found", weights)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"corrupt safetensors file: {err}", weights) from err
    if meta.get("fingerprint") not in (None, fingerprint(state)):
        raise UserError(f"tensors do not match the fingerprint recorded in {sidecar.name}", weights)

    config = dict(meta["config"])
    name, preset = config.pop("name", None), config.pop("preset", None) or "small"
    try:
        model = build_model(name, preset, **config)
    except UserError as err:
        raise UserError(f"cannot rebuild the model: {err}", sidecar) from err
    _restore_prompts(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise UserError(f"tensors do not fit the model: {' '.join(first[:3])}", weights) from err
    return model.eval()


def _restore_prompts(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    # VPT prompts are parameters created after construction; recreate them so strict loading sees them.
    modules = dict(model.named_modules())
    for key, tensor in state.items():
        site, _, attr = key.rpartition(".")
        if attr == "prompts" and site in modules and hasattr(modules[site], "prompt_width"):
            if getattr(modules[site], "prompts", None) is None:
                modules[site].prompts = nn.Parameter(torch.zeros_like(tensor))
