"""The training loop is deterministic given its seed."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from petite.pemma.train import train_segmenter
from petite.pemma.upgrade import PEMMA

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_segmenter_is_deterministic(ct_model: nn.Module, cases: list[dict]) -> None:
    def run(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = PEMMA(copy.deepcopy(ct_model), method="lora", fingerprint=False)
        out = train_segmenter(model, cases, inputs="ctpet", steps=3, batch_size=1, seed=seed, device="cpu")
        return out["losses"], {n: p.detach().clone() for n, p in model.named_parameters()}

    losses_a, params_a = run(5)
    losses_b, params_b = run(5)
    losses_c, _ = run(6)
    assert losses_a == losses_b
    assert all(torch.equal(params_a[n], params_b[n]) for n in params_a)
    assert losses_a != losses_c
