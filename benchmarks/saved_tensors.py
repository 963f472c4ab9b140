"""What autograd keeps for backward, per spec: where the graph starts, and what lean backward and checkpointing remove.

Deterministic (bytes, not times), so one forward per configuration is enough; never in tests::

    python benchmarks/saved_tensors.py --preset small --crop 64 --out benchmarks/results/saved_tensors_small.json

For each model and spec it runs the training forward and loss once (the GAN's generator loss
through its frozen discriminator) and reports, from :func:`petite.engine.efficiency.autograd_profile`:

* ``graph_from``: the first module a graph reaches.  Every module that ran before it kept
  nothing: PyTorch records no graph where no input requires grad, so a "no-grad prefix" is
  already there;
* ``prefix``: the outermost modules no graph reached (the graph's start and e.g. UNETR's frozen
  ``encoder1`` on the raw input), and ``prefix_mb``: what they keep under full fine-tuning, i.e.
  what PyTorch's own pruning already saves;
* ``saved_mb`` under PyTorch as it is (``plain``), with lean backward (``lean``), and with lean
  backward plus the spec's default checkpointing (``default``) and every block checkpointed
  (``all``).  Inside checkpointed blocks nothing is kept (their inputs are, and are counted by
  the caller's ops); the recomputation's own peak shows in ``petite bench``'s tensor peak.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

SPECS: dict[str, list[str]] = {
    "unetr": ["full", "bitfit", "lora", "vpt", "encoder=vpt", "encoder=lora:r=4",
              # LoRA that starts at a later block: q/k of the last two of six blocks (small preset)
              "encoder=lora:r=4:targets=vit.blocks.4.attn.to_q/vit.blocks.4.attn.to_k/vit.blocks.5.attn.to_q/"
              "vit.blocks.5.attn.to_k",
              "decoder=lora:r=4", "decoder=ssf", "decoder=adapter", "petite-unetr"],
    "cvtgan": ["full", "bitfit", "lora", "vpt", "encoder=vpt:tokens=8/32", "encoder=lora:r=8", "decoder=lora:r=8",
               "decoder=ssf", "petite-cvtgan"],
}


def profile(model_name: str, preset: str, crop: int, spec: str, checkpoint: str, lean: bool) -> dict[str, Any]:
    """One forward of the training loss under ``spec`` with the given memory options."""
    from petite.bench import BenchConfig, _loss_for_profile, _prepare

    cfg = BenchConfig(model=model_name, preset=preset, crop=(crop,) * 3, checkpoint=checkpoint, lean=lean,
                      device="cpu")
    job = _prepare(cfg, spec, torch.device("cpu"), keep_base=False)
    from petite.engine.efficiency import autograd_profile

    result = autograd_profile(job.model, lambda: _loss_for_profile(job.model, job.short, job.long))
    result["checkpointed"] = job.checkpointed
    result["checkpoint"] = job.checkpoint
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="unetr,cvtgan")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from petite.tables import render_table

    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        full = profile(model, args.preset, args.crop, "full", "none", False)
        full_bytes = {r["module"]: r["saved_bytes"] for r in full["modules"]}
        for spec in SPECS[model]:
            plain = full if spec == "full" else profile(model, args.preset, args.crop, spec, "none", False)
            lean = profile(model, args.preset, args.crop, spec, "none", True)
            default = profile(model, args.preset, args.crop, spec, None, True)  # type: ignore[arg-type]
            everything = profile(model, args.preset, args.crop, spec, "all", True)
            # The outermost modules no graph reached (neither their inputs nor their outputs require grad).
            no_graph = [r["module"] for r in plain["modules"] if not r["graph"]]
            prefix = [m for m in no_graph if not any(m.startswith(p + ".") for p in no_graph)]
            rows.append({
                "model": model, "spec": spec, "graph_from": plain["graph_from"], "prefix": prefix,
                "prefix_mb": sum(full_bytes.get(m, 0) for m in prefix) / 2**20,
                "plain_mb": plain["saved_bytes"] / 2**20, "lean_mb": lean["saved_bytes"] / 2**20,
                "default_checkpoint": default["checkpoint"], "default_mb": default["saved_bytes"] / 2**20,
                "default_checkpointed": default["checkpointed"], "all_mb": everything["saved_bytes"] / 2**20,
                "full_mb": full["saved_bytes"] / 2**20,
            })
            print(f"{model} {spec}: graph from {plain['graph_from']}, saved {rows[-1]['plain_mb']:.0f} -> lean "
                  f"{rows[-1]['lean_mb']:.0f} -> default {rows[-1]['default_mb']:.0f} MB", file=sys.stderr)
    columns = ["model", "spec", "graph starts at", "no graph: MB these keep under full", "plain MB", "lean MB",
               "default ckpt", "default MB", "all MB"]
    cells = [[r["model"], r["spec"], str(r["graph_from"]), f"{r['prefix_mb']:.0f}", f"{r['plain_mb']:.0f}",
              f"{r['lean_mb']:.0f}", r["default_checkpoint"], f"{r['default_mb']:.0f}", f"{r['all_mb']:.0f}"]
             for r in rows]
    print(render_table(columns, cells)[1])
    if args.out is not None:
        args.out.write_text(json.dumps({"preset": args.preset, "crop": args.crop, "torch": torch.__version__,
                                        "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
