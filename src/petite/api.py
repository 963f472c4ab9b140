"""petite from Python: the library behind ``petite simulate``, ``pretrain``, ``finetune``, ``evaluate`` and ``predict``.

Each function takes the command's options as arguments, checks them as the
command does (:class:`petite.errors.UserError` on bad input, before anything is
written) and calls the same library functions; none adds behaviour of its own.
``import petite`` makes them available as ``petite.simulate`` and so on, loading
this module (and torch) only when one is first used::

    import petite

    petite.simulate("sim", subjects=20, scanners="1,4")
    petite.pretrain("sim/scanner1/datalist.json", "runs/pre", model="unetr", preset="small")
    petite.finetune("sim/scanner4/datalist.json", "runs/petite", init="runs/pre", spec="petite-unetr")
    result = petite.evaluate("runs/petite", "sim/scanner4/datalist.json")
    model = petite.load_model("runs/petite")          # adapters loaded and merged

Training settings (``epochs``, ``batch_size``, ``lr``, ``crop_size``, ``device``,
...) are the fields of :class:`petite.engine.config.TrainConfig`, the keys of a
``--config`` YAML file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from petite.data.datalist import DEFAULT_SPLIT_SIZES
from petite.errors import UserError

PathLike = str | Path


def simulate(out: PathLike, subjects: int, scanners: str | Sequence[str] = "1,2,3,4,5", *, frames: bool = False,
             seed: int = 0, workers: int = 1, split_sizes: str | Sequence[int] = DEFAULT_SPLIT_SIZES,
             scanner_file: PathLike | None = None, iterations: int | None = None, subsets: int | None = None,
             overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Simulate ``subjects`` subjects on each scanner into ``out`` (as ``petite simulate``).

    Each scanner's datalist is ``out/scanner<id>/datalist.json``.  ``scanners`` is a
    comma-separated string or a sequence of scanner ids (built-in ``1``-``5`` and ``tiny``,
    or ids from ``scanner_file``); ``split_sizes`` the subjects of pretrain_train, pretrain_val,
    finetune_train, finetune_val and test.  Returns the record also written to ``out/simulation.json``.
    """
    from petite.data.datalist import parse_split_sizes
    from petite.data.scanners import parse_scanner_ids
    from petite.data.simulate import ReconSettings, SimulationRequest, run_simulation

    ids = scanners if isinstance(scanners, str) else ",".join(str(s) for s in scanners)
    request = SimulationRequest(
        out=Path(out), scanners=tuple(parse_scanner_ids(ids, scanner_file)), n_subjects=subjects, seed=seed,
        frames=frames, workers=workers,
        split_sizes=parse_split_sizes(split_sizes) if isinstance(split_sizes, str) else tuple(split_sizes),
        recon=ReconSettings(iterations=iterations, subsets=subsets), overwrite=overwrite,
    )
    request.validate()
    return run_simulation(request, progress=progress)


def _train(config: PathLike | None, defaults: dict[str, Any] | None, resume: bool, overwrite: bool, progress: bool,
           settings: dict[str, Any]) -> dict[str, Any]:
    """The configuration the CLI would build (YAML ``config``, then ``settings``), trained; returns ``final.json``."""
    from petite.engine.config import TrainConfig
    from petite.engine.train import train

    # Sequences become lists, as config.yaml stores them (YAML cannot write a tuple safely).
    values = {key: list(value) if isinstance(value, tuple) else value for key, value in settings.items()}
    values = {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}
    cfg = TrainConfig.load(config, defaults=defaults, **values)
    return train(cfg, resume=resume, overwrite=overwrite, progress=progress)


def pretrain(datalist: PathLike | None = None, out: PathLike | None = None, *, config: PathLike | None = None,
             resume: bool = False, overwrite: bool = False, progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Train a model from scratch into run folder ``out`` (as ``petite pretrain``); returns its ``final.json``.

    ``settings`` are training settings (``model``, ``preset``, ``epochs``, ``crop_size``, ...);
    they override those of the YAML ``config``.  Uses the pretrain_train / pretrain_val splits.
    """
    return _train(config, None, resume, overwrite, progress, {"datalist": datalist, "out": out, **settings})


def finetune(datalist: PathLike | None = None, out: PathLike | None = None, *, init: PathLike | None = None,
             spec: str | None = None, config: PathLike | None = None, resume: bool = False, overwrite: bool = False,
             progress: bool = True, **settings: Any) -> dict[str, Any]:
    """Adapt the pretrained ``init`` (run folder or checkpoint) with PEFT ``spec`` (as ``petite finetune``).

    ``spec`` is ``none``, ``full``, a preset (``petite-unetr``, ``petite-cvtgan``) or a Mix-PEFT
    spec such as ``encoder=lora:r=4,decoder=ssf,bitfit``.  Uses the finetune_train / finetune_val
    splits.  Returns the run's ``final.json``.
    """
    if not init and not config:
        raise UserError("finetune needs init (a pretrained checkpoint or run folder)")
    return _train(config, {"train_split": "finetune_train", "val_split": "finetune_val"}, resume, overwrite,
                  progress, {"datalist": datalist, "out": out, "init": init, "spec": spec, **settings})


def load_model(path: PathLike, adapter: PathLike | None = None, *, merge: bool = True,
               device: str = "auto") -> nn.Module:
    """A ready-to-run model in eval mode from a run folder or checkpoint, as ``petite predict`` loads it.

    A PEFT run folder gives its base checkpoint with its adapter; ``adapter`` adds one to a
    plain checkpoint.  LoRA, DoRA and SSF are merged into the weights unless ``merge`` is False.
    """
    from petite.device import resolve_device
    from petite.engine.infer import load_predictor

    target = resolve_device(device)
    return load_predictor(path, adapter, merged=merge).to(target)


def _settings(model_path: PathLike | None) -> dict[str, Any]:
    """The run's crop and normalisation (a model given as an object: the defaults)."""
    from petite.engine.infer import run_settings

    return run_settings(model_path) if model_path is not None else {"crop_size": None, "normalise": "input"}


def _window(model: nn.Module, model_path: PathLike | None, roi: Sequence[int] | None) -> tuple[int, int, int]:
    from petite.engine.infer import inference_roi

    return inference_roi(model, roi or _settings(model_path)["crop_size"])


def evaluate(model: PathLike, datalist: PathLike, out: PathLike | None = None, *, adapter: PathLike | None = None,
             split: str = "test", roi: Sequence[int] | None = None, overlap: float = 0.5,
             ssim_window: str = "uniform", device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """PSNR, SSIM and NRMSE per subject of ``split`` on whole volumes (as ``petite evaluate``).

    Returns ``{"summary": {...mean and std...}, "subjects": [{"subject", "psnr", "ssim", "nrmse"}, ...]}``;
    with ``out``, also writes ``out/metrics.csv`` and ``out/metrics.json``.
    """
    from petite.data.datalist import read_datalist
    from petite.engine.evaluate import evaluate_split, summarize, write_results
    from petite.engine.inference_inputs import check_output_folder_path, check_overlap, check_roi, check_ssim_window

    check_overlap(overlap)
    check_ssim_window(ssim_window)
    window = check_roi(roi)
    if out is not None:
        check_output_folder_path(out)
    data = read_datalist(datalist)
    net = load_model(model, adapter, device=device)
    rows = evaluate_split(net, data, split, _window(net, model, window), overlap,
                          normalise=_settings(model)["normalise"], ssim_window=ssim_window, progress=progress)
    summary = write_results(out, rows) if out is not None else summarize(rows)
    return {"summary": summary, "subjects": rows}


def predict(model: PathLike | nn.Module, src: PathLike, dst: PathLike, *, adapter: PathLike | None = None,
            merge: bool = True, roi: Sequence[int] | None = None, overlap: float = 0.5,
            device: str = "auto", overwrite: bool = False) -> list[Path]:
    """Restore short scans (as ``petite predict``): file ``src`` into file ``dst``, or every NIfTI of folder ``src``
    into folder ``dst``.  ``model`` is a run folder, a checkpoint or a model from :func:`load_model` (then
    trained with the default ``input`` normalisation).  Existing outputs are refused unless ``overwrite``.

    Returns the files written.
    """
    from petite.device import resolve_device
    from petite.engine.infer import check_outputs, predict_files
    from petite.engine.inference_inputs import check_overlap, check_roi, prediction_pairs

    check_overlap(overlap)
    window = check_roi(roi)
    pairs = prediction_pairs(src, dst)
    check_outputs(pairs, overwrite)
    if isinstance(model, nn.Module):
        if adapter is not None:
            raise UserError("adapter applies to a model path; load_model(path, adapter) first")
        net, model_path = model.to(resolve_device(device)).eval(), None
    else:
        net, model_path = load_model(model, adapter, merge=merge, device=device), model
    size = _window(net, model_path, window)
    predict_files(net, pairs, size, overlap, normalise=_settings(model_path)["normalise"], overwrite=overwrite)
    return [target for _, target in pairs]


__all__ = ["evaluate", "finetune", "load_model", "predict", "pretrain", "simulate"]
