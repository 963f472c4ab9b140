"""What fine-tuning costs before you train: step time and peak memory of PEFT specs against full fine-tuning.

``petite bench peft`` (:mod:`petite.cli.bench`) calls :func:`run_bench`.  For one model, preset
and crop:

* **step**: one optimisation step as the engine takes it (:mod:`petite.engine.steps`):
  regression models ``L1(model(short), long)``; the GAN the generator loss (adversarial +
  100 L1) through its discriminator, which trains too under ``full`` (pix2pix Adam) and stays
  frozen in eval mode under PEFT.  AdamW on the trained tensors.  The memory options of
  :mod:`petite.engine.efficiency` apply: lean backward, activation checkpointing
  (``none|frozen|all``; by default each spec's :func:`~petite.engine.efficiency.default_checkpoint`),
  and ``fp32|bf16|fp16`` autocast.
* **memory**, each spec in a **fresh subprocess** (``python -m petite.bench --one``) so that its
  peak is its own.  CUDA: peak allocated during the steps (weights included); CPU: growth of
  the peak resident set (VmHWM, reset first) from just before the first step to the end
  (activations, gradients, optimiser state and the allocator's slack; the weights excluded).
  Everywhere: the peak of live tensor bytes in the first step (:class:`PeakTensorBytes`, the
  CPU's analogue of CUDA's peak allocated, without the allocator's slack), and the bytes
  autograd keeps after one forward (:func:`~petite.engine.efficiency.autograd_profile`;
  deterministic), with the first module a graph reaches (PyTorch records nothing before it).
* **step time**, by default **interleaved** (:func:`measure_times`): one more subprocess holds
  every spec's model and takes one step of each in turn, round after round, so a change of the
  machine's load hits all specs alike; ratios to ``full`` are taken per round.  (``isolated``:
  from each spec's own process instead.)
* **inference**: latency (eval, no grad) of the base model, the PEFT model unmerged, merged with
  its wrappers kept (``merge(model, unload=False)``) and merged and unloaded (``merge(model)``),
  timed round-robin in the spec's process; ratios to the base per round, median.

``repeats`` rounds of memory processes; ratios against ``full`` of the same round, reported as
the median over rounds with the min and max beside it.  Unless the options are PyTorch's own, a
``full-plain`` row (fp32, no checkpointing, nothing lean) gives the ``*_vs_plain`` ratios: what
a spec with these options costs against the full fine-tuning one would run otherwise.  Timings on
a shared CPU are noisy: read ratios, and quote the load average (recorded before and after).

Its 600-odd lines are one measurement protocol (child-process modes, the peak-tensor probe,
interleaved timing, ratios and their rendering) that only makes sense read together.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from petite.errors import UserError
from petite.tables import render_table

#: The single methods of the paper's Table 5 comparison, each on the whole model.
SINGLE_METHODS: tuple[str, ...] = ("layernorm", "bitfit", "lora", "dora", "adapter", "ssf", "vpt")
#: The PET restoration models, whose steps the bench takes (regression, GAN).  Swin UNETR segments
#: (PEMMA, its own losses) and is not benched here.
BENCH_MODELS: tuple[str, ...] = ("unetr", "cvtgan")


@dataclasses.dataclass
class BenchConfig:
    """One bench: a model, a preset, a crop, the specs and the memory/precision options.

    ``checkpoint``: ``None`` = each spec's default mode.  ``timing``: ``interleaved`` (every spec's
    step timed in turn in one process, :func:`measure_times`) or ``isolated`` (in each spec's own
    process).  ``threads``: ``None`` = PyTorch's
    default.  ``lean``: :func:`petite.engine.efficiency.enable_lean_backward` (frozen convolutions keep
    no input, ReLU/LeakyReLU a 1-byte mask).
    """

    model: str
    preset: str = "small"
    crop: tuple[int, int, int] = (64, 64, 64)
    specs: list[str] = dataclasses.field(default_factory=list)
    checkpoint: str | None = None
    precision: str = "fp32"
    lean: bool = True
    batch: int = 1
    steps: int = 5
    warmup: int = 2
    repeats: int = 1
    infer_rounds: int = 7
    timing: str = "interleaved"
    device: str = "auto"
    threads: int | None = None
    infer: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["crop"] = list(self.crop)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        data = dict(data)
        data["crop"] = tuple(data["crop"])
        return cls(**data)


def default_specs(model: str) -> list[str]:
    """``full``, every single method, and the model's PETITE preset (where the model has one)."""
    from petite.peft.spec import PRESETS

    petite = f"petite-{model}"
    return ["full", *SINGLE_METHODS, *([petite] if petite in PRESETS else [])]


def split_specs(text: str) -> list[str]:
    """``full,lora,petite-unetr``; specs that contain commas themselves are separated by ``;``."""
    sep = ";" if ";" in text else ","
    specs = [s.strip() for s in text.split(sep) if s.strip()]
    if not specs:
        raise UserError(f"no specs in {text!r}")
    return specs


def resolve_spec(model: str, spec: str) -> str:
    """``petite`` means the model's PETITE preset."""
    return f"petite-{model}" if spec == "petite" else spec


def _build(cfg: BenchConfig, device: torch.device | str | None = None) -> nn.Module:
    from petite.models import build_model

    # UNETR's position embedding is sized for its crop; the others take any crop.
    overrides: dict[str, Any] = {"img_size": list(cfg.crop)} if cfg.model == "unetr" else {}
    if device is None:
        return build_model(cfg.model, cfg.preset, **overrides)
    with torch.device(device):
        return build_model(cfg.model, cfg.preset, **overrides)


def validate(cfg: BenchConfig) -> None:
    """UserError (one line) for an unknown model, preset, spec or option, or a crop the model cannot take."""
    from petite.engine.efficiency import CHECKPOINT_MODES, check_precision
    from petite.models import list_presets
    from petite.peft import Spec, apply_spec

    if cfg.model not in BENCH_MODELS:
        raise UserError(f"unknown model {cfg.model!r} for the bench; choose one of {', '.join(BENCH_MODELS)}")
    if cfg.preset not in list_presets(cfg.model):
        raise UserError(f"unknown preset {cfg.preset!r} for model {cfg.model!r}; "
                        f"choose one of {', '.join(list_presets(cfg.model))}")
    if len(cfg.crop) != 3 or min(cfg.crop) < 1:
        raise UserError(f"crop must be three positive integers, got {list(cfg.crop)}")
    if cfg.timing not in ("interleaved", "isolated"):
        raise UserError(f"timing must be interleaved or isolated, got {cfg.timing!r}")
    if cfg.checkpoint is not None and cfg.checkpoint not in CHECKPOINT_MODES:
        raise UserError(f"checkpoint must be one of {', '.join(CHECKPOINT_MODES)}, got {cfg.checkpoint!r}")
    for name, value, least in (("batch", cfg.batch, 1), ("steps", cfg.steps, 1), ("warmup", cfg.warmup, 0),
                               ("repeats", cfg.repeats, 1), ("infer_rounds", cfg.infer_rounds, 1)):
        if value < least:
            raise UserError(f"{name} must be >= {least}, got {value}")
    from petite.device import resolve_device

    check_precision(resolve_device(cfg.device), cfg.precision)
    if not cfg.specs:
        raise UserError("no specs to measure")
    if "full" not in cfg.specs:
        raise UserError("the specs must include 'full': every ratio is relative to it")
    if len(set(cfg.specs)) != len(cfg.specs):
        raise UserError(f"a spec is given twice: {', '.join(cfg.specs)}")
    for text in cfg.specs:
        spec = Spec.parse(resolve_spec(cfg.model, text))
        if spec.is_empty:
            raise UserError(f"spec {text!r} trains nothing: there is no step to measure")
        # Applying on the meta device checks components and feasibility without allocating
        # (build errors such as a crop the patch size does not divide surface here too).
        try:
            with torch.device("meta"):
                apply_spec(_build(cfg), spec, fingerprint=False)
        except (RuntimeError, NotImplementedError):  # a library that cannot run on meta: check on tiny
            apply_spec(_build(dataclasses.replace(cfg, preset="tiny")), spec, fingerprint=False)


# --------------------------------------------------------------------------- one spec, in this process


class PeakTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created while active and still alive: the CPU's ``max_memory_allocated``.

    The resident set of a CPU process also holds the allocator's slack (freed blocks glibc keeps,
    per-thread arenas), which shifts by tens of MB with the order of allocations; this counts what
    a GPU's caching allocator would report as allocated: every storage an ATen op returns (forward,
    backward, optimiser), from its creation to the moment it is freed (a finalizer on the storage,
    whose Python object PyTorch keeps for the storage's lifetime).  Storages that existed before
    (weights) do not count; scratch memory inside kernels (oneDNN workspaces) is not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._sizes and storage.nbytes() > 0:
                    self._sizes[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key)
        return out




def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _make_step(model: nn.Module, spec: Any, precision: str, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """The engine's own optimisation step (:func:`petite.engine.steps.make_step`), so the bench times what
    training runs: AdamW (weight decay 0.01) on the trained tensors at a constant learning rate; the GAN's
    discriminator trains (pix2pix Adam) under ``full`` and stays frozen in eval mode under PEFT."""
    from petite.engine.config import TrainConfig
    from petite.engine.steps import is_gan, make_step

    cfg = TrainConfig(optimizer="adamw", schedule="constant", precision=precision, amp=False)
    disc_ids = {id(p) for p in model.discriminator.parameters()} if is_gan(model) else set()
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in disc_ids]
    step = make_step(model, cfg, [{"params": params, "lr": 1e-4, "weight_decay": 0.01}], total_steps=1,
                     device=device, world=1, train_discriminator=bool(spec.full))
    step.train_mode()
    return step


def _loss_for_profile(model: nn.Module, short: torch.Tensor, long: torch.Tensor) -> torch.Tensor:
    disc = getattr(model, "discriminator", None)
    if isinstance(disc, nn.Module):
        from petite.models.cvtgan import generator_loss

        fake = model(short)
        return generator_loss(disc(short, fake), fake, long)
    return F.l1_loss(model(short), long)


def _inference_times(variants: dict[str, nn.Module], x: torch.Tensor, rounds: int, warmup: int, precision: str,
                     device: torch.device) -> dict[str, Any]:
    """Round-robin latency of each variant; per-round ratios to ``base``."""
    from petite.engine.efficiency import autocast

    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad(), autocast(device, precision):
        for model in variants.values():
            for _ in range(max(warmup, 1)):
                model(x)
        for _ in range(rounds):
            for name, model in variants.items():
                times[name].append(_timed(lambda m=model: m(x), device))
    out: dict[str, Any] = {f"infer_{k}_s": statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        if k != "base":
            out[f"{k}_ratio"] = statistics.median(a / b for a, b in zip(v, times["base"]))
    return out


@dataclasses.dataclass
class _Prepared:
    """A model with a spec applied, its memory options installed and its step, ready to train."""

    model: nn.Module
    base: nn.Module | None
    step: Callable[[torch.Tensor, torch.Tensor], Any]
    spec: Any
    info: dict[str, Any]
    checkpoint: str
    checkpointed: list[str]
    short: torch.Tensor
    long: torch.Tensor


def _prepare(cfg: BenchConfig, spec_text: str, device: torch.device, keep_base: bool) -> _Prepared:
    from petite.engine.efficiency import apply_memory_options, default_checkpoint
    from petite.peft import Spec, apply_spec, summary

    spec = Spec.parse(resolve_spec(cfg.model, spec_text))
    checkpoint = cfg.checkpoint or default_checkpoint(spec)
    torch.manual_seed(0)
    model = _build(cfg).to(device)
    base = copy.deepcopy(model).eval() if keep_base else None
    state = apply_spec(model, spec, fingerprint=False)
    info = summary(model, state)
    model.train()
    step = _make_step(model, spec, cfg.precision, device)  # (puts a frozen discriminator in eval mode)
    options = apply_memory_options(model, checkpoint, lean=cfg.lean)
    gen = torch.Generator().manual_seed(1)
    short = torch.rand(cfg.batch, 1, *cfg.crop, generator=gen).to(device)
    long = torch.rand(cfg.batch, 1, *cfg.crop, generator=gen).to(device)
    return _Prepared(model, base, step, spec, info, checkpoint, options["checkpointed"], short, long)


def measure_spec(cfg: BenchConfig, spec_text: str) -> dict[str, Any]:
    """Memory (and, with ``timing="isolated"``, step time) of one spec, in this process.

    :func:`run_bench` calls it in a fresh subprocess per spec, so the peak is the spec's own:
    one step under :class:`PeakTensorBytes` (the optimiser's state is created in it), then
    ``warmup`` steps and the timed steps (``steps`` when timing is isolated, else one) during
    which the resident set's peak is read; then one forward for :func:`autograd_profile`, and
    the inference latencies.
    """
    from petite.device import resolve_device
    from petite.engine.efficiency import autocast, autograd_profile, disable_checkpointing, disable_lean_backward
    from petite.engine.memory import peak_memory_mb, reset_peak_memory
    from petite.peft import merge

    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    job = _prepare(cfg, spec_text, device, keep_base=cfg.infer)
    model, step, short, long = job.model, job.step, job.short, job.long

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    start_mb = reset_peak_memory(device)  # CPU: VmHWM reset to the resident set now
    # The dispatch mode that counts tensor bytes slows its step down: neither warm-up nor timed.
    with PeakTensorBytes() as tracker:
        step(short, long)
    for _ in range(cfg.warmup):
        step(short, long)
    times = [_timed(lambda: step(short, long), device) for _ in range(cfg.steps if cfg.timing == "isolated" else 1)]
    peak = peak_memory_mb(device)
    peak_mb = peak if device.type == "cuda" else peak - start_mb
    for p in model.parameters():
        p.grad = None

    with autocast(device, cfg.precision):
        profile = autograd_profile(model, lambda: _loss_for_profile(model, short, long))
    row: dict[str, Any] = {
        "spec": spec_text, "spec_string": job.spec.to_string(), "trainable": job.info["trainable"],
        "percent_trainable": job.info["percent"], "checkpoint": job.checkpoint, "precision": cfg.precision,
        "lean": cfg.lean, "checkpointed": job.checkpointed,
        "step_s": statistics.median(times), "step_times_s": times, "peak_mb": peak_mb,
        "memory_kind": "cuda peak allocated" if device.type == "cuda" else "peak resident set growth",
        "process_peak_mb": peak, "tensor_peak_mb": tracker.peak / 2**20,
        "saved_mb": profile["saved_bytes"] / 2**20, "graph_from": profile["graph_from"],
    }
    if job.base is not None:
        disable_checkpointing(model)
        disable_lean_backward(model)
        model.eval()
        merged = merge(copy.deepcopy(model), unload=False)
        unloaded = merge(copy.deepcopy(model))
        variants = {"base": job.base, "unmerged": model, "merged": merged, "unloaded": unloaded}
        row.update(_inference_times(variants, short, cfg.infer_rounds, cfg.warmup, cfg.precision, device))
    return row


def measure_times(jobs: list[tuple[str, BenchConfig, str]], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Step times of several specs in one process, interleaved: each round takes one step of every spec in turn.

    ``jobs``: ``(label, config, spec)``.  A change in the machine's load lasting longer than one
    round hits every spec alike, so per-round ratios are far steadier on a shared machine than
    times taken in separate processes minutes apart.  Every model stays in memory meanwhile.
    """
    from petite.device import resolve_device

    prepared = []
    for label, cfg, spec in jobs:
        device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        job = _prepare(cfg, spec, device, keep_base=False)
        for _ in range(max(warmup, 1)):  # the first step creates the optimiser's state
            job.step(job.short, job.long)
        prepared.append((label, job, device))
    times: dict[str, list[float]] = {label: [] for label, _, _ in prepared}
    for _ in range(rounds):
        for label, job, device in prepared:
            times[label].append(_timed(lambda j=job: j.step(j.short, j.long), device))
    return times


# --------------------------------------------------------------------------- every spec, isolated


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _child(mode: str, payload: dict[str, Any], what: str) -> Any:
    """Run ``python -m petite.bench MODE JSON`` in a fresh process; its last stdout line is the JSON result."""
    import petite

    cmd = [sys.executable, "-m", "petite.bench", mode, json.dumps(payload)]
    # The child imports the same petite as this process (a checkout may shadow an installed copy).
    root = str(Path(petite.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"bench of {what} failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_isolated(cfg: BenchConfig, spec: str) -> dict[str, Any]:
    return _child("--one", {"config": cfg.to_dict(), "spec": spec}, f"spec {spec!r}")


def _run_timing(jobs: list[tuple[str, BenchConfig, str]], rounds: int, warmup: int) -> dict[str, list[float]]:
    payload = {"jobs": [[label, cfg.to_dict(), spec] for label, cfg, spec in jobs], "rounds": rounds, "warmup": warmup}
    return _child("--times", payload, "the interleaved step times")


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


#: Label of the reference row measured as PyTorch runs full fine-tuning: fp32, no checkpointing, nothing lean.
PLAIN = "full-plain"


def is_plain(cfg: BenchConfig) -> bool:
    """Whether ``cfg``'s options are PyTorch's own (then ``full`` is the plain reference itself)."""
    return cfg.precision == "fp32" and cfg.checkpoint in (None, "none") and not cfg.lean


def _plain(cfg: BenchConfig) -> BenchConfig:
    return dataclasses.replace(cfg, checkpoint="none", precision="fp32", lean=False, infer=False)


RATIOS = {"step_ratio": "step_s", "memory_ratio": "peak_mb", "tensor_ratio": "tensor_peak_mb", "saved_ratio": "saved_mb"}


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every spec ``repeats`` times, each in a fresh subprocess; ratios against ``full`` per round.

    Memory comes from one fresh process per spec and round (``repeats`` rounds); step times, with
    ``timing="interleaved"``, from one more process that steps every spec in turn for
    ``steps * repeats`` rounds (:func:`measure_times`).

    Returns ``{"results": [row per spec], "device", "load_average": {"before", "after"}, "config"}``;
    each row has the medians over rounds (``step_s``, ``peak_mb``, ``tensor_peak_mb``, ``saved_mb``,
    ``infer_*_s``), the median ratios to ``full`` under the same options (``step_ratio``,
    ``memory_ratio``, ``tensor_ratio``, ``saved_ratio``) and to the base model
    (``unmerged_ratio``, ``merged_ratio``, ``unloaded_ratio``), their spread over rounds
    (``spread``) and every round's raw measurement (``rounds``).  Unless the options are PyTorch's
    own (fp32, no checkpointing, not lean), a row ``full-plain`` measures full fine-tuning as
    PyTorch runs it, and every row also has ``*_vs_plain`` ratios against it: what the options
    save against the fine-tuning one would otherwise run.
    """
    from petite.device import resolve_device

    validate(cfg)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    before = load_average()
    jobs = [(spec, cfg, spec) for spec in cfg.specs]
    if not is_plain(cfg):
        jobs.append((PLAIN, _plain(cfg), "full"))
    rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in jobs}
    for r in range(cfg.repeats):
        for label, job_cfg, spec in jobs:
            row = _run_isolated(job_cfg, spec)
            rounds[label].append({**row, "spec": label})
            if progress is not None:
                progress(f"memory round {r + 1}/{cfg.repeats} {label}: peak {row['peak_mb']:.0f} MB, "
                         f"tensors {row['tensor_peak_mb']:.0f} MB, load {load_average()[:1]}")
    if cfg.timing == "interleaved":
        # One process, one step of every spec per round: a load change hits every spec alike.
        times = _run_timing(jobs, cfg.steps * cfg.repeats, cfg.warmup)
        if progress is not None:
            progress(f"interleaved timing: {cfg.steps * cfg.repeats} rounds, load {load_average()[:1]}")
    else:
        times = {label: [t for run in runs for t in run["step_times_s"]] for label, runs in rounds.items()}
    after = load_average()
    results = []
    refs = [("", "full")] + ([("_vs_plain", PLAIN)] if PLAIN in rounds else [])
    for label, runs in rounds.items():
        ratios: dict[str, list[float]] = {}
        for suffix, ref in refs:
            name = f"step{suffix}" if suffix else "step_ratio"
            ratios[name] = [t / r for t, r in zip(times[label], times[ref])]  # per round (interleaved: same round)
            for key, field in RATIOS.items():
                if field == "step_s":
                    continue
                name = key.replace("_ratio", suffix) if suffix else key
                ratios[name] = [run[field] / other[field] for run, other in zip(runs, rounds[ref]) if other[field] > 0]
        for key in ("unmerged_ratio", "merged_ratio", "unloaded_ratio"):
            if key in runs[0]:
                ratios[key] = [run[key] for run in runs]
        medians = {k: statistics.median(run[k] for run in runs)
                   for k in ("peak_mb", "tensor_peak_mb", "saved_mb", "process_peak_mb", "infer_base_s",
                             "infer_unmerged_s", "infer_merged_s", "infer_unloaded_s") if k in runs[0]}
        first = runs[0]
        results.append({
            "spec": label, **{k: first[k] for k in ("spec_string", "trainable", "percent_trainable", "checkpoint",
                                                    "precision", "lean", "checkpointed", "memory_kind",
                                                    "graph_from")},
            "step_s": statistics.median(times[label]), "step_times_s": times[label], **medians,
            **{k: (statistics.median(v) if v else None) for k, v in ratios.items()},
            "spread": {k: _spread(v) for k, v in ratios.items() if v},
            "rounds": runs,
        })
    return {"results": results, "device": _device_name(device), "load_average": {"before": before, "after": after},
            "config": cfg.to_dict(), "torch": torch.__version__}


def format_bench(result: dict[str, Any]) -> tuple[str, str]:
    """``(plain text, markdown)`` table of a :func:`run_bench` result (ratios: median (min-max) over rounds)."""
    def f(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    def rng(row: dict[str, Any], key: str) -> str:
        s = row["spread"].get(key)
        if s is None or f(s["min"]) == f(s["max"]):
            return f(row.get(key))
        return f"{f(row.get(key))} ({f(s['min'])}-{f(s['max'])})"

    rows = result["results"]
    plain = any("step_vs_plain" in r for r in rows)
    infer = any("merged_ratio" in r for r in rows)
    columns = ["spec", "% trained", "ckpt", "prec", "step s", "step/full", "RSS MB", "RSS/full", "tensors MB",
               "tensors/full", "saved MB"]
    columns += ["step/plain", "RSS/plain", "tensors/plain"] if plain else []
    columns += ["merged/base", "unloaded/base", "unmerged/base"] if infer else []
    cells = []
    for row in rows:
        line = [row["spec"], f(row["percent_trainable"], 3), row["checkpoint"], row["precision"], f(row["step_s"], 3),
                rng(row, "step_ratio"), f(row["peak_mb"], 0), rng(row, "memory_ratio"), f(row.get("tensor_peak_mb"), 0),
                rng(row, "tensor_ratio"), f(row["saved_mb"], 0)]
        if plain:
            line += [rng(row, "step_vs_plain"), rng(row, "memory_vs_plain"), rng(row, "tensor_vs_plain")]
        if infer:
            line += [rng(row, "merged_ratio"), rng(row, "unloaded_ratio"), rng(row, "unmerged_ratio")]
        cells.append(line)
    return render_table(columns, cells)


def _main(mode: str, payload: str) -> None:
    data = json.loads(payload)
    if mode == "--one":
        print(json.dumps(measure_spec(BenchConfig.from_dict(data["config"]), data["spec"])))
    else:
        jobs = [(label, BenchConfig.from_dict(cfg), spec) for label, cfg, spec in data["jobs"]]
        print(json.dumps(measure_times(jobs, data["rounds"], data["warmup"])))


if __name__ == "__main__":
    # Internal entry point of run_bench's subprocesses: ``python -m petite.bench --one|--times JSON``.
    if len(sys.argv) != 3 or sys.argv[1] not in ("--one", "--times"):
        sys.exit("usage: python -m petite.bench --one|--times JSON (internal; use `petite bench peft`)")
    _main(sys.argv[1], sys.argv[2])
