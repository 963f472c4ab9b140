"""The datalist: a MONAI-style JSON file listing one scanner's subjects by split.

Layout (paths are relative to the datalist's own folder, so a dataset folder
can be moved or shared as a whole)::

    {
      "format": "petite-datalist/1",
      "scanner": "4",
      "seed": 0,
      "pretrain_train": [{"subject": "s4-0003", "short": "s4-0003_short.nii.gz",
                          "long": "s4-0003_long.nii.gz"}, ...],
      "pretrain_val": [...], "finetune_train": [...], "finetune_val": [...],
      "test": [...]
    }

An item is either a pair (``short`` and ``long`` 3D volumes) or dynamic
frames (``frames``: one 4D volume of six frames; the pipeline takes the first
frame as the short scan and the mean of all frames as the long scan, as in
ADNI).  Each split is a MONAI datalist, so
``monai.data.load_decathlon_datalist(path, data_list_key="finetune_train")``
reads it too.

All five splits are pairwise subject-disjoint.  A scanner is the pre-training
source or the fine-tuning target of an experiment; ``test`` is never used for
model selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petite.atomic import write_json
from petite.documents import read_json
from petite.errors import UserError

FORMAT = "petite-datalist/1"
SPLITS: tuple[str, ...] = ("pretrain_train", "pretrain_val", "finetune_train", "finetune_val", "test")
# Paper protocol (BRIEF section 2): 30/15 pre-training, 10/15 fine-tuning; 15 held-out test subjects.
DEFAULT_SPLIT_SIZES: tuple[int, ...] = (30, 15, 10, 15, 15)
# When there are too few subjects for every split, these are filled first.
_FILL_PRIORITY = ("finetune_train", "test", "finetune_val", "pretrain_train", "pretrain_val")
PATH_KEYS = ("short", "long", "frames")


def parse_split_sizes(text: str) -> tuple[int, ...]:
    """Parse ``"30,15,10,15,15"`` (pretrain_train, pretrain_val, finetune_train, finetune_val, test)."""
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"split sizes must be five integers like 30,15,10,15,15, got {text!r}") from None
    if len(sizes) != len(SPLITS) or any(s < 0 for s in sizes):
        raise UserError(f"split sizes must be five non-negative integers ({', '.join(SPLITS)}), got {text!r}")
    return sizes


def split_counts(n_subjects: int, sizes: Sequence[int] = DEFAULT_SPLIT_SIZES) -> dict[str, int]:
    """How many of ``n_subjects`` go to each split.

    With enough subjects every split gets its requested size (extra subjects
    are left out).  With too few, sizes shrink proportionally (largest
    remainder), every requested split keeps at least one subject while
    possible, in the order finetune_train, test, finetune_val, pretrain_train,
    pretrain_val.
    """
    requested = dict(zip(SPLITS, sizes))
    total = sum(requested.values())
    if n_subjects >= total:
        return requested
    counts = {name: 0 for name in SPLITS}
    wanted = [name for name in _FILL_PRIORITY if requested[name] > 0]
    for name in wanted[:n_subjects]:
        counts[name] = 1
    left = n_subjects - sum(counts.values())
    if left > 0:
        extra = {name: max(requested[name] - 1, 0) for name in wanted}
        extra_total = sum(extra.values())
        shares = {name: left * extra[name] / extra_total for name in wanted}
        floors = {name: int(np.floor(shares[name])) for name in wanted}
        remainder = left - sum(floors.values())
        order = sorted(wanted, key=lambda name: (-(shares[name] - floors[name]), _FILL_PRIORITY.index(name)))
        for name in order[:remainder]:
            floors[name] += 1
        for name in wanted:
            counts[name] += floors[name]
    return counts


def assign_splits(subjects: Sequence[str], sizes: Sequence[int] = DEFAULT_SPLIT_SIZES, seed: int = 0) -> dict[str, list[str]]:
    """Shuffle ``subjects`` with ``seed`` and cut them into disjoint splits."""
    if len(set(subjects)) != len(subjects):
        raise UserError("subject IDs must be unique")
    order = list(subjects)
    np.random.default_rng(seed).shuffle(order)
    counts = split_counts(len(order), sizes)
    splits: dict[str, list[str]] = {}
    start = 0
    for name in SPLITS:
        splits[name] = sorted(order[start : start + counts[name]])
        start += counts[name]
    return splits


def build_datalist(items: dict[str, dict[str, str]], splits: dict[str, list[str]], scanner: str, seed: int, root: Path) -> dict[str, Any]:
    """Assemble the datalist dictionary; file paths are made relative to ``root``."""
    datalist: dict[str, Any] = {"format": FORMAT, "scanner": scanner, "seed": seed}
    for name in SPLITS:
        entries = []
        for subject in splits.get(name, []):
            entry = {"subject": subject}
            for key, value in items[subject].items():
                entry[key] = _relative(Path(value), root) if key in PATH_KEYS else value
            entries.append(entry)
        datalist[name] = entries
    check_disjoint(datalist, "datalist")
    return datalist


def write_datalist(path: str | Path, datalist: dict[str, Any]) -> None:
    """Atomically write a datalist JSON."""
    write_json(path, datalist)


def read_datalist(path: str | Path) -> dict[str, Any]:
    """Read and validate a datalist; returned item paths are absolute."""
    path = Path(path)
    datalist = read_json(path, "datalist")
    if not isinstance(datalist, dict) or not any(name in datalist for name in SPLITS):
        raise UserError(f"not a datalist: expected an object with splits {', '.join(SPLITS)}", path)
    root = path.parent
    for name in SPLITS:
        entries = datalist.setdefault(name, [])
        if not isinstance(entries, list):
            raise UserError(f"split {name!r} must be a list", path)
        for index, entry in enumerate(entries):
            _check_item(entry, f"{name}[{index}]", path)
            for key in PATH_KEYS:
                if key in entry:
                    entry[key] = str((root / entry[key]).resolve())
    check_disjoint(datalist, path)
    return datalist


def _check_item(entry: Any, where: str, path: Path) -> None:
    """UserError naming the datalist and the item (``split[index]``) unless ``entry`` is a well-formed item."""
    if not isinstance(entry, dict):
        raise UserError(f"{where} must be an object like {{\"subject\": ..., \"short\": ..., \"long\": ...}}, "
                        f"got {_kind(entry)}", path)
    subject = entry.get("subject")
    # Integer IDs have always worked (they are hashable and print as themselves); anything else is a mistake.
    if isinstance(subject, bool) or not isinstance(subject, (str, int)) or subject == "":
        raise UserError(f"{where} needs a 'subject' that is a string, got {_kind(subject)}", path)
    where = f"{where} (subject {subject!r})"
    if not ("frames" in entry or ("short" in entry and "long" in entry)):
        raise UserError(f"{where} needs 'short' and 'long', or 'frames'", path)
    for key in PATH_KEYS:
        if key in entry and (not isinstance(entry[key], str) or not entry[key]):
            raise UserError(f"{where}: '{key}' must be a file path (a string), got {_kind(entry[key])}", path)


def _kind(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def check_disjoint(datalist: dict[str, Any], source: str | Path) -> None:
    """Refuse a subject that appears twice (in one split or across splits)."""
    seen: dict[str, str] = {}
    for name in SPLITS:
        for entry in datalist.get(name, []):
            subject = entry["subject"]
            if subject in seen:
                raise UserError(f"subject {subject!r} appears in both {seen[subject]!r} and {name!r}", source)
            seen[subject] = name


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())
