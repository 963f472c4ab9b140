"""Training configuration: one flat dataclass, read from YAML and overridden from the command line.

Values left as ``None`` (optimizer, schedule, epochs) are filled from the
paper's hyper-parameters (:func:`petite.peft.recommended_hparams`,
supplementary Table 3) once the model and the PEFT spec are known.  A learning
rate and weight decay left as ``None`` are chosen per PEFT method
(:func:`petite.engine.optim.parameter_groups`; ``lr_policy: paper`` gives the
whole spec the paper's single value instead).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from petite.documents import read_yaml
from petite.errors import UserError

OPTIMIZERS = ("adam", "adamw")
LR_POLICIES = ("per-method", "paper")
SCHEDULES = ("cosine", "warmup-cosine", "constant")
LOSSES = ("l1", "mse")


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
    cache_rate: float = 1.0
    # Model and PEFT
    model: str = "unetr"
    preset: str = "small"
    init: str | None = None  # pretrained checkpoint to fine-tune (a run folder or model checkpoint)
    spec: str = "full"  # Mix-PEFT spec, preset name, "full" or "none"
    # Optimisation (None: the paper's value for this model and spec)
    epochs: int | None = None
    batch_size: int = 2
    lr: float | None = None  # None: per method (lr_policy)
    weight_decay: float | None = None
    lr_policy: str = "per-method"  # per-method: each method's Table 3 values; paper: the spec's one column
    optimizer: str | None = None
    schedule: str | None = None
    warmup_epochs: int = 0
    loss: str = "l1"  # regression loss; the GAN uses adversarial + l1_weight * L1
    l1_weight: float = 100.0
    # Evaluation
    val_every: int = 1
    overlap: float = 0.5
    sw_batch_size: int = 2
    # Runtime
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into the run folder

    @classmethod
    def load(cls, path: str | Path | None = None, defaults: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
        """``defaults``, then the YAML file at ``path`` (optional), then ``overrides`` that are not ``None``."""
        values: dict[str, Any] = dict(defaults or {})
        if path is not None:
            values.update(_read_yaml(Path(path)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}", path)
        cfg = cls(**values)
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
            (self.samples_per_volume >= 1, f"samples_per_volume must be >= 1, got {self.samples_per_volume}"),
            (self.epochs is None or self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.optimizer in (None, *OPTIMIZERS), f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.lr_policy in LR_POLICIES, f"lr_policy must be one of {LR_POLICIES}, got {self.lr_policy!r}"),
            (self.schedule in (None, *SCHEDULES), f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (0 <= self.overlap < 1, f"overlap must be in [0, 1), got {self.overlap}"),
            (self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}"),
            (self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}"),
            (0 <= self.cache_rate <= 1, f"cache_rate must be in [0, 1], got {self.cache_rate}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message, source)
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
