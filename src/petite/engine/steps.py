"""One optimisation step, by kind of model: regression (L1/MSE) or the conditional GAN.

As MONAI separates its ``SupervisedTrainer`` from its ``GanTrainer``, the
training loop (:mod:`petite.engine.train`) knows nothing about losses or
discriminators: it asks :func:`make_step` for the step that fits the model and
calls it on each batch.  A step owns the optimisers and learning-rate
schedules of what trains (their state is saved and restored with the run).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from petite.engine.config import TrainConfig
from petite.engine.distributed import average_gradients, global_mean
from petite.engine.efficiency import autocast, grad_scaler, resolve_precision
from petite.engine.optim import build_optimizer, build_scheduler
from petite.models.cvtgan import discriminator_loss, generator_loss


class TrainingStep:
    """The optimiser of the model's trainable tensors, its schedule, and mixed precision (``cfg.precision``).

    ``groups`` are the optimiser's parameter groups (:func:`petite.engine.optim.parameter_groups`:
    one per PEFT method, each with its own learning rate and weight decay).  Subclasses
    implement :meth:`__call__`: one optimisation step on a batch of ``(short, long)`` crops,
    returning the logged losses.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, groups: list[dict[str, Any]], total_steps: int,
                 device: torch.device, world: int, warmup_steps: int = 0) -> None:
        self.model, self.cfg, self.device, self.world = model, cfg, device, world
        self.params = [p for group in groups for p in group["params"]]
        self.optimizers = {"model": build_optimizer(groups, cfg.optimizer, groups[0]["lr"], groups[0]["weight_decay"])}
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.precision = resolve_precision(cfg.precision, cfg.amp, device)
        self.scaler = grad_scaler(device, self.precision)  # enabled for fp16 only

    def _schedule(self) -> None:
        """Give every optimiser its per-step schedule (call after all optimisers exist)."""
        self.schedulers = {
            name: build_scheduler(opt, self.cfg.schedule, self.total_steps, self.warmup_steps)
            for name, opt in self.optimizers.items()
        }

    def autocast(self) -> Any:
        """Forward and loss under the run's precision (nothing for fp32)."""
        return autocast(self.device, self.precision)

    def train_mode(self) -> None:
        """Put the model in training mode for the next steps."""
        self.model.train()

    @property
    def lr(self) -> float:
        """The current learning rate of the model's optimiser."""
        return float(self.optimizers["model"].param_groups[0]["lr"])

    def _update(self, name: str, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        self.scaler.scale(loss).backward()
        average_gradients(params, self.world)
        self.scaler.step(self.optimizers[name])

    def __call__(self, short: torch.Tensor, long: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError


class RegressionStep(TrainingStep):
    """``loss(model(short), long)`` with L1 or MSE."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, groups: list[dict[str, Any]], total_steps: int,
                 device: torch.device, world: int, warmup_steps: int = 0) -> None:
        super().__init__(model, cfg, groups, total_steps, device, world, warmup_steps)
        self._schedule()

    def __call__(self, short: torch.Tensor, long: torch.Tensor) -> dict[str, float]:
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            pred = self.model(short)
            loss = F.l1_loss(pred, long) if self.cfg.loss == "l1" else F.mse_loss(pred, long)
        self._update("model", loss, self.params)
        self.scaler.update()
        self.schedulers["model"].step()
        return {"loss": global_mean(loss, self.world)}


class GanStep(TrainingStep):
    """pix2pix-style conditional GAN: generator loss = adversarial + ``l1_weight`` * L1; discriminator 0.5 (real + fake).

    The discriminator trains only with ``train_discriminator`` (pre-training and full
    fine-tuning); under PEFT it stays frozen and in eval mode (its BatchNorm
    statistics fixed), as in the paper.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, groups: list[dict[str, Any]], total_steps: int,
                 device: torch.device, world: int, train_discriminator: bool, warmup_steps: int = 0) -> None:
        disc = model.discriminator
        disc.requires_grad_(train_discriminator)
        super().__init__(model, cfg, groups, total_steps, device, world, warmup_steps)
        self.train_discriminator = train_discriminator
        if train_discriminator:
            self.disc_params = [p for p in disc.parameters() if p.requires_grad]
            # pix2pix's discriminator optimiser settings, at the generator's learning rate.
            lr = groups[0]["lr"]
            self.optimizers["discriminator"] = build_optimizer(self.disc_params, "adam", lr, 0.0, betas=(0.5, 0.999))
        self._schedule()

    def train_mode(self) -> None:
        self.model.train()
        if not self.train_discriminator:
            self.model.discriminator.eval()  # frozen: keep its BatchNorm statistics fixed

    def __call__(self, short: torch.Tensor, long: torch.Tensor) -> dict[str, float]:
        logs: dict[str, float] = {}
        disc = self.model.discriminator
        with self.autocast():
            fake = self.model(short)
        if self.train_discriminator:
            opt = self.optimizers["discriminator"]
            opt.zero_grad(set_to_none=True)
            with self.autocast():
                d_loss = discriminator_loss(disc(short, long), disc(short, fake.detach()))
            self._update("discriminator", d_loss, self.disc_params)
            self.schedulers["discriminator"].step()
            logs["d_loss"] = global_mean(d_loss, self.world)
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = generator_loss(disc(short, fake), fake, long, self.cfg.l1_weight)
        self._update("model", loss, self.params)
        self.scaler.update()
        self.schedulers["model"].step()
        logs["loss"] = global_mean(loss, self.world)
        return logs


def is_gan(model: nn.Module) -> bool:
    """Whether ``model`` is trained adversarially (it carries a ``discriminator``)."""
    return isinstance(getattr(model, "discriminator", None), nn.Module)


def make_step(model: nn.Module, cfg: TrainConfig, groups: list[dict[str, Any]], total_steps: int,
              device: torch.device, world: int, train_discriminator: bool, warmup_steps: int = 0) -> TrainingStep:
    """The step that fits ``model``: :class:`GanStep` for a GAN, else :class:`RegressionStep`.

    The learning rate follows ``cfg.schedule`` over ``total_steps`` (the run's cap), rising
    linearly over the first ``warmup_steps`` for ``warmup-cosine``.
    """
    if is_gan(model):
        return GanStep(model, cfg, groups, total_steps, device, world, train_discriminator, warmup_steps)
    return RegressionStep(model, cfg, groups, total_steps, device, world, warmup_steps)
