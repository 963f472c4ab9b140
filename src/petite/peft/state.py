"""What applying a PEFT spec did to a model: the :class:`PeftState` it carries, and the base it started from.

The state lives on the model as a plain attribute (not a submodule, not in the
state dict): the spec, the trained tensors and which method trains each, the
method objects (which merge and unmerge themselves), the base model's size (the
denominator of "% trainable") and the fingerprint of its weights (so an adapter
is only ever loaded onto the base it was trained from).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from petite.errors import UserError
from petite.models.checkpoint import fingerprint
from petite.models.contract import WHOLE_MODEL, scope_parameter_count
from petite.peft.methods import Method
from petite.peft.spec import Spec

ATTR = "petite_peft"  # the model attribute holding the PeftState


@dataclasses.dataclass
class PeftState:
    """What :func:`apply_spec` did to a model.

    ``trainable``: parameter name -> the method that trains it (``"bitfit"`` for the
    global flag, ``"full"`` for full fine-tuning), in ``named_parameters`` order.
    ``base_parameters``: parameters outside the frozen components before PEFT (the
    denominator of "% trainable").  ``base_fingerprint``: hash of the base state
    dict at apply time (``None`` if not computed), written into adapter files.
    """

    spec: Spec
    trainable: dict[str, str]
    base_parameters: int
    base_fingerprint: str | None = None
    methods: list[tuple[str, Method]] = dataclasses.field(default_factory=list)
    merged: bool = False
    pruned: list[str] = dataclasses.field(default_factory=list)  # dead tensors frozen by prune_dead

    def freeze(self, model: nn.Module, names: list[str]) -> None:
        """Stop training ``names`` (dead tensors): ``requires_grad=False``, out of ``trainable``."""
        params = dict(model.named_parameters())
        for name in names:
            params[name].requires_grad_(False)
            if self.trainable.pop(name, None) is not None and name not in self.pruned:
                self.pruned.append(name)

    @property
    def trainable_names(self) -> list[str]:
        """Names of the trained tensors."""
        return list(self.trainable)


def peft_state(model: nn.Module) -> PeftState | None:
    """The :class:`PeftState` of a model PEFT was applied to, else ``None``."""
    return model.__dict__.get(ATTR)


def base_parameter_count(model: nn.Module) -> int:
    """Parameters outside ``model.frozen_components`` (shared tensors once)."""
    return scope_parameter_count(model, WHOLE_MODEL)


#: How adapter files name the fingerprint of their base weights (``algo:hex``).
FINGERPRINT_ALGO = "petite.models.checkpoint.fingerprint"


def base_fingerprint(model: nn.Module, algo: str | None = None) -> str:
    """Fingerprint ``algo:hex`` of a base model's weights (call before applying PEFT).

    The same hash as model checkpoints (:func:`petite.models.checkpoint.fingerprint`), so an
    adapter and the checkpoint it was trained from can be matched.  ``algo`` (read from an
    adapter file) must be the one petite writes.
    """
    if algo not in (None, FINGERPRINT_ALGO):
        raise UserError(f"unknown base fingerprint algorithm {algo!r}")
    return f"{FINGERPRINT_ALGO}:{fingerprint(model.state_dict())}"
