"""Prognosis on a cohort of 300+ synthetic head-and-neck patients: is the C-index difference real at this size?

The demo's prognosis table (90 patients) cannot separate settings whose C-indices
differ by a few hundredths.  This script makes the cohort large enough to try:

1. simulate ``--per-centre`` patients at each of six centres (A..F; 300 by default)
   with clinical variables and relapse-free survival (``petite.headneck.synthetic``);
2. train a CT-only UNETR on centre A's training split and upgrade it with PEMMA
   (reference design) on the same split - short runs, the encoders are
   feature extractors here; no survival outcome is used for them;
3. run :func:`petite.prognosis.comparison.demo_step` on the whole cohort: encoder
   features of the CT model (CT) and the PEMMA model (CT+PET), survival heads with
   and without clinical variables (MLP and ridge linear Cox branches), clinical
   only, and the oracle; stratified ``--folds``-fold CV repeated over ``--seeds``;
   per-seed mean C-index and the pooled out-of-fold C-index with a 95 % bootstrap
   interval; the Kaplan-Meier split uses each fold's training median only.

Run from the repository root (it takes a while: simulation ~3-13 s per patient at
``--size small``, then feature extraction and the CV; ``--size tiny`` is faster)::

    python examples/prognosis_300.py --out /tmp/prognosis300 --size tiny
    python examples/prognosis_300.py --out /tmp/p --per-centre 4 --steps 2 --seeds 0 --folds 2   # smoke test

Outputs: ``OUT/data`` (cohort and datalist), ``OUT/runs`` (ct, pemma), ``OUT/report``
(``prognosis.json``, ``prognosis.md``, ``prognosis_km.png``).  Note that centre A's
training patients also trained the segmenters (segmentation labels only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from petite.errors import UserError
from petite.headneck.synthetic import simulate_hn
from petite.pemma import pipeline
from petite.pemma.runs import load_run
from petite.prognosis.comparison import demo_step

CENTRES = "A,B,C,D,E,F"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the three steps, print the table; 2 with a one-line error on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="Output folder (must not exist).")
    parser.add_argument("--per-centre", type=int, default=50, help="Patients per centre (6 centres).")
    parser.add_argument("--size", default="small", help="Synthetic grid: tiny, small or full.")
    parser.add_argument("--steps", type=int, default=200, help="CT pre-training steps (PEMMA: the same).")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="CV repetitions.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the cohort and the segmenters.")
    parser.add_argument("--workers", type=int, default=1, help="Simulation processes.")
    args = parser.parse_args(argv)
    try:
        if args.out.exists():
            raise UserError("output folder exists; choose a new one", args.out)
        if args.per_centre * len(CENTRES.split(",")) < 12 or args.folds < 2:
            raise UserError("need at least 12 patients in all and 2 folds")
        seeds = [int(s) for s in args.seeds.split(",")]
        datalist = simulate_hn(args.out / "data", centres=CENTRES, n_patients=args.per_centre, seed=args.seed,
                               size=args.size, workers=args.workers, progress=True)
        crop = (16, 16, 16) if args.size == "tiny" else (32, 32, 32)
        preset = "tiny" if args.size == "tiny" else "small"
        runs = args.out / "runs"
        pipeline.pretrain(datalist, "A", runs / "ct", inputs="ct", preset=preset, crop=crop, steps=args.steps,
                          seed=args.seed, device="auto", val=False, progress=True)
        pipeline.adapt(runs / "ct", datalist, "A", runs / "pemma", steps=args.steps, seed=args.seed,
                       device="auto", val=False, progress=True)
        models = {name: load_run(runs / name)[0] for name in ("ct", "pemma")}
        n = args.per_centre * len(CENTRES.split(","))
        result = demo_step(args.out, datalist, models, print, n_patients=n, seeds=seeds, folds=args.folds)
    except UserError as err:
        print(f"prognosis_300: error: {err}", file=sys.stderr)
        return 2
    print(result["note"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
