"""The training loop: deterministic given its seed; stops on validation, keeps and restores the best state;
augments images and label alike; warms the learning rate up."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from petite.errors import UserError
from petite.pemma.evaluate import validation_dice
from petite.pemma.train import augment_axial, train_segmenter
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


def _converge(ct_model: nn.Module, cases: list[dict], **kwargs) -> tuple[nn.Module, dict]:
    model = copy.deepcopy(ct_model)
    options = dict(inputs="ct", batch_size=1, lr=1e-2, seed=0, device="cpu", val_cases=cases[:1], val_every=1,
                   val_overlap=0.0, final_eval=False)
    return model, train_segmenter(model, cases, **{**options, **kwargs})


def test_to_convergence_restores_the_best_state(ct_model: nn.Module, cases: list[dict]) -> None:
    """The returned model scores what the best validation recorded, not what the last step left."""
    model, out = _converge(ct_model, cases, max_steps=8, patience=3)
    scores = [r["val_dice"] for r in out["curve"]]
    assert out["best_val_dice"] == max(scores)
    assert out["best_step"] == out["curve"][scores.index(max(scores))]["step"]
    again = validation_dice(model, cases[:1], "ct", overlap=0.0, device="cpu")["dice"]
    assert again == pytest.approx(out["best_val_dice"], abs=1e-12)
    # Not vacuous: the last state differed from the best one whenever the last validation scored less.
    if scores[-1] < max(scores):
        assert again != scores[-1]


def test_patience_and_cap_bookkeeping(ct_model: nn.Module, cases: list[dict]) -> None:
    # No Dice gain can exceed 1: every validation after the first is "no improvement" (the tiny model finds
    # some tumour at once: patience counts only once the best Dice is above 0).
    _, out = _converge(ct_model, cases, max_steps=50, val_every=2, patience=3, min_delta=1.0, min_steps=0)
    assert out["stopped"] == "patience" and out["converged"] is True
    assert out["steps"] == 2 * (1 + 3) and out["best_step"] == 2
    assert [r["step"] for r in out["curve"]] == [2, 4, 6, 8]
    # Patience runs out at step 8, but stopping waits for min_steps (default: a quarter of the cap).
    _, out = _converge(ct_model, cases, max_steps=40, val_every=2, patience=3, min_delta=1.0)
    assert out["min_steps"] == 10 and out["steps"] == 10 and out["converged"] is True
    # A cap that is not a multiple of the interval still ends with a validation; patience 0 trains to the cap.
    _, out = _converge(ct_model, cases, max_steps=5, val_every=2, patience=0)
    assert out["stopped"] == "max_steps" and out["converged"] is False
    assert out["steps"] == 5 and [r["step"] for r in out["curve"]] == [2, 4, 5]
    assert len(out["losses"]) == 5


def test_to_convergence_is_deterministic(ct_model: nn.Module, cases: list[dict]) -> None:
    a = _converge(ct_model, cases, max_steps=4, val_every=2, patience=1)[1]
    b = _converge(ct_model, cases, max_steps=4, val_every=2, patience=1)[1]
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in a["curve"]]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in b["curve"]]
    assert a["losses"] == b["losses"] and a["best_step"] == b["best_step"]


def test_warmup_then_cosine(ct_model: nn.Module, cases: list[dict]) -> None:
    """The learning rate rises linearly over the warm-up, peaks near lr, then decays (the engine's schedule)."""
    _, out = _converge(ct_model, cases, max_steps=20, val_every=1, patience=0, warmup=0.2, lr=1e-3)
    lrs = [r["lr"] for r in out["curve"]]
    assert out["warmup_steps"] == 4
    assert lrs[:5] == pytest.approx([1e-3 * k / 5 for k in range(1, 5)] + [1e-3])
    assert all(b < a for a, b in zip(lrs[4:], lrs[5:]))
    _, flat = _converge(ct_model, cases, max_steps=3, val_every=1, patience=0, schedule="constant", lr=1e-3)
    assert [r["lr"] for r in flat["curve"]] == [1e-3] * 3


def test_length_options_are_checked(ct_model: nn.Module, cases: list[dict]) -> None:
    with pytest.raises(UserError, match="not both"):
        train_segmenter(copy.deepcopy(ct_model), cases, inputs="ct", steps=2, max_steps=2, val_cases=cases)
    with pytest.raises(UserError, match="needs validation cases"):
        train_segmenter(copy.deepcopy(ct_model), cases, inputs="ct", max_steps=2)
    with pytest.raises(UserError, match="schedule"):
        train_segmenter(copy.deepcopy(ct_model), cases, inputs="ct", steps=1, schedule="linear")


def test_augmentation_moves_images_and_label_together() -> None:
    """A label-derived CT/PET stays exactly the function of the transformed label; Z is never touched;
    the 8 symmetries of the axial square all occur."""
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (1, 6, 6, 4), generator=gen)
    sample = {"ct": label.float() * 10 + 1, "pet": -label.float(), "label": label, "patient": "P0"}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        out = augment_axial(sample, rng)
        assert torch.equal(out["ct"], out["label"].float() * 10 + 1) and torch.equal(out["pet"], -out["label"].float())
        assert out["patient"] == "P0" and out["label"].shape == label.shape
        # Each axial slice keeps its voxels (only moved within the slice).
        assert torch.equal(out["label"].sum(dim=(1, 2)), label.sum(dim=(1, 2)))
        seen.add(out["label"].numpy().tobytes())
    assert len(seen) == 8
    rect = {"label": torch.arange(6 * 4 * 3).reshape(1, 6, 4, 3)}
    assert all(augment_axial(rect, rng)["label"].shape == (1, 6, 4, 3) for _ in range(20))


class _Background(nn.Module):
    """A 'segmenter' that predicts background everywhere whatever it is fed (one trainable logit bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([50.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.view(1, 3, 1, 1, 1) + 0 * x[:, :1]


def test_nothing_found_is_not_a_plateau(cases: list[dict]) -> None:
    """Validations tied at Dice 0 do not use up patience: a model that has found nothing trains to the cap."""
    out = train_segmenter(_Background(), cases, inputs="ct", crop=16, max_steps=12, val_every=2, patience=1,
                          min_steps=0, lr=1e-6, batch_size=1, seed=0, device="cpu", val_cases=cases[:1],
                          val_overlap=0.0, final_eval=False)
    assert [r["val_dice"] for r in out["curve"]] == [0.0] * 6
    assert out["stopped"] == "max_steps" and not out["converged"] and out["steps"] == 12
    assert out["best_step"] == 2 and out["best_val_dice"] == 0.0
