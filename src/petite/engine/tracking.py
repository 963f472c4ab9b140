"""Experiment tracking: what a training run reports beyond its run folder (``--track mlflow``).

The run folder stays the record (``config.yaml``, ``metrics.jsonl``, ``final.json``, weights); a
tracker mirrors it into a tracking service so that runs can be browsed and compared there:

- at the start, the run's settings (:meth:`Tracker.start`: every ``config.yaml`` key as a parameter);
- per optimisation step the training loss, and per validation its metrics (:meth:`Tracker.log_metrics`,
  the step as MLflow's step);
- at the end, the final metrics (test PSNR/SSIM/NRMSE, % trainable, steps, time) and the run's
  weights as artifacts: the adapter (``adapter.safetensors`` + ``adapter.json``) of a PEFT run, the
  model (``model.safetensors`` + ``model.json``) of a pre-training or full fine-tuning run, with
  ``config.yaml``, ``final.json`` and ``metrics.jsonl`` (:meth:`Tracker.finish`).

:class:`Tracker` is the interface the engine calls (:mod:`petite.engine.train`); :class:`MlflowTracker`
is the one backend, and tests use a recording one.  :func:`make_tracker` checks everything (the package
installed, the URI usable) before the run folder is created, so a missing ``mlflow`` is one line,
exit 2, nothing written.  Only the process of rank 0 tracks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from petite.atomic import write_text
from petite.errors import UserError

TRACKERS = ("mlflow",)
#: The files of a run folder logged as artifacts at the end, where present.
ARTIFACTS = ("config.yaml", "final.json", "metrics.jsonl", "adapter.safetensors", "adapter.json",
             "model.safetensors", "model.json")
#: ``final.json`` entries logged as final metrics (``test`` is flattened to ``test_<metric>``).
FINAL_KEYS = ("trainable", "percent", "steps", "best_step", "best_val_psnr_masked", "best_val_psnr", "time_s",
              "step_time_s", "peak_memory_mb")
MISSING = "mlflow is not installed: pip install 'petite[track]'"


class Tracker:
    """What the training loop tells a tracking backend; the base class tracks nothing."""

    def start(self, run_folder: Path, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """The run in ``run_folder`` begins (or resumes) with these settings."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalar metrics at optimisation step ``step``."""

    def finish(self, run_folder: Path, final: Mapping[str, Any] | None, status: str = "FINISHED") -> None:
        """The run ended (``FINISHED``, ``FAILED`` or ``KILLED``): final metrics and artifacts when it finished."""


def final_metrics(final: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of ``final.json`` worth a metric: test metrics as ``test_<name>``, then :data:`FINAL_KEYS`."""
    out: dict[str, float] = {}
    for key, value in (final.get("test") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"test_{key}"] = float(value)
    for key in FINAL_KEYS:
        value = final.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Settings as MLflow parameters: nested keys joined by ``.``, values as text (MLflow's limit: 6000 chars)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        elif value is not None:
            out[name] = str(value)[:6000]
    return out


class MlflowTracker(Tracker):
    """MLflow: a local file store (``./mlruns`` by default) or any tracking URI, one MLflow run per petite run.

    A resumed petite run continues its MLflow run (its id is kept in the run folder's
    ``mlflow_run_id``), so its metrics stay one curve.
    """

    ID_FILE = "mlflow_run_id"

    def __init__(self, uri: str | None = None, experiment: str = "petite") -> None:
        try:
            import mlflow
        except ImportError:
            raise UserError(MISSING) from None
        self.mlflow = mlflow
        self.uri = uri or Path("mlruns").resolve().as_uri()
        if "://" not in self.uri or self.uri.startswith("file:"):
            # MLflow 3 keeps its file store in maintenance mode behind this switch; it still works and needs
            # no database (a server or `sqlite:///mlflow.db` with full mlflow: --track-uri).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.experiment = experiment
        self.run_id: str | None = None
        from mlflow.tracking import MlflowClient

        try:
            # Asked now, before the run folder exists: a bad URI or an unreachable server is refused first.
            self.client: Any = MlflowClient(tracking_uri=self.uri)
            self.client.get_experiment_by_name(self.experiment)
        except Exception as err:  # noqa: BLE001 - MLflow raises many types for a bad store
            raise UserError(f"cannot track with MLflow at {self.uri} ({type(err).__name__}: {err})") from None

    def start(self, run_folder: Path, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        run_name = Path(run_folder).resolve().name
        try:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
            id_file = Path(run_folder) / self.ID_FILE
            previous = id_file.read_text().strip() if id_file.is_file() else None
            if previous:
                self.run_id = previous
                self.client.update_run(previous, status="RUNNING")
            else:
                run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
                self.run_id = run.info.run_id
                for key, value in flat_params(params).items():
                    self.client.log_param(self.run_id, key, value)
                write_text(id_file, self.run_id + "\n")
        except Exception as err:  # noqa: BLE001 - an unreachable server or a bad URI is the user's to fix
            raise UserError(f"cannot track with MLflow at {self.uri} ({type(err).__name__}: {err})") from None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, run_folder: Path, final: Mapping[str, Any] | None, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        if final:
            self.log_metrics(final_metrics(final), int(final.get("steps") or 0))
            for name in ARTIFACTS:
                path = Path(run_folder) / name
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=status)


def make_tracker(kind: str | None, uri: str | None = None, experiment: str = "petite") -> Tracker:
    """The tracker for ``--track KIND`` (``None``: no tracking); checks the package before any run starts.

    Raises:
        UserError: an unknown kind, ``--track-uri`` without ``--track``, or mlflow not installed.
    """
    if kind is None:
        if uri is not None:
            raise UserError("--track-uri only applies with --track mlflow")
        return Tracker()
    if kind not in TRACKERS:
        raise UserError(f"unknown tracker {kind!r}; expected one of {', '.join(TRACKERS)}")
    return MlflowTracker(uri, experiment)


__all__ = ["MISSING", "MlflowTracker", "TRACKERS", "Tracker", "final_metrics", "flat_params", "make_tracker"]
