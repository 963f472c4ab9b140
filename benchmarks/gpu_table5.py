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
* ``lean_none``: lean backward alone (no checkpointing);
* ``bf16``: petite's defaults under bf16 autocast;
* ``bf16_all``: bf16, lean backward and every block checkpointed.

``--render`` only rebuilds ``table5.md`` from the JSON files already in ``--out`` (also for the
CPU tables of ``benchmarks/results/``, named ``<model>_<crop>_<config>.json`` the same way).

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
    "lean_none": ["--checkpoint", "none"],
    "all": ["--checkpoint", "all"],
    "bf16": ["--precision", "bf16"],
    "bf16_all": ["--precision", "bf16", "--checkpoint", "all"],
}

ROOT = Path(__file__).resolve().parents[1]


def bench_command(model: str, preset: str, crop: int, config: str, args: argparse.Namespace) -> list[str]:
    """The ``petite bench peft`` command line of one model, crop and configuration."""
    cmd = [sys.executable, "-m", "petite", "bench", "peft", "--model", model, "--preset", preset,
           "--crop", f"{crop},{crop},{crop}", "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--device", args.device, "--json",
           *CONFIGS[config]]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
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
    """Per model and crop: a summary (step and memory against plain full fine-tuning, per configuration), then
    one table per configuration with every ratio, and the merged-inference latencies."""
    from petite.tables import render_table

    first = next(iter(results.values()))
    out = [f"# Table 5 on {first['device']} (preset {preset}, batch {first['config']['batch']})", "",
           "Ratios are medians over rounds (min-max beside them when they differ). `/full`: against full fine-tuning "
           "with the same options; `/plain`: against full fine-tuning as PyTorch runs it (fp32, no checkpointing, "
           "nothing lean). `mem`: peak memory (CUDA: peak allocated; CPU: growth of the peak resident set); "
           "`tensors`: peak of live tensor bytes.", ""]
    for model, crop in dict.fromkeys((m, c) for m, c, _ in results):
        keys = [k for k in results if k[:2] == (model, crop)]
        specs = list(dict.fromkeys(r["spec"] for k in keys for r in results[k]["results"]))

        def row(key: tuple[str, int, str], spec: str) -> dict[str, Any] | None:
            return next((r for r in results[key]["results"] if r["spec"] == spec), None)

        def vs_plain(r: dict[str, Any] | None, key: str, config: str) -> str:
            # In the plain configuration full itself is the plain reference.
            return _cell(r, key.replace("_vs_plain", "_ratio") if config == "plain" else key)

        out += [f"## {model}, {crop}^3", ""]
        columns = ["spec"] + [f"{c} {what}" for _, _, c in keys for what in ("step/plain", "mem/plain", "tensors/plain")]
        columns += ["paper step/full", "paper mem/full"]
        cells = []
        for spec in specs:
            line = [spec]
            for key in keys:
                r = row(key, spec)
                line += [vs_plain(r, "step_vs_plain", key[2]), vs_plain(r, "memory_vs_plain", key[2]),
                         vs_plain(r, "tensor_vs_plain", key[2])]
            paper = PAPER_TABLE5.get(model, {}) if spec in ("petite", f"petite-{model}") else {}
            line += [f"{paper['step_ratio']:.2f}" if paper else "", f"{paper['memory_ratio']:.2f}" if paper else ""]
            cells.append(line)
        out += [render_table(columns, cells)[1], ""]
        for key in keys:
            config = key[2]
            result = results[key]
            cfg = result["config"]
            out += [f"### {model}, {crop}^3, {config}: checkpoint {cfg['checkpoint'] or 'per spec'}, "
                    f"{cfg['precision']}, lean {cfg['lean']}; load average {result['load_average']}", ""]
            columns = ["spec", "% trained", "ckpt", "step s", "step/full", "mem MB", "mem/full", "tensors MB",
                       "tensors/full", "saved MB", "step/plain", "mem/plain", "tensors/plain"]
            cells = [[r["spec"], f"{r['percent_trainable']:.3f}", r["checkpoint"], f"{r['step_s']:.3f}",
                      _cell(r, "step_ratio"), f"{r['peak_mb']:.0f}", _cell(r, "memory_ratio"),
                      f"{r['tensor_peak_mb']:.0f}", _cell(r, "tensor_ratio"), f"{r['saved_mb']:.0f}",
                      vs_plain(r, "step_vs_plain", config), vs_plain(r, "memory_vs_plain", config),
                      vs_plain(r, "tensor_vs_plain", config)]
                     for r in result["results"]]
            out += [render_table(columns, cells)[1], ""]
            merged = [[r["spec"], _cell(r, "merged_ratio"), _cell(r, "unloaded_ratio"), _cell(r, "unmerged_ratio")]
                      for r in result["results"] if r.get("merged_ratio")]
            if merged:
                out += [f"Inference latency against the base model ({model}, {crop}^3, {config}; median of the "
                        "per-round ratios, min-max over memory rounds):", "",
                        render_table(["spec", "merged/base", "unloaded/base", "unmerged/base"], merged)[1], ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for the JSON results and table5.md.")
    parser.add_argument("--models", default="unetr,cvtgan")
    parser.add_argument("--crops", default="64,96", help="Cubic crop sizes.")
    parser.add_argument("--configs", default="plain,default,all,bf16", help=f"Any of {', '.join(CONFIGS)}.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of each bench process.")
    parser.add_argument("--render", action="store_true", help="Only rebuild table5.md from the JSON files in --out.")
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
    if args.render:
        for model in args.models.split(","):
            for crop in crops:
                for config in args.configs.split(","):
                    path = args.out / f"{model}_{crop}_{config}.json"
                    if path.is_file():
                        results[(model, crop, config)] = json.loads(path.read_text())
        if not results:
            parser.error(f"no <model>_<crop>_<config>.json files in {args.out}")
        table = markdown(results, next(iter(results.values()))["config"]["preset"])
        (args.out / "table5.md").write_text(table)
        print(table)
        return 0
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
