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
    # Ordered grid by grid (as listed), and within a grid by seed: every seed-0 run of the main grid comes
    # before any of its seed-1 runs, and the other grids' runs come after the main grid's.
    main = [j for j in finetune if j.grid_position == 0]
    assert finetune[:len(main)] == main
    assert [j.labels["seed"] for j in main] == sorted(j.labels["seed"] for j in main)
    assert [j.grid_position for j in finetune] == sorted(j.grid_position for j in finetune)


@pytest.mark.parametrize("change, message", [
    ({"grids": [{"models": ["unetr:tiny"], "pairs": ["a-b"], "methods": ["full-ft"]}]}, "SOURCE->TARGET"),
    ({"grids": [{"models": ["unetr:tiny"], "pairs": ["a->z"], "methods": ["full-ft"]}]}, "scanner z"),
    ({"grids": [{"models": ["unetr:tiny"], "pairs": ["a->a"], "methods": ["sometimes"]}]}, "unknown method group"),
    ({"finetune": {"spec": "full"}}, "may not set spec"),
    ({"finetune": {"epochz": 3}}, "epochz"),
    ({"report": {"comparisons": [["PETITE"]]}}, "report: comparisons must be a list of [row, reference] pairs"),
    ({"report": {"post_hoc": "Full-FT lr 1e-4"}}, "report: post_hoc must be a list"),
    ({"report": {"tests": []}}, "unknown report key(s): tests"),
])
def test_bad_study_is_one_line_error(study_dir: Path, tmp_path: Path, change: dict, message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(study_dir / "bad.yaml", **change)
    result = run_cli(["sweep", path, "--out", tmp_path / "out"], capsys)
    assert result.code == 2 and message in result.err and "bad.yaml" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"train": {"batch_size": "two"}}, "train.batch_size must be an integer, got 'two'"),
    ({"finetune": {"lr": "abc"}}, "finetune.lr must be a number, got 'abc'"),
    ({"train": {"crop_size": 32}}, "train.crop_size must be a list of integers, got 32"),
    ({"pretrain": {"amp": "yes"}}, "pretrain.amp must be true or false"),
    ({"train": {"device": 0}}, "train.device must be a string"),
    ({"grids": [{"models": ["unetr:tiny"], "pairs": ["a->a"], "methods": ["full-ft"], "finetune": {"lr": "abc"}}]},
     "grids[0].finetune.lr must be a number"),
    # Values of the right type that the engine's own checks refuse, named by the run they would break.
    ({"pretrain": {"batch_size": 0}}, "run pretrain/unetr-tiny/a: batch_size must be >= 1, got 0"),
    ({"train": {"crop_size": [4, 4, 4]}}, "run pretrain/unetr-tiny/a: crop_size must be three sizes >= 8"),
    ({"finetune": {"overlap": 1.5}}, "run runs/unetr-tiny/a-to-a/no-ft/seed0: overlap must be in [0, 1)"),
])
def test_bad_training_values_are_found_when_listing(study_dir: Path, tmp_path: Path, change: dict, message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_study(study_dir / "values.yaml", **change)
    for command in (["sweep", path, "--list"], ["sweep", path, "--emit-jobs"], ["sweep", path]):
        result = run_cli([*command, "--out", tmp_path / "out"], capsys)
        assert result.code == 2 and result.err.startswith(f"petite: error: {path}: ") and message in result.err
        assert len(result.err.strip().splitlines()) == 1 and "values.yaml" in result.err
        assert not (tmp_path / "out").exists()  # found before any job started


def test_yaml_exponent_without_a_dot_is_a_learning_rate(tmp_path: Path) -> None:
    # PyYAML reads `lr: 1e-4` as the string "1e-4"; the study reads it as the number it means.
    (tmp_path / "x.json").write_text("{}")
    path = tmp_path / "s.yaml"
    write_study(path, data={"datalists": {"a": "x.json"}})
    path.write_text(path.read_text().replace("finetune:\n  epochs: 1", "finetune:\n  epochs: 1\n  lr: 1e-4"))
    jobs = Study.load(path).jobs(tmp_path / "out")
    assert {j.config["lr"] for j in jobs if j.kind == "finetune"} == {1e-4}


def test_report_section_declares_comparisons_and_post_hoc_rows(study_dir: Path) -> None:
    from petite.study.plan import read_report_settings

    path = write_study(study_dir / "r.yaml", report={"comparisons": [["LoRA", "Full-FT"], ["LoRA", "No-FT"]],
                                                     "post_hoc": ["Full-FT lr 1e-4"]})
    expected = {"comparisons": [("LoRA", "Full-FT"), ("LoRA", "No-FT")], "post_hoc": ["Full-FT lr 1e-4"]}
    assert Study.load(path).report == expected and read_report_settings(path) == expected
    assert Study.load(write_study(study_dir / "plain.yaml")).report == {"comparisons": None, "post_hoc": []}


def test_data_size_grid_and_pretraining_overrides(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    path = write_study(tmp_path / "s.yaml", data={"datalists": {"a": "x.json", "b": "x.json"}},
                       finetune={"train_subjects": 4}, grids=[
        {"name": "main", "models": ["unetr:small"], "pretrain": {"lr": 2e-3}, "pairs": ["a->b"],
         "methods": ["no-ft", "full-ft"], "seeds": [0, 1]},
        {"name": "curve", "models": ["unetr:small"], "pretrain": {"lr": 2e-3}, "pairs": ["a->b"],
         "methods": ["no-ft", "full-ft"], "train_subjects": [1, 8], "seeds": [0, 1]}])
    jobs = Study.load(path).jobs(tmp_path / "out")
    (pre,) = [j for j in jobs if j.kind == "pretrain"]
    assert pre.config["lr"] == 2e-3
    curve = [j for j in jobs if j.labels.get("role") == "data-size"]
    # No-FT once per count, Full-FT per count and seed; each its own folder; the main grid's count stays 4.
    assert sorted(j.key for j in curve) == sorted(
        ["runs/unetr-small/a-to-b/no-ft/n1/seed0", "runs/unetr-small/a-to-b/no-ft/n8/seed0"]
        + [f"runs/unetr-small/a-to-b/full-ft/n{n}/seed{s}" for n in (1, 8) for s in (0, 1)])
    assert all(j.config["train_subjects"] == j.labels["train_subjects"] for j in curve)
    main = [j for j in jobs if j.labels.get("role") == "finetune"]
    assert main and all(j.config["train_subjects"] == 4 for j in main)


def test_grids_sharing_a_pretraining_run_must_agree_on_its_settings(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    path = write_study(tmp_path / "s.yaml", data={"datalists": {"a": "x.json", "b": "x.json"}}, grids=[
        {"name": "one", "models": ["unetr:small"], "pretrain": {"lr": 2e-3}, "pairs": ["a->b"], "methods": ["full-ft"]},
        {"name": "two", "models": ["unetr:small"], "pairs": ["a->b"], "methods": ["no-ft"]}])
    with pytest.raises(Exception, match="asked for twice"):
        Study.load(path)


@pytest.mark.parametrize("study_file", sorted((Path(__file__).parents[2] / "examples" / "study").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_committed_study_files_plan(tmp_path: Path, study_file: Path) -> None:
    # Every study file we ship loads, names scanners that exist and expands into runs with valid settings.
    if study_file.name.startswith("scanners"):
        pytest.skip("a scanner file, not a study")
    jobs = Study.load(study_file).jobs(tmp_path)
    assert any(j.kind == "finetune" for j in jobs)
