"""Adapter files: the trained tensors of a PEFT run, without the base model.

An adapter is a folder with two files, both written atomically (tensors first,
the JSON sidecar last, so a folder with a sidecar is complete):

``adapter.safetensors``
    Every trained tensor (:attr:`PeftState.trainable`, names as in the PEFT'd
    model) plus the running statistics of every BatchNorm (and running-stats
    InstanceNorm) outside the frozen components.  Why all of them: in train mode
    BatchNorm updates its statistics even where its weights are frozen, so any
    fine-tuning run changes them wherever the forward passes through, and an
    adapter without them silently reproduces a different model (a bug of the
    reference code).  They are a few kB.
``adapter.json``
    Format/version, the canonical spec string, the model config (name, preset,
    constructor arguments), and a fingerprint of the base (pre-PEFT) state dict.

:func:`load_adapter` refuses, with a one-line :class:`UserError` naming the
file, an adapter made for another model/config, another spec, or other base
weights.  No pickles anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from petite.atomic import atomic_path, to_jsonable, write_json
from petite.documents import read_json
from petite.errors import UserError
from petite.models.contract import WHOLE_MODEL, component_modules
from petite.peft.apply import apply_spec
from petite.peft.spec import Spec
from petite.peft.state import PeftState, base_fingerprint, peft_state

FORMAT = "petite-adapter"
VERSION = 1
TENSORS_FILE = "adapter.safetensors"
META_FILE = "adapter.json"
def running_stat_buffers(model: nn.Module) -> list[str]:
    """Buffer names of norm layers with running statistics outside the frozen components."""
    scope = set(component_modules(model, WHOLE_MODEL))
    out: list[str] = []
    for name, module in model.named_modules():
        if name in scope and isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            prefix = f"{name}." if name else ""
            out += [prefix + b for b, buf in module.named_buffers(recurse=False) if buf is not None]
    return out


def save_adapter(model: nn.Module, state: PeftState | None, path: str | Path) -> Path:
    """Write ``adapter.safetensors`` + ``adapter.json`` into folder ``path``; returns the folder."""
    state = state or peft_state(model)
    folder = Path(path)
    if state is None:
        raise UserError("PEFT has not been applied to this model; nothing to save", folder)
    if state.merged:
        raise UserError("cannot save an adapter from a merged model; save before merging", folder)
    if state.base_fingerprint is None:
        raise UserError("the base fingerprint was not computed (apply_spec(..., fingerprint=True))", folder)
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    tensors = {n: params[n].detach().cpu().contiguous().clone() for n in state.trainable}
    stats = running_stat_buffers(model)
    tensors.update({n: buffers[n].detach().cpu().contiguous().clone() for n in stats})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": state.spec.to_string(),
        "spec_options": state.spec.to_dict(),  # explicit options: immune to future default changes
        "model": to_jsonable(getattr(model, "config", {})),
        "base_fingerprint": state.base_fingerprint,
        "trainable": {n: m for n, m in state.trainable.items()},
        "buffers": stats,
        "pruned": list(state.pruned),  # dead tensors prune_dead froze: frozen again on load
        "trainable_parameters": sum(params[n].numel() for n in state.trainable),
        "base_parameters": state.base_parameters,
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / TENSORS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "spec": meta["spec"]})
    write_json(folder / META_FILE, meta)
    return folder


def read_adapter_meta(path: str | Path) -> dict[str, Any]:
    """The validated ``adapter.json`` of an adapter folder."""
    meta_path = Path(path) / META_FILE
    meta = read_json(meta_path, "adapter metadata (adapter.json)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError("not a petite adapter file", meta_path)
    if meta.get("version") != VERSION:
        raise UserError(f"unsupported adapter version {meta.get('version')!r}", meta_path)
    return meta


def load_adapter(model: nn.Module, path: str | Path, spec: Spec | str | None = None) -> PeftState:
    """Apply the adapter's spec to a fresh base ``model`` and load the trained tensors.

    ``model`` may also already carry the same spec (then only tensors are loaded).
    ``spec``, if given, must equal the adapter's.

    Raises:
        UserError: the adapter was made for another model config, spec or base weights,
            or its tensors do not match the spec.
    """
    folder = Path(path)
    meta = read_adapter_meta(folder)
    meta_path = folder / META_FILE
    file_spec = Spec.from_dict(meta["spec_options"]) if "spec_options" in meta else Spec.parse(meta["spec"])
    config = to_jsonable(getattr(model, "config", {}))
    if config != meta.get("model"):
        theirs = meta.get("model") or {}
        raise UserError(
            f"adapter is for model {theirs.get('name')!r} preset {theirs.get('preset')!r} with another config, "
            f"not this {config.get('name')!r} {config.get('preset')!r}",
            meta_path,
        )
    if spec is not None and Spec.parse(spec) != file_spec:
        raise UserError(f"adapter spec {file_spec} differs from the requested {Spec.parse(spec)}", meta_path)
    algo = str(meta.get("base_fingerprint", "")).partition(":")[0]
    state = peft_state(model)
    if state is None:
        fp = base_fingerprint(model, algo)
        if fp != meta.get("base_fingerprint"):
            raise UserError("adapter was trained on other base weights (fingerprint mismatch)", meta_path)
        state = apply_spec(model, file_spec, fingerprint=False)
        state.base_fingerprint = fp
    else:
        if state.spec != file_spec:
            raise UserError(f"model carries PEFT spec {state.spec}, adapter has {file_spec}", meta_path)
        if state.base_fingerprint is not None and state.base_fingerprint != meta.get("base_fingerprint"):
            raise UserError("adapter was trained on other base weights (fingerprint mismatch)", meta_path)
    pruned = meta.get("pruned") or []
    unknown = [n for n in pruned if n not in dict(model.named_parameters())]
    if unknown:
        raise UserError(f"adapter lists pruned tensors this model lacks (e.g. {unknown[0]})", meta_path)
    state.freeze(model, pruned)
    tensors_path = folder / TENSORS_FILE
    try:
        tensors = load_file(str(tensors_path))
    except FileNotFoundError:
        raise UserError("adapter tensors missing", tensors_path) from None
    except SafetensorError as err:
        raise UserError(f"unreadable safetensors file ({err})", tensors_path) from None
    expected = set(state.trainable) | set(running_stat_buffers(model))
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise UserError(
            f"adapter tensors do not match spec {file_spec}: {len(missing)} missing, {len(extra)} unexpected "
            f"(e.g. {(missing or extra)[0]})",
            tensors_path,
        )
    live = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for name, value in tensors.items():
            target = live[name]
            if target.shape != value.shape:
                raise UserError(f"tensor {name} has shape {tuple(value.shape)}, model expects {tuple(target.shape)}",
                                tensors_path)
            target.copy_(value.to(device=target.device, dtype=target.dtype))
    return state
