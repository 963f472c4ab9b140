"""Resumable training state as safetensors + JSON (no pickles).

The state holds the tensors that training changes (trainable parameters and
buffers such as BatchNorm statistics), every optimizer's state, the scheduler
position, the epoch reached, the best validation score and the metrics
history.  Random streams need no saving: every epoch re-seeds from
``(seed, epoch)``, so a resumed run draws the same crops and the same dropout
masks as an uninterrupted one and ends with identical weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from petite.atomic import atomic_path, write_json
from petite.documents import read_json
from petite.errors import UserError

FORMAT = "petite-train-state/1"


def changing_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters plus all floating/integer buffers (BatchNorm running statistics)."""
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    tensors.update(dict(model.named_buffers()))
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}


def save_state(
    path: str | Path,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    info: dict[str, Any],
) -> None:
    """Atomically write ``path.safetensors`` and ``path.json`` (the JSON last: it marks completeness)."""
    path = Path(path)
    tensors = {f"model/{name}": t for name, t in changing_tensors(model).items()}
    optim_meta: dict[str, Any] = {}
    for opt_name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        per_param: dict[str, dict[str, Any]] = {}
        for index, slots in state["state"].items():
            per_param[str(index)] = {}
            for slot, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"optim/{opt_name}/{index}/{slot}"] = value.detach().to("cpu").contiguous().clone()
                    per_param[str(index)][slot] = None  # stored as a tensor
                else:
                    per_param[str(index)][slot] = value
        optim_meta[opt_name] = {"param_groups": state["param_groups"], "state": per_param}
    with atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_json(
        path.with_suffix(".json"),
        {
            "format": FORMAT,
            "info": info,
            "optimizers": optim_meta,
            "schedulers": {name: sched.state_dict() for name, sched in schedulers.items()},
        },
    )


def load_state(
    path: str | Path,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote into ``model``/``optimizers``/``schedulers``; return ``info``."""
    path = Path(path)
    meta_path, tensor_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
    meta = read_json(meta_path, "training state")
    try:
        tensors = load_file(str(tensor_path))
    except (OSError, SafetensorError) as err:
        raise UserError(f"cannot read the training state ({err})", tensor_path) from None
    if meta.get("format") != FORMAT:
        raise UserError(f"not a {FORMAT} file", meta_path)

    model_tensors = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    missing, unexpected = model.load_state_dict(model_tensors, strict=False)
    if unexpected:
        raise UserError(f"training state does not fit the model (unexpected {unexpected[:3]})", tensor_path)
    expected = set(changing_tensors(model))
    absent = expected - set(model_tensors)
    if absent:
        raise UserError(f"training state lacks tensors the run trains ({sorted(absent)[:3]})", tensor_path)

    for opt_name, optimizer in optimizers.items():
        saved = meta["optimizers"][opt_name]
        state: dict[int, dict[str, Any]] = {}
        for index, slots in saved["state"].items():
            state[int(index)] = {
                slot: tensors[f"optim/{opt_name}/{index}/{slot}"] if value is None else value
                for slot, value in slots.items()
            }
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(meta["schedulers"][name])
    return meta["info"]
