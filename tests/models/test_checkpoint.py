"""Whole-model checkpoints: exact round trip, strict loading, errors that name the file."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from petite.errors import UserError
from petite.models import build_model, fingerprint, load_model, save_model
from petite.models.cvtgan import discriminator_loss, generator_loss


def _trained_gan() -> nn.Module:
    """A tiny GAN after two train-mode steps: BatchNorm running stats differ from their init."""
    torch.manual_seed(0)
    gan = build_model("cvtgan", "tiny").train()
    opt = torch.optim.Adam(gan.parameters(), lr=1e-3)
    for _ in range(2):
        short, long = torch.rand(2, 1, 32, 32, 16), torch.rand(2, 1, 32, 32, 16)
        fake = gan(short)
        loss = generator_loss(gan.discriminator(short, fake), fake, long)
        loss = loss + discriminator_loss(gan.discriminator(short, long), gan.discriminator(short, fake.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gan


def test_round_trip_is_exact(tmp_path) -> None:
    gan = _trained_gan()
    bn = gan.generator.stem[0].norm
    assert int(bn.num_batches_tracked) == 2 and not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    weights, sidecar = save_model(gan, tmp_path / "best")
    assert weights.name == "best.safetensors" and sidecar.name == "best.json"
    loaded = load_model(tmp_path / "best")
    original, restored = gan.state_dict(), loaded.state_dict()
    assert list(original) == list(restored)
    for key in original:
        assert original[key].dtype == restored[key].dtype and torch.equal(original[key], restored[key]), key
    meta = json.loads(sidecar.read_text())
    assert meta["config"] == gan.config and meta["fingerprint"] == fingerprint(original)
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        assert torch.equal(gan.eval()(x), loaded(x))


def test_directory_target_and_unetr_with_prompts(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("unetr", "tiny", img_size=[32, 32, 32])
    model.vit.blocks[1].prompts = nn.Parameter(torch.randn(3, model.vit.blocks[1].prompt_width))
    weights, _ = save_model(model, tmp_path)
    assert weights == tmp_path / "model.safetensors"
    loaded = load_model(tmp_path)
    assert torch.equal(loaded.vit.blocks[1].prompts, model.vit.blocks[1].prompts)
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_fingerprint_is_order_independent_and_content_sensitive() -> None:
    a = {"x": torch.arange(4.0), "y": torch.ones(2, 2)}
    b = {"y": torch.ones(2, 2), "x": torch.arange(4.0)}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "x": torch.arange(4.0) + 1e-6})
    assert fingerprint(a) != fingerprint({**a, "x": torch.arange(4.0).double()})
    assert fingerprint(a) != fingerprint({"x2": torch.arange(4.0), "y": torch.ones(2, 2)})


def test_missing_and_corrupt_files_name_the_file(tmp_path) -> None:
    # Nothing there: named as the user gave it, not as a JSON file they never mentioned.
    with pytest.raises(UserError) as missing:
        load_model(tmp_path / "best")
    assert str(missing.value) == f"{tmp_path / 'best'}: no such run folder or model checkpoint"
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="folder: not a run folder or model checkpoint"):
        load_model(tmp_path / "folder")
    model = build_model("cvtgan", "tiny")
    weights, sidecar = save_model(model, tmp_path / "best")
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="best.safetensors"):
        load_model(tmp_path / "best")
    weights.unlink()
    with pytest.raises(UserError, match="best.safetensors"):
        load_model(tmp_path / "best")
    sidecar.write_text("{ not json")
    with pytest.raises(UserError, match="best.json"):
        load_model(tmp_path / "best")


def test_mismatched_tensors_are_refused(tmp_path) -> None:
    model = build_model("cvtgan", "tiny")
    _, sidecar = save_model(model, tmp_path / "m")
    meta = json.loads(sidecar.read_text())
    meta["config"]["channels"] = [8, 16, 32, 48]  # a different architecture
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="m.safetensors"):
        load_model(tmp_path / "m")
    meta["config"]["channels"] = model.config["channels"]
    meta["fingerprint"] = "0" * 64  # tensors edited behind the sidecar's back
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="fingerprint"):
        load_model(tmp_path / "m")


def test_save_is_atomic_and_refuses_models_without_config(tmp_path) -> None:
    with pytest.raises(UserError):
        save_model(nn.Linear(2, 2), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    save_model(build_model("swin_unetr", "tiny"), tmp_path / "swin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swin.json", "swin.safetensors"]
    assert isinstance(load_model(tmp_path / "swin.json"), nn.Module)
