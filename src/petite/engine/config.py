"""Training configuration: one flat dataclass, read from YAML and overridden from the command line.

Every value is checked and coerced by :meth:`TrainConfig.load` (YAML reads ``1e-3``
as a string and people write ``batch_size: "2"``): a wrong type or range is a
one-line :class:`~petite.errors.UserError` naming the file and the key.

Training length is judged on validation (:mod:`petite.engine.train`): a run
validates every ``val_every`` steps, keeps the best weights (masked PSNR on the
validation split), and stops after ``patience`` validations without an
improvement of at least ``min_delta`` dB, or at ``max_steps`` (then it is
recorded as *capped*, not converged).  ``epochs`` is another way to give the
cap (epochs x steps per epoch).

Values left as ``None`` (optimizer, schedule, the cap) are filled from the
paper's hyper-parameters (:func:`petite.peft.recommended_hparams`,
supplementary Table 3) once the model and the PEFT spec are known.  A learning
rate left as ``None`` is chosen per PEFT method
(:func:`petite.engine.optim.parameter_groups`; ``lr_policy: paper`` gives the
whole spec the paper's single value instead); ``lr: auto`` searches a
multiplier of those values on the validation split (``lr_grid``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from petite.data.normalise import MODES as NORMALISE_MODES
from petite.documents import read_yaml
from petite.engine.efficiency import CHECKPOINT_MODES, PRECISION_CHOICES
from petite.errors import UserError

OPTIMIZERS = ("adam", "adamw")
LR_POLICIES = ("per-method", "paper")
SCHEDULES = ("cosine", "warmup-cosine", "constant")
LOSSES = ("l1", "mse")
DEVICES = ("auto", "cpu", "cuda")
AUTO = "auto"


@dataclass
class TrainConfig:
    """Everything a pre-training or fine-tuning run needs; saved as the run's ``config.yaml``."""

    datalist: str = ""
    out: str = ""
    # Data
    train_split: str = "pretrain_train"
    val_split: str = "pretrain_val"
    test_split: str = "test"
    crop_size: list[int] | None = None  # None: chosen from the volumes (64^3, or 64x64x32 on thin grids)
    samples_per_volume: int = 1  # random crops drawn from each training volume per epoch
    train_subjects: int | None = None  # only the first N subjects of train_split (data-size curves); None: all
    cache_rate: float = 1.0
    normalise: str = "input"  # input: one factor from the short scan; paper: each volume min-max to [0, 1]
    # Model and PEFT
    model: str = "unetr"
    preset: str | None = None  # None: "small" when pre-training, the checkpoint's when fine-tuning
    init: str | None = None  # pretrained checkpoint to fine-tune (a run folder or model checkpoint)
    spec: str = "full"  # Mix-PEFT spec, preset name, "full" or "none"
    residual: bool = False  # UNETR: predict a correction added to the input (the CVT-GAN always does)
    # Length: validation decides; max_steps (or epochs) is the cap
    max_steps: int | None = None
    epochs: int | None = None
    val_every: int | None = None  # steps between validations (None: one pass over the training subjects)
    patience: int = 10  # validations without improvement before stopping (0: train to the cap)
    min_delta: float = 0.0  # dB of validation masked PSNR that count as an improvement
    # Optimisation (None: the paper's value for this model and spec)
    batch_size: int = 2
    lr: float | str | None = None  # None: per method (lr_policy); "auto": searched on validation
    lr_grid: list[float] = field(default_factory=lambda: [0.25, 1.0, 4.0])  # lr auto: multipliers tried
    # lr auto: when the best trial sits at an edge of the grid, up to this many more multipliers are
    # tried past that edge, one grid step at a time (a best value at the edge says the grid was too narrow)
    lr_grid_extend: int = 2
    lr_trial_fraction: float = 0.25  # lr auto: each trial's cap as a fraction of max_steps
    weight_decay: float | None = None
    lr_policy: str = "per-method"  # per-method: each method's Table 3 values; paper: the spec's one column
    optimizer: str | None = None
    schedule: str | None = None
    warmup: float = 0.05  # warmup-cosine: fraction of max_steps with a linearly rising learning rate
    loss: str = "l1"  # regression loss; the GAN uses adversarial + l1_weight * L1
    l1_weight: float = 100.0
    # Evaluation
    overlap: float = 0.5
    # Validation's own overlap (None: ``overlap``): validation only ranks checkpoints, and at 0.25 a
    # 96x96x68 volume takes 48 windows of 32^3 instead of 125 (2.3x faster; the test keeps ``overlap``).
    val_overlap: float | None = None
    sw_batch_size: int = 2
    # Runtime
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # with precision None: fp16 autocast on CUDA, fp32 on the CPU
    precision: str | None = None  # auto | fp32 | bf16 | fp16 (CUDA); None: as amp says
    checkpoint: str | None = None  # activation checkpointing: none | frozen | all; None: frozen under PEFT
    lean: bool = True  # frozen convolutions keep no input for backward (same gradients, less memory)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into the run folder

    @classmethod
    def load(cls, path: str | Path | None = None, defaults: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
        """``defaults``, then the YAML file at ``path`` (optional), then ``overrides`` that are not ``None``.

        Raises:
            UserError: an unknown key, or a value of the wrong type or range (naming the file).
        """
        values: dict[str, Any] = dict(defaults or {})
        if path is not None:
            values.update(_read_yaml(Path(path)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}", path)
        hints = get_type_hints(cls)
        typed = {key: _coerce(key, value, hints[key], path) for key, value in values.items()}
        cfg = cls(**typed)
        cfg.validate(path)
        return cfg

    def validate(self, source: str | Path | None = None) -> None:
        """Raise UserError (naming ``source``) for values that cannot work."""
        if not self.datalist:
            raise UserError("no datalist given (--datalist or `datalist:` in the config)", source)
        if not self.out:
            raise UserError("no output run folder given (--out or `out:` in the config)", source)
        checks = [
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.train_subjects is None or self.train_subjects >= 1,
             f"train_subjects must be >= 1, got {self.train_subjects}"),
            (self.samples_per_volume >= 1, f"samples_per_volume must be >= 1, got {self.samples_per_volume}"),
            (self.epochs is None or self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}"),
            (self.val_every is None or self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (self.min_delta >= 0, f"min_delta must be >= 0, got {self.min_delta}"),
            (self.lr in (None, AUTO) or (isinstance(self.lr, float) and self.lr > 0),
             f"lr must be > 0 or 'auto', got {self.lr!r}"),
            (bool(self.lr_grid) and all(m > 0 for m in self.lr_grid), f"lr_grid must hold multipliers > 0, got {self.lr_grid}"),
            (self.lr_grid_extend >= 0, f"lr_grid_extend must be >= 0, got {self.lr_grid_extend}"),
            (0 < self.lr_trial_fraction <= 1, f"lr_trial_fraction must be in (0, 1], got {self.lr_trial_fraction}"),
            (self.weight_decay is None or self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.optimizer in (None, *OPTIMIZERS), f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.lr_policy in LR_POLICIES, f"lr_policy must be one of {LR_POLICIES}, got {self.lr_policy!r}"),
            (self.schedule in (None, *SCHEDULES), f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.precision in (None, *PRECISION_CHOICES),
             f"precision must be one of {PRECISION_CHOICES}, got {self.precision!r}"),
            (self.checkpoint in (None, *CHECKPOINT_MODES),
             f"checkpoint must be one of {CHECKPOINT_MODES}, got {self.checkpoint!r}"),
            (0 <= self.warmup < 1, f"warmup must be a fraction of the steps in [0, 1), got {self.warmup}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.normalise in NORMALISE_MODES, f"normalise must be one of {NORMALISE_MODES}, got {self.normalise!r}"),
            (0 <= self.overlap < 1, f"overlap must be in [0, 1), got {self.overlap}"),
            (self.val_overlap is None or 0 <= self.val_overlap < 1,
             f"val_overlap must be in [0, 1), got {self.val_overlap}"),
            (self.sw_batch_size >= 1, f"sw_batch_size must be >= 1, got {self.sw_batch_size}"),
            (self.device in DEVICES, f"device must be auto, cpu or cuda, got {self.device!r}"),
            (0 <= self.cache_rate <= 1, f"cache_rate must be in [0, 1], got {self.cache_rate}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message, source)
        if self.schedule == "warmup-cosine" and self.warmup == 0:
            raise UserError("schedule warmup-cosine needs warmup > 0 (a fraction of the steps); "
                            "use schedule cosine for no warm-up", source)
        if self.crop_size is not None and (len(self.crop_size) != 3 or min(self.crop_size) < 8):
            raise UserError(f"crop_size must be three sizes >= 8, got {self.crop_size}", source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise UserError("config must be a mapping of key: value", path)
    return data


def _coerce(key: str, value: Any, hint: Any, source: str | Path | None) -> Any:
    """``value`` as the type ``hint`` says (numbers written as strings accepted), else a one-line UserError."""
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    if value is None:
        if "None" in text:
            return None
        raise UserError(f"{key} must not be empty", source)
    try:
        if key == "lr" and isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        if text.startswith("list[int]"):
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise TypeError
            return [_integer(v) for v in value]
        if text.startswith("list[float]"):
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise TypeError
            return [_real(v) for v in value]
        if text.startswith("dict"):
            if not isinstance(value, dict):
                raise TypeError
            return value
        if text.startswith("int"):
            return _integer(value)
        if text.startswith("float"):
            return _real(value)
        if text.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1"):
                return True
            if str(value).lower() in ("false", "no", "0"):
                return False
            raise TypeError
        if text.startswith("str"):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}: {value!r} is not a valid {_describe(text)}", source) from None
    raise AssertionError(f"no coercion for {key}: {hint}")  # programming error


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not number.is_integer():
        raise ValueError
    return int(number)


def _real(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


def _describe(hint: str) -> str:
    for prefix, words in (("list[int]", "list of three integers"), ("list[float]", "list of numbers"),
                          ("int", "integer"), ("float", "number"), ("bool", "true/false"), ("dict", "mapping"),
                          ("str", "text")):
        if hint.startswith(prefix):
            return words
    return hint
