"""petite.api: the README's example runs as written; bad input is refused as the CLI refuses it; import stays light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import petite
from petite.data.nifti import load_volume
from petite.errors import UserError
from petite.models import build_model
from petite.models.checkpoint import save_model
from tests.cli_runner import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def readme_example() -> str:
    """The first python block of the README's section "## Python API"."""
    text = README.read_text()
    section = text[text.index("\n## Python API\n"):]
    section = section[: section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_section_follows_the_tour() -> None:
    headings = [line for line in README.read_text().splitlines() if line.startswith("## ")]
    assert headings[headings.index("## A tour in six commands") + 1] == "## Python API"


@pytest.mark.e2e
def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert re.search(r"PETITE trains \d+\.\d\d % of the parameters; converged: (True|False)", out)
    assert re.search(r"test PSNR in the head \d+\.\d\d dB over 1 subject", out)
    # Every step left its result where the commands leave theirs.
    for run in ("runs/pre", "runs/petite"):
        assert (tmp_path / run / "final.json").is_file()
    assert (tmp_path / "runs/petite/adapter.safetensors").is_file()
    metrics = json.loads((tmp_path / "runs/petite/eval/metrics.json").read_text())
    assert metrics["summary"]["n"] == 1 and np.isfinite(metrics["summary"]["psnr"])
    restored, _ = load_volume(tmp_path / "restored.nii.gz")
    short, _ = load_volume(tmp_path / "sim/scannertiny/stiny-0000_short.nii.gz")
    assert restored.shape == short.shape and np.isfinite(restored).all()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    save_model(build_model("unetr", "tiny"), folder / "model")
    return folder


def test_evaluate_is_the_cli_evaluate(checkpoint: Path, datalist: Path, tmp_path: Path, capsys) -> None:
    result = petite.evaluate(checkpoint, datalist, tmp_path / "api", device="cpu", progress=False)
    cli = run_cli(["evaluate", "--model", checkpoint, "--datalist", datalist, "--out", tmp_path / "cli",
                   "--device", "cpu"], capsys)
    assert cli.code == 0, cli.err
    written = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert json.loads((tmp_path / "api" / "metrics.json").read_text()) == written
    assert result["subjects"] == written["subjects"] and result["summary"]["psnr"] == written["summary"]["psnr"]
    # Without out: the same numbers, nothing written.
    assert petite.evaluate(checkpoint, datalist, device="cpu", progress=False)["subjects"] == written["subjects"]


@pytest.mark.parametrize("call, message", [
    (lambda d, c, t: petite.evaluate(c, d, t / "ev", overlap=1.5), "overlap must be in [0, 1)"),
    (lambda d, c, t: petite.evaluate(c, d, t / "ev", roi=(16, 16)), "roi must be three positive integers"),
    (lambda d, c, t: petite.evaluate(c, d, t / "ev", ssim_window="box"), "ssim_window must be one of"),
    (lambda d, c, t: petite.evaluate(c, d, d), "output exists and is not a folder"),
    (lambda d, c, t: petite.evaluate(t / "nosuch", d), "no such run folder or model checkpoint"),
    (lambda d, c, t: petite.predict(c, t / "missing.nii.gz", t / "out.nii.gz"), "input not found"),
    (lambda d, c, t: petite.load_model(t / "nosuch"), "no such run folder or model checkpoint"),
    (lambda d, c, t: petite.finetune(d, t / "run", spec="lora"), "finetune needs init"),
    (lambda d, c, t: petite.pretrain(d, t / "run", batch_size=0), "batch_size must be >= 1"),
    (lambda d, c, t: petite.pretrain(d, t / "run", epochz=1), "unknown config key(s): epochz"),
    (lambda d, c, t: petite.simulate(t / "sim", subjects=0, scanners="tiny"), "--subjects must be at least 1"),
    (lambda d, c, t: petite.simulate(t / "sim", subjects=2, scanners="nosuch"), "nosuch"),
])
def test_bad_input_is_a_user_error_before_anything_is_written(call, message: str, datalist: Path, checkpoint: Path,
                                                              tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        call(datalist, checkpoint, tmp_path)
    assert message in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_import_petite_stays_light() -> None:
    code = ("import sys, petite; assert 'torch' not in sys.modules and 'petite.api' not in sys.modules; "
            "assert set(petite.__all__) >= {'simulate', 'pretrain', 'finetune', 'evaluate', 'predict', 'load_model'}; "
            "assert 'load_model' in dir(petite); f = petite.load_model; assert 'petite.api' in sys.modules; "
            "print(petite.__version__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == petite.__version__
    with pytest.raises(AttributeError):
        petite.nosuch  # noqa: B018
