"""The paper's Table 5 on a GPU: `petite bench peft` on the paper presets at 64^3 and 96^3, both models.

Run where a CUDA GPU is (never in tests)::

    python benchmarks/gpu_table5.py --out benchmarks/results/gpu            # everything (about 40 min on one GPU)
    python benchmarks/gpu_table5.py --specs full,petite,lora,vpt --configs plain,default --out ...   # ~10 min
    python benchmarks/gpu_table5.py --dry-run --out /tmp/t5                # CPU, tiny presets: checks the plumbing

For each model, crop and memory configuration it runs ``petite bench peft ... --json`` (each spec
in a fresh process, ratios against full fine-tuning of the same round) and writes

* ``<model>_<crop>_<config>.json``: the bench result as printed;
* ``table5.md``: one markdown table per model: step time and peak memory relative to full
  fine-tuning for every spec, crop and configuration, the paper's Table 5 ratios beside the
  PETITE rows.

Configurations (``--configs``):

* ``plain``: PyTorch as it is (fp32, no checkpointing, nothing lean): what the paper measured;
* ``default``: petite's defaults (lean backward; frozen blocks checkpointed under PEFT);
* ``all``: lean backward and every block checkpointed;
* ``bf16``: petite's defaults under bf16 autocast.

Memory on CUDA is ``torch.cuda.max_memory_allocated`` over the training steps (weights,
gradients, optimiser state and activations), the number that decides whether a run fits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Table 5 of the PETITE paper as the issue quotes it: PETITE's step time and memory relative to full fine-tuning.
PAPER_TABLE5: dict[str, dict[str, float]] = {
    "unetr": {"step_ratio": 0.71, "memory_ratio": 0.70},
    "cvtgan": {"step_ratio": 0.68, "memory_ratio": 0.56},
}

CONFIGS: dict[str, list[str]] = {
    "plain": ["--no-lean", "--checkpoint", "none"],
    "default": [],
    "all": ["--checkpoint", "all"],
    "bf16": ["--precision", "bf16"],
}

ROOT = Path(__file__).resolve().parents[1]


def bench_command(model: str, preset: str, crop: int, config: str, args: argparse.Namespace) -> list[str]:
    """The ``petite bench peft`` command line of one model, crop and configuration."""
    cmd = [sys.executable, "-m", "petite", "bench", "peft", "--model", model, "--preset", preset,
           "--crop", f"{crop},{crop},{crop}", "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--device", args.device, "--json",
           *CONFIGS[config]]
    if args.specs:
        cmd += ["--specs", args.specs]
    if config != "default" or args.no_infer:
        cmd.append("--no-infer")  # merged vs base latency does not depend on the training options
    return cmd


def _cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None or row.get(key) is None:
        return "-"
    spread = row.get("spread", {}).get(key)
    text = f"{row[key]:.2f}"
    if spread and f"{spread['min']:.2f}" != f"{spread['max']:.2f}":
        text += f" ({spread['min']:.2f}-{spread['max']:.2f})"
    return text


def markdown(results: dict[tuple[str, int, str], dict[str, Any]], preset: str) -> str:
    """One table per model: rows = specs, columns = step/full and memory/full per crop and configuration."""
    from petite.tables import render_table

    out = [f"# Table 5 on {next(iter(results.values()))['device']} (preset {preset})", ""]
    for model in dict.fromkeys(m for m, _, _ in results):
        keys = [k for k in results if k[0] == model]
        specs = list(dict.fromkeys(r["spec"] for k in keys for r in results[k]["results"]))
        columns = ["spec"]
        for _, crop, config in keys:
            columns += [f"{crop}^3 {config} step/full", f"{crop}^3 {config} mem/full", f"{crop}^3 {config} peak MB"]
            if config != "plain":  # against full fine-tuning as PyTorch runs it
                columns += [f"{crop}^3 {config} step/plain", f"{crop}^3 {config} mem/plain"]
        columns += ["paper step/full", "paper mem/full"]
        cells = []
        for spec in specs:
            line = [spec]
            for key in keys:
                row = next((r for r in results[key]["results"] if r["spec"] == spec), None)
                line += [_cell(row, "step_ratio"), _cell(row, "memory_ratio"),
                         "-" if row is None else f"{row['peak_mb']:.0f}"]
                if key[2] != "plain":
                    line += [_cell(row, "step_vs_plain"), _cell(row, "memory_vs_plain")]
            paper = PAPER_TABLE5.get(model, {}) if spec in ("petite", f"petite-{model}") else {}
            line += [f"{paper['step_ratio']:.2f}" if paper else "", f"{paper['memory_ratio']:.2f}" if paper else ""]
            cells.append(line)
        out += [f"## {model}", "", render_table(columns, cells)[1], ""]
        for key in (k for k in keys if k[2] == "default"):
            merged = [[r["spec"], _cell(r, "merged_ratio"), _cell(r, "unloaded_ratio"), _cell(r, "unmerged_ratio")]
                      for r in results[key]["results"] if r.get("merged_ratio")]
            if merged:
                out += [f"Inference latency relative to the base model ({model}, {key[1]}^3):", "",
                        render_table(["spec", "merged/base", "unloaded/base", "unmerged/base"], merged)[1], ""]
    loads = [r["load_average"] for r in results.values()]
    out += [f"Load average before/after each bench: {loads}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for the JSON results and table5.md.")
    parser.add_argument("--models", default="unetr,cvtgan")
    parser.add_argument("--crops", default="64,96", help="Cubic crop sizes.")
    parser.add_argument("--configs", default="plain,default,all,bf16", help=f"Any of {', '.join(CONFIGS)}.")
    parser.add_argument("--specs", default=None, help="Specs for petite bench (default: its own: full, every "
                                                      "single method, PETITE).")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-infer", action="store_true")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny presets, 32^3, batch 2, full and petite, 1 step: checks the script, no numbers.")
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    if args.dry_run:
        args.device, args.preset, args.crops, args.batch = "cpu", "tiny", "32", 2
        args.steps, args.warmup, args.repeats, args.specs = 1, 0, 1, args.specs or "full,petite"
    crops = [int(c) for c in args.crops.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                       if p)}
    results: dict[tuple[str, int, str], dict[str, Any]] = {}
    for model in args.models.split(","):
        for crop in crops:
            for config in args.configs.split(","):
                cmd = bench_command(model, args.preset, crop, config, args)
                t0 = time.perf_counter()
                print(f"{model} {crop}^3 {config}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(proc.stderr.strip(), file=sys.stderr)
                    return proc.returncode
                result = json.loads(proc.stdout)
                (args.out / f"{model}_{crop}_{config}.json").write_text(json.dumps(result, indent=2) + "\n")
                results[(model, crop, config)] = result
                print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    table = markdown(results, args.preset)
    (args.out / "table5.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
