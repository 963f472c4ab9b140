"""``petite peft probe``: the pre-flight check of a PEFT spec on a pre-trained model and real training crops.

Loads the model (a run folder or checkpoint), draws a few training crops from a
datalist split, applies the spec, freezes the tensors that cannot reach the loss
(as fine-tuning does) and runs :func:`petite.peft.probe.probe`.  Fine-tuning runs
do the same on their first batch and keep the result in ``final.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from petite.data.datalist import read_datalist
from petite.data.transforms import draw_batch, make_dataset, split_crop_size
from petite.device import resolve_device
from petite.engine.infer import resolve_checkpoint
from petite.engine.optim import parameter_groups
from petite.errors import UserError
from petite.models import load_model
from petite.peft import Spec, apply_spec, prune_dead, summary
from petite.peft.probe import probe


def preflight(init: str | Path, datalist: str | Path, spec: str | Spec, *, split: str = "finetune_train",
              crops: int = 2, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """The probe of ``spec`` on the model at ``init`` with ``crops`` training crops of ``split``.

    Returns :func:`petite.peft.probe.probe`'s result plus ``spec``, ``model``, ``dead`` (tensors
    frozen because no gradient reaches them) and ``summary`` (trainable counts).
    """
    if crops < 1:
        raise UserError(f"--crops must be at least 1, got {crops}")
    data = read_datalist(datalist)
    if not data.get(split):
        raise UserError(f"split {split!r} is empty or missing", datalist)
    spec = Spec.parse(spec)
    if spec.is_empty:
        raise UserError("spec 'none' trains nothing; there is nothing to probe")
    model = load_model(resolve_checkpoint(init))
    crop = tuple(getattr(model, "img_size", None) or split_crop_size(data, split))
    dataset = make_dataset(data, split, train=True, cache_rate=0.0, crop_size=crop)
    target = resolve_device(device)
    model.to(target)
    batch = {k: v.to(target) for k, v in draw_batch(dataset, crops, seed).items()}
    torch.manual_seed(seed)
    state = apply_spec(model, spec, fingerprint=False)
    dead = [] if spec.full else prune_dead(model, batch["short"])
    # The learning rates fine-tuning would use by default (each method's own, paper Table 3).
    groups = parameter_groups(model, state.trainable, model.config["name"])
    result = probe(model, state, batch["short"], batch["long"], {g["method"]: g["lr"] for g in groups})
    return {"spec": spec.to_string(), "model": model.config, "dead": dead, "summary": summary(model, state),
            **result}
