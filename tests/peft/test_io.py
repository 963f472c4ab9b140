"""Adapter files: only trained tensors (+ BN statistics), exact round trip, refusals with UserError."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from petite.errors import UserError
from petite.models import build_model
from petite.peft import apply_spec, load_adapter, merge, prune_dead, read_adapter_meta, save_adapter
from petite.peft.io import META_FILE, TENSORS_FILE, running_stat_buffers


@pytest.fixture(scope="module")
def bases() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    unetr = build_model("unetr", "tiny", img_size=[16, 16, 16])
    cvt = build_model("cvtgan", "tiny")
    return {"unetr": (unetr, torch.rand(1, 1, 16, 16, 16)), "cvtgan": (cvt, torch.rand(1, 1, 32, 32, 48))}


def _train(model: nn.Module, x: torch.Tensor, steps: int = 2) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        (model(x) - x).pow(2).mean().backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize(("name", "spec"), [("unetr", "petite-unetr"), ("cvtgan", "petite-cvtgan"),
                                             ("cvtgan", "encoder=adapter,decoder=dora,bitfit")])
def test_round_trip_reproduces_outputs(bases: dict, tmp_path, name: str, spec: str) -> None:
    base, x = bases[name]
    model = copy.deepcopy(base)
    state = apply_spec(model, spec)
    _train(model, x)
    with torch.no_grad():
        expected = model(x)
    folder = save_adapter(model, state, tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, TENSORS_FILE]  # no temp files left

    tensors = load_file(str(folder / TENSORS_FILE))
    stats = running_stat_buffers(model)
    assert set(tensors) == set(state.trainable) | set(stats)  # nothing of the frozen base
    meta = read_adapter_meta(folder)
    assert meta["spec"] == state.spec.to_string() and meta["model"]["name"] == name
    assert meta["base_fingerprint"].startswith("petite.models.checkpoint.fingerprint:")

    fresh = copy.deepcopy(base)
    loaded = load_adapter(fresh, folder)
    fresh.eval()
    assert loaded.spec == state.spec and loaded.trainable == state.trainable
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
        merge(fresh)  # and the loaded model merges like the trained one
        assert torch.allclose(fresh(x), expected, atol=1e-5)


def test_pruned_dead_tensors_round_trip(bases: dict, tmp_path) -> None:
    """prune_dead freezes the CVT-GAN's dead biases; the adapter records them and load re-freezes."""
    base, x = bases["cvtgan"]
    model = copy.deepcopy(base)
    state = apply_spec(model, "petite-cvtgan")
    dead = prune_dead(model, x, state)
    assert dead and state.pruned == dead and not set(dead) & set(state.trainable)
    _train(model, x, steps=1)
    save_adapter(model, state, tmp_path / "a")
    fresh = copy.deepcopy(base)
    loaded = load_adapter(fresh, tmp_path / "a")
    assert loaded.trainable == state.trainable and loaded.pruned == dead
    assert not any(p.requires_grad for n, p in fresh.named_parameters() if n in dead)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_batchnorm_statistics_travel_with_the_adapter(bases: dict, tmp_path) -> None:
    base, x = bases["cvtgan"]
    model = copy.deepcopy(base)
    state = apply_spec(model, "encoder=vpt,decoder=lora")  # no BN weight trains, yet BN stats move
    _train(model, x, steps=1)
    stats = running_stat_buffers(model)
    assert stats and not any(n.startswith("discriminator.") for n in stats)
    moved = [n for n in stats if n.endswith("running_mean") and
             not torch.equal(dict(model.named_buffers())[n], dict(base.named_buffers())[n.replace(".base_layer", "")])]
    assert moved, "train mode should have updated BatchNorm running statistics"
    save_adapter(model, state, tmp_path / "a")
    fresh = copy.deepcopy(base)
    load_adapter(fresh, tmp_path / "a")
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_refusals(bases: dict, tmp_path) -> None:
    base, x = bases["unetr"]
    model = copy.deepcopy(base)
    state = apply_spec(model, "petite-unetr")
    folder = save_adapter(model, state, tmp_path / "a")

    other_base = copy.deepcopy(base)
    with torch.no_grad():
        next(other_base.parameters()).add_(1e-3)
    with pytest.raises(UserError, match="fingerprint mismatch") as err:
        load_adapter(other_base, folder)
    assert "adapter.json" in str(err.value) and "\n" not in str(err.value)

    with pytest.raises(UserError, match="differs from the requested"):
        load_adapter(copy.deepcopy(base), folder, spec="encoder=ssf,decoder=lora")
    carrying = copy.deepcopy(base)
    apply_spec(carrying, "bitfit")
    with pytest.raises(UserError, match="model carries PEFT spec"):
        load_adapter(carrying, folder)

    with pytest.raises(UserError, match="adapter is for model 'unetr'"):
        load_adapter(copy.deepcopy(bases["cvtgan"][0]), folder)
    bigger = build_model("unetr", "tiny", img_size=[16, 16, 16], hidden_size=48, mlp_dim=96)
    with pytest.raises(UserError, match="another config"):
        load_adapter(bigger, folder)

    # A tensor file that does not match the spec is refused, not half-loaded.
    tensors = load_file(str(folder / TENSORS_FILE))
    tensors.pop(next(iter(tensors)))
    save_file(tensors, str(folder / TENSORS_FILE))
    with pytest.raises(UserError, match="do not match spec"):
        load_adapter(copy.deepcopy(base), folder)

    with pytest.raises(UserError, match=r"adapter.json\) not found"):
        load_adapter(copy.deepcopy(base), tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / META_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not a petite adapter"):
        load_adapter(copy.deepcopy(base), tmp_path / "bad")


def test_saving_needs_fingerprint_and_unmerged(bases: dict, tmp_path) -> None:
    base, _ = bases["unetr"]
    model = copy.deepcopy(base)
    state = apply_spec(model, "ssf", fingerprint=False)
    with pytest.raises(UserError, match="fingerprint"):
        save_adapter(model, state, tmp_path / "a")
    model = copy.deepcopy(base)
    state = apply_spec(model, "ssf")
    merge(model)
    with pytest.raises(UserError, match="merged"):
        save_adapter(model, state, tmp_path / "b")
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_adapter_is_tiny_next_to_the_checkpoint(bases: dict, tmp_path) -> None:
    base, _ = bases["unetr"]
    model = copy.deepcopy(base)
    folder = save_adapter(model, apply_spec(model, "petite-unetr"), tmp_path / "a")
    full = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(full))
    ratio = (folder / TENSORS_FILE).stat().st_size / full.stat().st_size
    assert ratio < 0.2  # tiny model; the paper UNETR's share: `petite peft info unetr -p paper -s petite-unetr`
