"""A cross-scanner PEFT study as data: ``STUDY.yaml`` -> the list of jobs a sweep runs.

A study names its data (scanners to simulate, or existing datalists), the
training settings shared by every run, and one or more *grids*: models x
source->target scanner pairs x methods x seeds.  :func:`plan` expands it into
:class:`Job` values, each a run folder under the study's output folder::

    data/<scanner>/                                   simulation of one scanner
    pretrain/<model>-<preset>/<source>/               one pre-training run per model and source
    runs/<model>-<preset>/<source>-to-<target>/<method>/seed<k>/   one fine-tuning run

Jobs are keyed by their folder, so grids that ask for the same run share it
(and must agree on its settings), and every fine-tuning run of a model and
source starts from the same pre-trained checkpoint.  Method groups a grid can
list (each expands to rows of the paper's Tables 1/2/6/7):

``no-ft``            the pre-trained model as it is (run once: it has no seed)
``full-ft``          every weight
``singles``          LN, BitFit, LoRA, DoRA, Adapter, SSF, VPT alone
``singles+bitfit``   the same six methods (not BitFit itself) plus global BitFit
``petite``           the model's PETITE preset (``petite-unetr`` / ``petite-cvtgan``)
``mix``              every feasible encoder/decoder Mix-PEFT combination, with BitFit
``{label: NAME, spec: SPEC}``   any spec under a label of your choice

Example (the committed CPU study is ``examples/study/realistic-cpu.yaml``)::

    name: my-study
    data:
      scanner_file: scanners-half.yaml     # optional; relative to this file
      seed: 0
      anatomy: varied                      # optional: template (default) or varied (per-subject anatomy)
      subjects:                            # pretrain_train, pretrain_val, finetune_train, finetune_val, test
        1h: [8, 0, 0, 0, 0]
        4h: [0, 0, 4, 2, 6]
      # datalists: {4h: /data/scanner4/datalist.json}   instead of simulating
    train: {crop_size: [32, 32, 32], batch_size: 2, device: cpu}   # every run
    pretrain: {epochs: 15, samples_per_volume: 8}
    finetune: {epochs: 6, samples_per_volume: 8, val_every: 2}
    x-shared: &shared {lr: 1.0e-3}         # keys starting with x- are ignored: a place for YAML anchors
    grids:
      - name: main
        models: [unetr:small]
        pairs: [1h->4h]
        methods: [no-ft, full-ft, singles, singles+bitfit, petite]
        seeds: [0, 1, 2]
      - name: data-size              # a data-size curve: each method fine-tuned on the first 1, 2, ... subjects
        models: [unetr:small]
        pairs: [1h->4h]
        methods: [no-ft, full-ft, petite]
        train_subjects: [1, 2, 8]
      - name: full-ft-lr             # a grid may override fine-tuning (and pre-training: `pretrain:`) settings
        models: [unetr:small]
        pairs: [1h->4h]
        methods: [{label: Full-FT lr 1e-4, spec: full}]
        finetune: {lr: 1.0e-4}
    report:                          # optional; read by `petite report` (the sweep copies this file to OUT)
      comparisons:                   # the only comparisons tested (Holm-corrected per table), by row label;
        - [PETITE, Full-FT]          #   default: every method against Full-FT and against No-FT
        - [PETITE, No-FT]
      post_hoc: [Full-FT lr 1e-4]    # rows added after seeing results: shown, never marked best
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petite.documents import read_yaml
from petite.engine.config import AUTO, TrainConfig
from petite.errors import UserError

#: ``data.anatomy``: every subject the MNI template (posed), or each its own (petite simulate --anatomy).
ANATOMIES = ("template", "varied")
DATA_SPLITS = ("pretrain_train", "pretrain_val", "finetune_train", "finetune_val", "test")

#: Display names of the single methods (paper Table 1 rows).
METHOD_LABELS = {"layernorm": "LN", "bitfit": "BitFit", "lora": "LoRA", "dora": "DoRA", "adapter": "Adapter",
                 "ssf": "SSF", "vpt": "VPT"}
SINGLE_METHODS = ("layernorm", "bitfit", "lora", "dora", "adapter", "ssf", "vpt")
PETITE_PRESETS = {"unetr": "petite-unetr", "cvtgan": "petite-cvtgan"}
METHOD_GROUPS = ("no-ft", "full-ft", "singles", "singles+bitfit", "petite", "mix")
_STUDY_KEYS = {"name", "data", "train", "pretrain", "finetune", "grids", "report"}
_REPORT_KEYS = {"comparisons", "post_hoc"}
_GRID_KEYS = {"name", "models", "pairs", "methods", "seeds", "finetune", "pretrain", "train_subjects"}
# Keys a study may not set in train/pretrain/finetune: the sweep decides them per run.
_RESERVED = {"datalist", "out", "init", "spec", "model", "preset", "seed", "extra", "train_split", "val_split"}
_SAFE = re.compile(r"^[A-Za-z0-9_.]+$")


@dataclass(frozen=True)
class Method:
    """One row of a method table: what trains (``spec``) and how the report labels it."""

    label: str  # display name without BitFit ("LoRA", "PETITE", "LoRA + SSF")
    spec: str
    family: str  # none | full | single | preset | mix | custom
    bitfit: bool = False
    encoder: str | None = None
    decoder: str | None = None

    @property
    def slug(self) -> str:
        """Folder name of the method's runs."""
        if self.family == "mix":
            return f"mix-{self.encoder}-{self.decoder}" + ("+bitfit" if self.bitfit else "")
        base = {"none": "no-ft", "full": "full-ft", "preset": self.label.lower()}.get(self.family)
        if base is None:
            base = re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")
            base += "+bitfit" if self.bitfit and self.label != "BitFit" else ""
        return base


@dataclass
class Job:
    """One unit of work of a sweep: a simulation or a training run, in its own folder."""

    key: str  # folder relative to the study output, unique
    kind: str  # simulate | pretrain | finetune
    needs: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig values, or simulation settings
    labels: dict[str, Any] = field(default_factory=dict)
    grid_position: int = 0  # the first grid that asked for it: earlier grids' runs go first

    @property
    def stage(self) -> int:
        """0 data, 1 pre-training, 2 fine-tuning: a job only needs jobs of earlier stages."""
        return {"simulate": 0, "pretrain": 1, "finetune": 2}[self.kind]


@dataclass
class Study:
    """A parsed, validated study file."""

    path: Path
    name: str
    data: dict[str, Any]
    train: dict[str, Any]
    pretrain: dict[str, Any]
    finetune: dict[str, Any]
    grids: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Study:
        """Read and validate the study file ``path`` (UserError naming the file on bad input)."""
        path = Path(path)
        doc = read_yaml(path, "study file")
        if not isinstance(doc, dict):
            raise UserError("a study must be a mapping with name, data, grids", path)
        # Keys starting with "x-" hold YAML anchors (settings several grids share), as in docker-compose files.
        doc = {key: value for key, value in doc.items() if not str(key).startswith("x-")}
        unknown = sorted(set(doc) - _STUDY_KEYS)
        if unknown:
            raise UserError(f"unknown study key(s): {', '.join(unknown)} (known: {', '.join(sorted(_STUDY_KEYS))})", path)
        name = str(doc.get("name") or path.stem)
        settings = {}
        for section in ("train", "pretrain", "finetune"):
            settings[section] = _training_settings(doc.get(section), section, path)
        grids = doc.get("grids")
        if not isinstance(grids, list) or not grids:
            raise UserError("'grids' must be a non-empty list", path)
        data = doc.get("data")
        if not isinstance(data, dict):
            raise UserError("'data' must be a mapping (subjects to simulate, or datalists)", path)
        report = report_settings(doc.get("report"), path)
        study = cls(path, name, data, settings["train"], settings["pretrain"], settings["finetune"], grids, report)
        study.jobs()  # validates the grids and the data they need
        return study

    # ------------------------------------------------------------------ data

    def _scanner_file(self) -> Path | None:
        value = self.data.get("scanner_file")
        if value is None:
            return None
        file = (self.path.parent / str(value)).resolve()
        if not file.is_file():
            raise UserError(f"scanner_file {value!r} not found (looked for {file})", self.path)
        return file

    def data_jobs(self) -> dict[str, Job]:
        """Scanner id -> its simulation job (``datalist`` given: no job, the file is used as it is)."""
        from petite.data.scanners import get_scanner

        subjects = self.data.get("subjects") or {}
        datalists = self.data.get("datalists") or {}
        if not isinstance(subjects, dict) or not isinstance(datalists, dict):
            raise UserError("data.subjects and data.datalists must map scanner ids to values", self.path)
        scanner_file = self._scanner_file()
        anatomy = self.data.get("anatomy", "template")
        if anatomy not in ANATOMIES:
            raise UserError(f"data.anatomy must be one of {', '.join(ANATOMIES)}, got {anatomy!r}", self.path)
        jobs = {}
        for position, (scanner, sizes) in enumerate(subjects.items()):
            scanner = str(scanner)
            get_scanner(scanner, scanner_file)  # an unknown id fails here, naming the file
            if (not isinstance(sizes, list) or len(sizes) != len(DATA_SPLITS)
                    or any(not isinstance(n, int) or n < 0 for n in sizes) or sum(sizes) < 1):
                raise UserError(f"data.subjects.{scanner} must be five split sizes ({', '.join(DATA_SPLITS)})",
                                self.path)
            # Each scanner gets its own subjects (different phantoms), as in a multi-site study.
            seed = int(self.data.get("seed", 0)) + 1000 * position
            jobs[scanner] = Job(key=f"data/{_safe(scanner, self.path)}", kind="simulate", config={
                "scanner": scanner, "scanner_file": str(scanner_file) if scanner_file else None,
                "split_sizes": list(sizes), "seed": seed, "workers": int(self.data.get("workers", 1)),
                "vary_anatomy": anatomy == "varied"})
        for scanner in datalists:
            if str(scanner) in jobs:
                raise UserError(f"scanner {scanner} is both simulated and given a datalist", self.path)
        return jobs

    def datalist_path(self, scanner: str, out: Path) -> Path:
        """Where the datalist of ``scanner`` is (its simulation's, or the one given)."""
        given = (self.data.get("datalists") or {}).get(scanner)
        if given is not None:
            path = (self.path.parent / str(given)).resolve()
            if not path.is_file():
                raise UserError(f"datalist of scanner {scanner} not found: {path}", self.path)
            return path
        return out / "data" / _safe(scanner, self.path) / f"scanner{scanner}" / "datalist.json"

    # ------------------------------------------------------------------ grids

    def methods(self, entry: Any, model_name: str) -> list[Method]:
        """The methods a grid's ``methods`` entry stands for."""
        from petite.peft.spec import Spec

        if isinstance(entry, dict):
            if set(entry) != {"label", "spec"}:
                raise UserError(f"a custom method needs exactly 'label' and 'spec', got {sorted(entry)}", self.path)
            spec = Spec.parse(str(entry["spec"]))
            return [Method(str(entry["label"]), spec.to_string(), "custom", spec.bitfit)]
        if entry == "no-ft":
            return [Method("No-FT", "none", "none")]
        if entry == "full-ft":
            return [Method("Full-FT", "full", "full")]
        if entry == "singles":
            return [Method(METHOD_LABELS[m], m, "single", m == "bitfit") for m in SINGLE_METHODS]
        if entry == "singles+bitfit":
            return [Method(METHOD_LABELS[m], f"{m},bitfit", "single", True) for m in SINGLE_METHODS if m != "bitfit"]
        if entry == "petite":
            if model_name not in PETITE_PRESETS:
                raise UserError(f"no PETITE preset for model {model_name!r}", self.path)
            return [Method("PETITE", Spec.parse(PETITE_PRESETS[model_name]).to_string(), "preset", True)]
        if entry == "mix":
            return _mix_methods(model_name)
        raise UserError(f"unknown method group {entry!r}; use one of {', '.join(METHOD_GROUPS)} or "
                        "{label: NAME, spec: SPEC}", self.path)

    def jobs(self, out: Path | None = None) -> list[Job]:
        """Every job of the study, data first, then pre-training, then fine-tuning (deduplicated).

        Fine-tuning runs go grid by grid, in the order the study lists them (put what matters most first),
        and within a grid by seed, so an interrupted sweep has every method of the first grids at the lower
        seeds rather than some methods at all seeds.
        """
        from petite.models.registry import PRESET_NAMES, list_models

        out = Path(out) if out is not None else Path("study-out")
        data_jobs = self.data_jobs()
        known_scanners = set(data_jobs) | {str(s) for s in (self.data.get("datalists") or {})}
        jobs: dict[str, Job] = {job.key: job for job in data_jobs.values()}

        def add(job: Job) -> None:
            old = jobs.get(job.key)
            if old is not None and (old.config != job.config or old.needs != job.needs):
                raise UserError(f"run {job.key} is asked for twice with different settings", self.path)
            jobs.setdefault(job.key, job)

        for number, grid in enumerate(self.grids):
            where = f"grids[{number}]"
            if not isinstance(grid, dict):
                raise UserError(f"{where} must be a mapping", self.path)
            unknown = sorted(set(grid) - _GRID_KEYS)
            if unknown:
                raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}", self.path)
            grid_name = str(grid.get("name", f"grid{number}"))
            # A grid may change fine-tuning settings (e.g. a learning rate); give its methods their own labels.
            overrides = _training_settings(grid.get("finetune"), f"{where}.finetune", self.path)
            # ... and pre-training settings (a model's own lr): grids sharing a pre-training run must agree on them.
            pre_overrides = _training_settings(grid.get("pretrain"), f"{where}.pretrain", self.path)
            sizes = grid.get("train_subjects")
            if sizes is not None and (not isinstance(sizes, list) or not sizes or any(
                    isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)):
                raise UserError(f"{where}: train_subjects must be a list of subject counts >= 1", self.path)
            if sizes is not None and "train_subjects" in overrides:
                raise UserError(f"{where}: give train_subjects as the grid's list or in its finetune, not both",
                                self.path)
            seeds = grid.get("seeds", [0])
            if not isinstance(seeds, list) or not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
                raise UserError(f"{where}: seeds must be a list of non-negative integers", self.path)
            for model_entry in _as_list(grid.get("models"), where, "models", self.path):
                model, _, preset = str(model_entry).partition(":")
                preset = preset or "small"
                if model not in list_models() or preset not in PRESET_NAMES:
                    raise UserError(f"{where}: unknown model {model_entry!r} (models {', '.join(list_models())}; "
                                    f"presets {', '.join(PRESET_NAMES)})", self.path)
                methods = [m for entry in _as_list(grid.get("methods"), where, "methods", self.path)
                           for m in self.methods(entry, model)]
                for pair in _as_list(grid.get("pairs"), where, "pairs", self.path):
                    source, target = _parse_pair(str(pair), where, self.path)
                    for scanner in (source, target):
                        if scanner not in known_scanners:
                            raise UserError(f"{where}: scanner {scanner} is neither simulated nor given a datalist",
                                            self.path)
                    pre = self._pretrain_job(model, preset, source, out, data_jobs, pre_overrides)
                    add(pre)
                    for method in methods:
                        for seed in (seeds[:1] if method.family == "none" else seeds):
                            for n in sizes or [None]:
                                job = self._finetune_job(grid_name, model, preset, source, target, method, seed, out,
                                                         pre, data_jobs, overrides, n)
                                job.grid_position = number
                                add(job)
        return sorted(jobs.values(), key=lambda j: (j.stage, j.grid_position, j.labels.get("seed", 0)
                                                    if j.stage == 2 else 0, j.key))

    def _pretrain_job(self, model: str, preset: str, source: str, out: Path, data_jobs: dict[str, Job],
                      overrides: dict[str, Any]) -> Job:
        key = f"pretrain/{model}-{preset}/{_safe(source, self.path)}"
        config = {**self.train, **self.pretrain, **overrides, "datalist": str(self.datalist_path(source, out)), "out": str(out / key),
                  "model": model, "preset": preset, "spec": "full", "seed": int(self.pretrain.get("seed", 0))}
        config["extra"] = {"study": self.name, "role": "pretrain", "model": model, "preset": preset, "source": source}
        needs = (data_jobs[source].key,) if source in data_jobs else ()
        return _validated_job(Job(key, "pretrain", needs, config, config["extra"]), self.path)

    def _finetune_job(self, grid: str, model: str, preset: str, source: str, target: str, method: Method, seed: int,
                      out: Path, pre: Job, data_jobs: dict[str, Job], overrides: dict[str, Any],
                      train_subjects: int | None = None) -> Job:
        """One fine-tuning run; with ``train_subjects`` a point of a data-size curve (role ``data-size``, its own
        folder ``.../<method>/n<k>/seed<s>``, kept out of the method tables by the report)."""
        pair = f"{source}->{target}"
        size = f"/n{train_subjects}" if train_subjects is not None else ""
        key = (f"runs/{model}-{preset}/{_safe(source, self.path)}-to-{_safe(target, self.path)}/{method.slug}"
               f"{size}/seed{seed}")
        role = "finetune" if train_subjects is None else "data-size"
        labels = {"study": self.name, "grid": grid, "role": role, "model": model, "preset": preset,
                  "source": source, "target": target, "pair": pair, "method": method.label, "family": method.family,
                  "bitfit": method.bitfit, "encoder": method.encoder, "decoder": method.decoder, "seed": seed}
        config = {**self.train, **self.finetune, **overrides, "datalist": str(self.datalist_path(target, out)),
                  "out": str(out / key), "model": model, "preset": preset, "spec": method.spec,
                  "init": str(out / pre.key), "seed": seed, "train_split": "finetune_train",
                  "val_split": "finetune_val"}
        if train_subjects is not None:
            config["train_subjects"] = train_subjects
            labels["train_subjects"] = train_subjects
        if method.family == "none":
            config["epochs"] = 0
        # Labels go into the run's config.yaml; the grid name is not part of a run's identity.
        config["extra"] = {k: v for k, v in labels.items() if k != "grid"}
        needs = (pre.key,) + ((data_jobs[target].key,) if target in data_jobs else ())
        return _validated_job(Job(key, "finetune", needs, config, labels), self.path)


def report_settings(section: Any, path: Path) -> dict[str, Any]:
    """A study's ``report`` section, checked: ``{"comparisons": [(row, reference), ...] | None, "post_hoc": [...]}``.

    ``comparisons`` None means the report's default set (every method against Full-FT and against No-FT).
    """
    if section is None:
        return {"comparisons": None, "post_hoc": []}
    if not isinstance(section, dict):
        raise UserError("'report' must be a mapping (comparisons, post_hoc)", path)
    unknown = sorted(set(section) - _REPORT_KEYS)
    if unknown:
        raise UserError(f"unknown report key(s): {', '.join(unknown)} (known: {', '.join(sorted(_REPORT_KEYS))})",
                        path)
    comparisons = section.get("comparisons")
    if comparisons is not None:
        if not isinstance(comparisons, list) or not all(
                isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) and x for x in c) for c in comparisons):
            raise UserError("report: comparisons must be a list of [row, reference] pairs of method labels", path)
        comparisons = [(a, b) for a, b in comparisons]
    post_hoc = section.get("post_hoc") or []
    if not isinstance(post_hoc, list) or not all(isinstance(x, str) and x for x in post_hoc):
        raise UserError("report: post_hoc must be a list of method labels", path)
    return {"comparisons": comparisons, "post_hoc": list(post_hoc)}


def read_report_settings(path: str | Path) -> dict[str, Any]:
    """The ``report`` section of the study file ``path`` alone (the rest is not re-validated: a sweep's copy)."""
    path = Path(path)
    doc = read_yaml(path, "study file")
    if not isinstance(doc, dict):
        raise UserError("a study must be a mapping with name, data, grids", path)
    return report_settings(doc.get("report"), path)


def _mix_methods(model_name: str) -> list[Method]:
    """The feasible Mix-PEFT combinations of a model (built at the tiny preset: feasibility is structural)."""
    from petite.models.registry import build_model
    from petite.peft import combos

    methods = []
    for spec in combos(build_model(model_name, "tiny")):
        encoder, decoder = (m.name for _, m in spec.methods)
        label = f"{METHOD_LABELS[encoder]} + {METHOD_LABELS[decoder]}"
        methods.append(Method(label, spec.to_string(), "mix", spec.bitfit, encoder, decoder))
    return methods


def _training_settings(values: Any, section: str, path: Path) -> dict[str, Any]:
    """A validated mapping of TrainConfig settings the study may set (``section`` names it in errors)."""
    values = values or {}
    if not isinstance(values, dict):
        raise UserError(f"'{section}' must be a mapping of training settings", path)
    bad = sorted(set(values) & _RESERVED)
    if bad:
        raise UserError(f"'{section}' may not set {', '.join(bad)}: the sweep sets them per run", path)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise UserError(f"unknown training setting(s) in '{section}': {', '.join(unknown)}", path)
    hints = typing.get_type_hints(TrainConfig)
    return {key: AUTO if key == "lr" and isinstance(value, str) and value.strip().lower() == AUTO
            else _typed_setting(value, hints[key], f"{section}.{key}", path) for key, value in values.items()}


def _typed_setting(value: Any, hint: Any, where: str, path: Path) -> Any:
    """``value`` checked against the TrainConfig field type ``hint`` (UserError naming ``where``).

    Types are checked here, when the study is read, because a wrong type (``batch_size: two``)
    would otherwise surface as a TypeError inside a worker, after pre-training.  The one
    coercion: a float field given a string that parses as a number, since YAML 1.1 (PyYAML)
    reads ``1e-4`` without a dot as a string.
    """
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}", path)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}", path)
        return value
    if hint is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise UserError(f"{where} must be a number, got {value!r}", path)
        return number
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, got {value!r}", path)
        return value
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, item) for v in value):
            kind = {int: "integers", float: "numbers", str: "strings"}.get(item, item.__name__)
            raise UserError(f"{where} must be a list of {kind}, got {value!r}", path)
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping, got {value!r}", path)
        return value
    raise TypeError(f"no check for TrainConfig type {hint!r} ({where})")  # a new field type: teach this function


def _validated_job(job: Job, path: Path) -> Job:
    """``job`` after the training engine's own checks of its settings (``TrainConfig.validate``), or a UserError.

    Run when the study is planned, so ``petite sweep --list`` and the sweep find a bad value
    before any job starts rather than when the first run that uses it is reached.
    """
    try:
        TrainConfig(**job.config).validate()
    except UserError as err:
        raise UserError(f"run {job.key}: {err}", path) from None
    except TypeError as err:  # a value of a type validate() cannot compare; _typed_setting should catch them all
        raise UserError(f"run {job.key}: a training setting has the wrong type ({err})", path) from None
    return job


def _as_list(value: Any, where: str, key: str, path: Path) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: '{key}' must be a non-empty list", path)
    return value


def _parse_pair(text: str, where: str, path: Path) -> tuple[str, str]:
    source, sep, target = text.partition("->")
    if not sep or not source.strip() or not target.strip():
        raise UserError(f"{where}: a pair is written SOURCE->TARGET, got {text!r}", path)
    return source.strip(), target.strip()


def _safe(name: str, path: Path) -> str:
    if not _SAFE.match(name):
        raise UserError(f"scanner id {name!r} cannot name a folder (letters, digits, _ and . only)", path)
    return name


__all__ = ["METHOD_GROUPS", "Job", "Method", "Study", "read_report_settings", "report_settings"]
