"""Cost of PEFT fine-tuning and merged inference, relative to full fine-tuning / the base model.

Run by hand (never in tests)::

    .venv/bin/python benchmarks/peft_cost.py --presets small --crop 64 --batch 1 --out peft_cost.json

For each model and preset, and each spec (full fine-tuning, every single method,
the PETITE preset of the model), it measures:

* step time: forward + backward + AdamW step, median of ``--steps`` after ``--warmup``;
* peak memory of those steps.  CUDA: ``torch.cuda.max_memory_allocated`` after a reset
  (everything allocated: weights, activations, gradients, optimizer state).  CPU:
  ``tracemalloc`` cannot see torch's allocator, so every configuration runs in a
  fresh subprocess and we report the growth of the peak RSS (``resource.getrusage``
  ``ru_maxrss``) from just before the first step to the end: activations, gradients
  and optimizer state, excluding the weights (identical for all specs);
* inference latency (eval, no grad) of the base model, the PEFT model unmerged and
  merged (``petite.peft.merge``).

Ratios are taken against full fine-tuning (step time, memory) and the base model
(inference) of the same run.  On a shared CPU timings are noisy: use ``--steps``
>= 5 and compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

SPECS = ["full", "layernorm", "bitfit", "lora", "dora", "adapter", "ssf", "vpt", "petite"]
PETITE = {"unetr": "petite-unetr", "cvtgan": "petite-cvtgan"}


def _spec_for(model: str, spec: str) -> str:
    return PETITE[model] if spec == "petite" else spec


def _build(model: str, preset: str, crop: int, device: str) -> torch.nn.Module:
    from petite.models import build_model

    overrides: dict[str, Any] = {"img_size": [crop] * 3} if model == "unetr" else {}
    torch.manual_seed(0)
    return build_model(model, preset, **overrides).to(device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _median_time(fn: Any, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_one(model_name: str, preset: str, spec: str, crop: int, batch: int, steps: int, warmup: int,
                device: str, threads: int) -> dict[str, Any]:
    """Train-step time and peak memory of one spec; inference base / unmerged / merged."""
    from petite.peft import apply_spec, merge, summary

    torch.set_num_threads(threads)
    model = _build(model_name, preset, crop, device)
    x = torch.rand(batch, 1, crop, crop, crop, device=device)
    target = torch.rand_like(x)

    model.eval()
    with torch.no_grad():
        base_latency = _median_time(lambda: model(x), steps, warmup, device)

    state = apply_spec(model, _spec_for(model_name, spec), fingerprint=False)
    info = summary(model, state)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.l1_loss(model(x), target)
        loss.backward()
        opt.step()

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_mb()
    step_time = _median_time(step, steps, warmup, device)
    peak = (torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else _rss_mb() - before
    opt.zero_grad(set_to_none=True)

    model.eval()
    with torch.no_grad():
        unmerged = _median_time(lambda: model(x), steps, warmup, device)
        merge(model)
        merged = _median_time(lambda: model(x), steps, warmup, device)
    return {
        "model": model_name, "preset": preset, "spec": spec, "spec_string": info["spec"],
        "percent_trainable": info["percent"], "step_s": step_time, "peak_mb": peak,
        "memory_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "peak RSS growth",
        "infer_base_s": base_latency, "infer_unmerged_s": unmerged, "infer_merged_s": merged,
    }


def _run_isolated(args: argparse.Namespace, model: str, preset: str, spec: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", json.dumps([model, preset, spec]), "--crop", str(args.crop),
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--device", args.device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every configuration, print the ratio table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="unetr,cvtgan")
    parser.add_argument("--presets", default="small", help="comma-separated: tiny, small, paper")
    parser.add_argument("--specs", default=",".join(SPECS))
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one config, JSON on stdout
    args = parser.parse_args(argv)

    if args.one:
        model, preset, spec = json.loads(args.one)
        print(json.dumps(measure_one(model, preset, spec, args.crop, args.batch, args.steps, args.warmup,
                                     args.device, args.threads)))
        return

    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        for preset in args.presets.split(","):
            for spec in args.specs.split(","):
                # CPU: a fresh process per config, so the peak RSS belongs to that config alone.
                row = (_run_isolated(args, model, preset, spec) if args.device == "cpu" else
                       measure_one(model, preset, spec, args.crop, args.batch, args.steps, args.warmup,
                                   args.device, args.threads))
                rows.append(row)
                print(f"  done {model}/{preset}/{spec}: step {row['step_s']:.3f}s", file=sys.stderr)
    full = {(r["model"], r["preset"]): r for r in rows if r["spec"] == "full"}
    header = (f"{'model':7} {'preset':6} {'spec':10} {'%train':>8} {'step s':>8} {'step/full':>9} "
              f"{'mem MB':>8} {'mem/full':>8} {'unmerged/base':>13} {'merged/base':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        ref = full.get((r["model"], r["preset"]))
        r["step_ratio"] = r["step_s"] / ref["step_s"] if ref else None
        r["memory_ratio"] = r["peak_mb"] / ref["peak_mb"] if ref and ref["peak_mb"] > 0 else None
        r["unmerged_ratio"] = r["infer_unmerged_s"] / r["infer_base_s"]
        r["merged_ratio"] = r["infer_merged_s"] / r["infer_base_s"]
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        print(f"{r['model']:7} {r['preset']:6} {r['spec']:10} {r['percent_trainable']:8.3f} {r['step_s']:8.3f} "
              f"{fmt(r['step_ratio']):>9} {r['peak_mb']:8.0f} {fmt(r['memory_ratio']):>8} "
              f"{r['unmerged_ratio']:13.2f} {r['merged_ratio']:11.2f}")
    if args.out:
        from petite.atomic import write_json

        write_json(args.out, {"device": args.device, "crop": args.crop, "batch": args.batch, "steps": args.steps,
                              "warmup": args.warmup, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
