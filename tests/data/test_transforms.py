"""MONAI pipeline: frames -> short/long, [0, 1] scaling, RAS orientation, crops, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from petite.data.datalist import build_datalist, read_datalist, write_datalist
from petite.data.nifti import make_affine, save_volume
from petite.data.transforms import choose_crop_size, eval_transforms, make_dataset, train_transforms, unscale
from petite.errors import UserError


def _unit(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


def _datalist(root: Path, items: dict[str, dict[str, np.ndarray]], affine: np.ndarray | None = None, split: str = "finetune_train") -> Path:
    entries = {}
    for subject, arrays in items.items():
        entries[subject] = {}
        for key, data in arrays.items():
            path = root / f"{subject}_{key}.nii.gz"
            save_volume(path, data, affine if affine is not None else make_affine((2.0, 2.0, 2.0), data.shape[:3]))
            entries[subject][key] = str(path)
    path = root / "datalist.json"
    write_datalist(path, build_datalist(entries, {split: sorted(items)}, scanner="t", seed=0, root=root))
    return path


@pytest.mark.parametrize("shape", [(192, 192, 136), (128, 128, 63), (224, 224, 81), (128, 128, 90), (40, 40, 36), (40, 40, 10)])
def test_choose_crop_size(shape) -> None:
    expected = {
        (192, 192, 136): (64, 64, 64),
        (128, 128, 63): (64, 64, 32),  # scanner 5: the paper's 64x64x32
        (224, 224, 81): (64, 64, 64),
        (128, 128, 90): (64, 64, 64),
        (40, 40, 36): (32, 32, 32),
        (40, 40, 10): (32, 32, 16),  # never below 16: padded instead
    }
    assert choose_crop_size(shape) == expected[shape]
    assert choose_crop_size((100, 100, 50), preferred=(96, 96, 96)) == (96, 96, 48)


def test_frames_give_first_frame_and_mean(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = (rng.gamma(2.0, 50.0, size=(14, 12, 10, 6)) + 5).astype(np.float32)
    path = _datalist(tmp_path, {"s0": {"frames": frames}})
    item = make_dataset(path, "finetune_train", train=False, normalise="paper")[0]
    assert item["subject"] == "s0"
    for key in ("short", "long"):
        assert isinstance(item[key], torch.Tensor) and item[key].dtype == torch.float32
        assert tuple(item[key].shape) == (1, 14, 12, 10)
        assert float(item[key].min()) == pytest.approx(0.0, abs=1e-7) and float(item[key].max()) == pytest.approx(1.0, abs=1e-6)
    short, long = frames[..., 0], frames.astype(np.float64).mean(-1)
    np.testing.assert_allclose(item["short"][0].numpy(), _unit(short), atol=1e-6)
    np.testing.assert_allclose(item["long"][0].numpy(), _unit(long), atol=1e-6)
    # The original range is kept, so a prediction can be mapped back to the short scan's units.
    assert item["short_min"] == pytest.approx(short.min()) and item["short_max"] == pytest.approx(short.max())
    assert item["long_min"] == pytest.approx(long.min(), rel=1e-6) and item["long_max"] == pytest.approx(long.max(), rel=1e-6)
    np.testing.assert_allclose(unscale(item["short"][0].numpy(), item["short_min"], item["short_max"]), short, rtol=1e-5)
    assert "frames" not in item


def test_input_mode_divides_both_scans_by_the_short_scans_head_mean(tmp_path) -> None:
    """The default normalisation keeps the input-to-target gain (here 1.5) and the units come back exactly."""
    from petite.data.masks import head_mask

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij"))
    head = ((grid**2).sum(0) < 0.6).astype(np.float32)
    rng = np.random.default_rng(3)
    short = (head * (4 + rng.random(head.shape))).astype(np.float32)
    long = 1.5 * short
    path = _datalist(tmp_path, {"p": {"short": short, "long": long}})
    item = make_dataset(path, "finetune_train", train=False)[0]
    factor = float(short[head_mask(short)].mean())
    assert item["short_scale"] == pytest.approx(factor, rel=1e-6) == item["long_scale"]
    assert item["short_offset"] == item["long_offset"] == 0.0
    np.testing.assert_allclose(item["long"][0].numpy(), 1.5 * item["short"][0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(item["short"][0].numpy() * item["short_scale"], short, rtol=1e-5, atol=1e-5)
    # The paper's mode scales each scan by its own range: the gain of 1.5 disappears.
    paper = make_dataset(path, "finetune_train", train=False, normalise="paper")[0]
    np.testing.assert_allclose(paper["long"][0].numpy(), paper["short"][0].numpy(), atol=1e-5)


def test_constant_input_is_refused_naming_the_subject(tmp_path) -> None:
    flat = np.full((12, 12, 12), 3.0, dtype=np.float32)
    path = _datalist(tmp_path, {"flat": {"short": flat, "long": flat}})
    with pytest.raises(UserError, match="subject flat.*constant"):
        make_dataset(path, "finetune_train", train=False)[0]


def test_pairs_scaled_each_by_own_range_and_oriented_to_ras(tmp_path) -> None:
    rng = np.random.default_rng(1)
    short = rng.random((10, 9, 8)).astype(np.float32) * 3 + 1
    long = short * 40 + 7
    # x axis stored right-to-left (LAS): the pipeline must flip it into RAS.
    affine = make_affine((2.0, 2.0, 2.0), short.shape)
    affine[0, 0] = -2.0
    path = _datalist(tmp_path, {"p": {"short": short, "long": long}}, affine=affine)
    item = eval_transforms("paper")(read_datalist(path)["finetune_train"][0])
    np.testing.assert_allclose(item["short"][0].numpy(), _unit(short)[::-1], atol=1e-6)
    np.testing.assert_allclose(item["long"][0].numpy(), item["short"][0].numpy(), atol=1e-5)  # same after scaling
    assert float(item["short"].affine[0, 0]) > 0


def test_training_crops_thin_normal_and_tiny(tmp_path) -> None:
    rng = np.random.default_rng(2)
    cases = {"thin": (48, 44, 36), "normal": (70, 66, 68), "tiny": (20, 18, 10)}
    expected = {"thin": (32, 32, 32), "normal": (64, 64, 64), "tiny": (16, 16, 16)}
    for name, shape in cases.items():
        folder = tmp_path / name
        short = rng.random(shape).astype(np.float32) + 0.5
        path = _datalist(folder, {"a": {"short": short, "long": 3 * short}, "b": {"short": short[::-1].copy(), "long": 2 * short[::-1]}})
        dataset = make_dataset(path, "finetune_train", train=True, cache_rate=1.0, normalise="paper")
        for item in (dataset[0], dataset[1]):
            assert tuple(item["short"].shape) == (1, *expected[name]), name
            assert tuple(item["long"].shape) == (1, *expected[name])
            # long is an affine function of short, so identical after scaling iff the same box was cut from both.
            torch.testing.assert_close(item["short"], item["long"], atol=1e-5, rtol=0)
            assert float(item["short"].min()) >= 0.0 and float(item["short"].max()) <= 1.0
    # An explicit crop size is honoured, padding where the volume is smaller.
    dataset = make_dataset(tmp_path / "thin" / "datalist.json", "finetune_train", train=True, crop_size=(16, 48, 40), cache_rate=0.0)
    assert tuple(dataset[0]["short"].shape) == (1, 16, 48, 40)
    assert tuple(train_transforms()(read_datalist(tmp_path / "tiny" / "datalist.json")["finetune_train"][0])["short"].shape) == (1, 64, 64, 64)


def test_random_crops_vary_and_cover_the_volume(tmp_path) -> None:
    shape = (40, 40, 40)
    short = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    path = _datalist(tmp_path, {"a": {"short": short, "long": short}})
    dataset = make_dataset(path, "finetune_train", train=True, crop_size=(16, 16, 16))
    corners = {tuple(item["short"][0, 0, 0, :1].numpy().round(6)) for item in (dataset[0] for _ in range(20))}
    assert len(corners) > 1  # random, not a fixed centre crop


def test_make_dataset_errors(tmp_path) -> None:
    short = np.random.default_rng(3).random((10, 10, 10)).astype(np.float32) + 1
    path = _datalist(tmp_path, {"a": {"short": short, "long": short}})
    with pytest.raises(UserError, match="unknown split"):
        make_dataset(path, "training", train=True)
    with pytest.raises(UserError, match="empty"):
        make_dataset(path, "test", train=False)
    with pytest.raises(UserError, match="not found"):
        make_dataset(tmp_path / "missing.json", "test", train=False)
