"""Measure how much the realistic scanners (examples/scanners/realistic.yaml) differ from one another.

For one source and several target scanners, simulated with ``--anatomy varied``:

1. the short scan's masked PSNR inside the head (test subjects; the `petite metrics` definition);
2. the effective resolution of the long scan (:func:`petite.data.resolution.effective_fwhm_mm`
   against the phantom) and the white-matter noise (CoV) of the short scan;
3. a Gaussian filter fitted on the source vs one fitted on the target, both scored on the
   target's test subjects: what fitting on the wrong scanner loses;
4. with ``--train``: a small UNETR pre-trained on the source (validation-stopped, as `petite demo`
   does) and scored without fine-tuning (No-FT) on the source's and every target's test subjects.

Usage (2 CPU cores; see docs/realistic_scanners.md for the numbers it printed)::

    PYTHONPATH=src python docs/scripts/measure_realistic_scanners.py --out /tmp/realistic \\
        --source r3h --targets r1h,r2h,r4h,r5h --train

Writes ``OUT/measurements.json`` and prints a markdown table.  Every number comes from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from petite.baselines.predictors import filter_predictor, fit_gaussian
from petite.data.datalist import read_datalist
from petite.data.resolution import effective_fwhm_mm, white_matter_cov
from petite.data.scanners import get_scanner
from petite.data.simulate import SimulationRequest, run_simulation, subject_phantom
from petite.engine.evaluate import evaluate, input_predictor, iter_scans

REALISTIC = Path(__file__).resolve().parents[2] / "examples" / "scanners" / "realistic.yaml"


def _mean(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = np.array([r[key] for r in rows], dtype=np.float64)
    return float(values.mean()), float(values.std())


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scanner-file", type=Path, default=REALISTIC)
    parser.add_argument("--source", default="r3h")
    parser.add_argument("--targets", default="r1h,r2h,r4h,r5h")
    parser.add_argument("--source-splits", default="10,2,0,0,4")
    parser.add_argument("--target-splits", default="0,0,2,1,4")
    parser.add_argument("--seed", type=int, default=0)
    # One process by default: the template and its morphology load once and stay cached between scanners.
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train", action="store_true", help="pre-train on the source and score No-FT everywhere")
    parser.add_argument("--max-steps", type=int, default=1500)
    args = parser.parse_args()

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"source": args.source, "targets": args.targets.split(","), "seed": args.seed,
                              "scanner_file": str(args.scanner_file), "load_average": {"start": _load()},
                              "scanners": {}, "seconds": {}}
    roles = [(args.source, tuple(int(v) for v in args.source_splits.split(",")))]
    roles += [(t, tuple(int(v) for v in args.target_splits.split(","))) for t in args.targets.split(",")]
    datalists: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for scanner_id, splits in roles:
        scanner = get_scanner(scanner_id, args.scanner_file)
        folder = out / "data" / scanner_id
        if not (folder / "simulation.json").exists():
            run_simulation(SimulationRequest(out=folder, scanners=(scanner,), n_subjects=sum(splits), seed=args.seed,
                                             workers=args.workers, split_sizes=splits, vary_anatomy=True,
                                             montage=False), progress=False)
        datalists[scanner_id] = read_datalist(folder / f"scanner{scanner_id}" / "datalist.json")
        print(f"simulated {scanner_id} ({time.perf_counter() - started:.0f} s, load {_load()})", flush=True)
    record["seconds"]["simulate"] = time.perf_counter() - started

    # 1-2. Input quality, effective resolution and noise per scanner (test subjects).
    for scanner_id, _ in roles:
        scanner = get_scanner(scanner_id, args.scanner_file)
        test = list(iter_scans(datalists[scanner_id], "test"))
        rows = evaluate(test, input_predictor)
        fwhm, cov = [], []
        for scans in test:
            index = int(scans.subject.rsplit("-", 1)[1])
            phantom = subject_phantom(args.seed, scanner, index, vary_anatomy=True)
            truth = phantom.activity(scanner)
            fwhm.append(effective_fwhm_mm(scans.long_raw, truth, scans.head, scanner.spacing))
            white = phantom.white_matter_core(scanner, erosion_voxels=1)
            cov.append(white_matter_cov(scans.short_raw, white))
        record["scanners"][scanner_id] = {
            "short_psnr_masked": _mean(rows, "psnr_masked"), "short_psnr": _mean(rows, "psnr"),
            "effective_fwhm_mm": [float(np.mean(fwhm)), float(np.std(fwhm))],
            "effective_fwhm_voxels": float(np.mean(fwhm)) / float(np.mean(scanner.spacing)),
            "short_wm_cov": [float(np.mean(cov)), float(np.std(cov))], "test_subjects": len(test),
            "settings": {k: v for k, v in scanner.to_dict().items() if k not in ("vendor", "site")},
        }
        print(scanner_id, json.dumps(record["scanners"][scanner_id]), flush=True)

    # 3. Gaussian fitted on the source vs on the target.
    gauss_source = fit_gaussian(list(iter_scans(datalists[args.source], "pretrain_train")))
    record["gaussian_source"] = {"sigma": gauss_source.sigma, "gain": gauss_source.gain}
    for scanner_id, _ in roles[1:]:
        test = list(iter_scans(datalists[scanner_id], "test"))
        gauss_target = fit_gaussian(list(iter_scans(datalists[scanner_id], "finetune_train")))
        on_source = _mean(evaluate(test, filter_predictor(gauss_source)), "psnr_masked")
        on_target = _mean(evaluate(test, filter_predictor(gauss_target)), "psnr_masked")
        record["scanners"][scanner_id]["gaussian"] = {
            "fitted_on_source": on_source, "fitted_on_target": on_target, "loss_db": on_target[0] - on_source[0],
            "target_sigma": gauss_target.sigma, "target_gain": gauss_target.gain}
        print(scanner_id, "gaussian", json.dumps(record["scanners"][scanner_id]["gaussian"]), flush=True)
    source_test = list(iter_scans(datalists[args.source], "test"))
    record["scanners"][args.source]["gaussian"] = {
        "fitted_on_source": _mean(evaluate(source_test, filter_predictor(gauss_source)), "psnr_masked")}
    record["load_average"]["after_measurements"] = _load()
    record["seconds"]["measurements"] = time.perf_counter() - started
    (out / "measurements.json").write_text(json.dumps(record, indent=2))  # kept if the training is stopped
    print(table(record), flush=True)

    # 4. Cross-scanner drop of a source-trained network.
    if args.train:
        from petite.engine.config import TrainConfig
        from petite.engine.train import train

        common = dict(model="unetr", crop_size=[32, 32, 32], batch_size=4, seed=args.seed, device="cpu",
                      test_split="test", residual=True)
        t = time.perf_counter()
        pretrain = train(TrainConfig(
            datalist=str(out / "data" / args.source / f"scanner{args.source}" / "datalist.json"),
            out=str(out / "runs" / "pretrain"), spec="full", preset="small", train_split="pretrain_train",
            val_split="pretrain_val", max_steps=args.max_steps, val_every=100, lr=2e-3, schedule="warmup-cosine",
            min_delta=0.05, patience=2, **common), progress=False)
        record["seconds"]["pretrain"] = time.perf_counter() - t
        record["pretrain"] = {k: pretrain.get(k) for k in ("steps", "stopped", "converged", "best_step")}
        record["load_average"]["after_pretrain"] = _load()
        print("pretrain", json.dumps(record["pretrain"]), f"{record['seconds']['pretrain']:.0f} s", flush=True)
        for scanner_id, _ in roles:
            split = "pretrain_val" if scanner_id == args.source else "finetune_train"
            final = train(TrainConfig(
                datalist=str(out / "data" / scanner_id / f"scanner{scanner_id}" / "datalist.json"),
                out=str(out / "runs" / f"noft-{scanner_id}"), spec="none", init=str(out / "runs" / "pretrain"),
                train_split=split, val_split=split, max_steps=0, **common), progress=False)
            rows = json.loads((out / "runs" / f"noft-{scanner_id}" / "test_metrics.json").read_text())["subjects"]
            entry = record["scanners"][scanner_id]
            entry["noft_psnr_masked"] = _mean(rows, "psnr_masked")
            entry["noft_gain_over_input_db"] = entry["noft_psnr_masked"][0] - entry["short_psnr_masked"][0]
            print(scanner_id, "No-FT", entry["noft_psnr_masked"], f"(input {entry['short_psnr_masked'][0]:.2f})",
                  flush=True, )
            del final
        source_gain = record["scanners"][args.source]["noft_gain_over_input_db"]
        for scanner_id, _ in roles[1:]:
            entry = record["scanners"][scanner_id]
            # Drop = what the source model adds over the short scan in-domain minus what it adds on the target.
            entry["cross_scanner_drop_db"] = source_gain - entry["noft_gain_over_input_db"]
            entry["noft_minus_target_gaussian_db"] = entry["noft_psnr_masked"][0] - entry["gaussian"]["fitted_on_target"][0]
            # Second definition: the network's margin over a Gaussian fitted where it is scored, in-domain minus on
            # the target (input quality differs a lot between scanners; the fitted filter is the fair yardstick).
            source = record["scanners"][args.source]
            in_domain = source["noft_psnr_masked"][0] - source["gaussian"]["fitted_on_source"][0]
            entry["cross_scanner_drop_vs_gaussian_db"] = in_domain - entry["noft_minus_target_gaussian_db"]
    record["load_average"]["end"] = _load()
    record["seconds"]["total"] = time.perf_counter() - started
    (out / "measurements.json").write_text(json.dumps(record, indent=2))
    print(table(record))


def table(record: dict[str, Any]) -> str:
    """Markdown table of a measurements.json record."""
    lines = ["| scanner | role | short PSNR head (dB) | eff. FWHM mm (voxels) | WM CoV short | Gauss src-fit | "
             "Gauss tgt-fit | loss (dB) | No-FT (dB) | No-FT - input | drop (dB) |", "|" + "---|" * 11]
    for scanner_id, entry in record["scanners"].items():
        role = "source" if scanner_id == record["source"] else "target"
        g = entry.get("gaussian", {})

        def fmt(value: Any, digits: int = 2) -> str:
            if value is None:
                return "-"
            if isinstance(value, (list, tuple)):
                return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
            return f"{value:.{digits}f}"

        lines.append(" | ".join([
            f"| {scanner_id}", role, fmt(entry["short_psnr_masked"]),
            f"{entry['effective_fwhm_mm'][0]:.2f} ({entry['effective_fwhm_voxels']:.2f})", fmt(entry["short_wm_cov"], 3),
            fmt(g.get("fitted_on_source")), fmt(g.get("fitted_on_target")), fmt(g.get("loss_db")),
            fmt(entry.get("noft_psnr_masked")), fmt(entry.get("noft_gain_over_input_db")),
            fmt(entry.get("cross_scanner_drop_db"))]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
