"""The study planner (petite.study.plan): method groups expanded into jobs, shared pre-training, bad study files."""

from __future__ import annotations

from pathlib import Path

import pytest

from petite.study.plan import Study
from tests.cli_runner import run_cli
from tests.study.study_files import write_study


def test_plan_expands_groups_and_shares_pretraining(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    path = write_study(tmp_path / "s.yaml", data={"datalists": {"a": "x.json", "b": "x.json", "c": "x.json"}}, grids=[
        {"name": "main", "models": ["unetr:small"], "pairs": ["a->b", "a->c"],
         "methods": ["no-ft", "full-ft", "singles", "singles+bitfit", "petite"], "seeds": [0, 1, 2]},
        {"name": "mix", "models": ["unetr:small"], "pairs": ["a->b"], "methods": ["mix", "full-ft"], "seeds": [0]},
        {"name": "lr", "models": ["unetr:small"], "pairs": ["a->b"], "finetune": {"lr": 1e-4},
         "methods": [{"label": "Full-FT lr 1e-4", "spec": "full"}]}])
    jobs = Study.load(path).jobs(tmp_path / "out")
    pretrain = [j for j in jobs if j.kind == "pretrain"]
    finetune = [j for j in jobs if j.kind == "finetune"]
    assert [j.key for j in pretrain] == ["pretrain/unetr-small/a"]
    # per pair: No-FT once, then 3 seeds x (Full-FT + 7 singles + 6 with BitFit + PETITE); mix: 9 UNETR combos.
    assert len(finetune) == 2 * (1 + 3 * 15) + 9 + 1
    # A grid's own fine-tuning settings reach only its runs, which get their own folder.
    low = [j for j in finetune if j.config.get("lr") is not None]
    assert [j.key for j in low] == ["runs/unetr-small/a-to-b/full-ft-lr-1e-4/seed0"] and low[0].config["lr"] == 1e-4
    assert all(j.needs == ("pretrain/unetr-small/a",) and j.config["init"].endswith("pretrain/unetr-small/a")
               for j in finetune)
    # The mix grid's Full-FT seed 0 is the main grid's run, not a second one.
    assert len({j.key for j in finetune}) == len(finetune)
    labels = {(j.labels["method"], j.labels["bitfit"]) for j in finetune}
    assert ("LoRA", True) in labels and ("LoRA", False) in labels and ("BitFit", True) in labels
    assert ("LoRA + SSF", True) in labels and ("PETITE", True) in labels
    # Ordered by seed: every seed-0 run comes before any seed-1 run.
    seeds = [j.labels["seed"] for j in finetune]
    assert seeds == sorted(seeds)


@pytest.mark.parametrize("change, message", [
    ({"grids": [{"models": ["unetr:tiny"], "pairs": ["a-b"], "methods": ["full-ft"]}]}, "SOURCE->TARGET"),
    ({"grids": [{"models": ["unetr:tiny"], "pairs": ["a->z"], "methods": ["full-ft"]}]}, "scanner z"),
    ({"grids": [{"models": ["unetr:tiny"], "pairs": ["a->a"], "methods": ["sometimes"]}]}, "unknown method group"),
    ({"finetune": {"spec": "full"}}, "may not set spec"),
    ({"finetune": {"epochz": 3}}, "epochz"),
])
def test_bad_study_is_one_line_error(study_dir: Path, tmp_path: Path, change: dict, message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(study_dir / "bad.yaml", **change)
    result = run_cli(["sweep", path, "--out", tmp_path / "out"], capsys)
    assert result.code == 2 and message in result.err and "bad.yaml" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
