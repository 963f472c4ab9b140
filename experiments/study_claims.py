"""Check the paper's claims against a finished study folder (the numbers quoted in docs/RESULTS.md).

    python experiments/study_claims.py study-runs/cpu-study

Reads only run folders (config.yaml labels, test_metrics.json), as `petite report` does.
For every claim it prints the numbers it rests on and a verdict.  PSNR values
are per-subject means over the seeds a method has; paired tests are Wilcoxon
signed-rank over test subjects (two-sided).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import wilcoxon


def load(study: Path) -> dict[tuple[str, str, bool], dict[str, dict[int, float]]]:
    """(pair, method, bitfit) -> subject -> seed -> PSNR; also percent trainable per key."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    percent: dict = {}
    for final in sorted(study.glob("runs/**/final.json")):
        run = final.parent
        labels = yaml.safe_load((run / "config.yaml").read_text())["extra"]
        key = (labels["pair"], labels["method"], bool(labels["bitfit"]))
        percent[key] = json.loads(final.read_text())["percent"]
        for row in json.loads((run / "test_metrics.json").read_text())["subjects"]:
            table[key][row["subject"]][labels["seed"]] = row["psnr"]
    return table, percent


def subject_means(values: dict[str, dict[int, float]]) -> dict[str, float]:
    return {subject: float(np.mean(list(seeds.values()))) for subject, seeds in values.items()}


def compare(a: dict, b: dict) -> tuple[float, float | None]:
    """Mean PSNR difference a - b over shared subjects and the Wilcoxon p-value."""
    sa, sb = subject_means(a), subject_means(b)
    shared = sorted(set(sa) & set(sb))
    diff = np.array([sa[s] - sb[s] for s in shared])
    p = float(wilcoxon(diff).pvalue) if len(diff) >= 2 and np.any(diff) else None
    return float(diff.mean()), p


def fmt(delta: float, p: float | None) -> str:
    return f"{delta:+.2f} dB (p={p:.3f})" if p is not None else f"{delta:+.2f} dB"


def main(study: Path) -> None:
    table, percent = load(study)
    pairs = sorted({k[0] for k in table})
    peft = [k for k in table if k[1] != "No-FT" and not k[1].startswith("Full-FT")]

    print("Claim 1: No-FT < PEFT <= Full-FT (PSNR, per pair and PEFT method)")
    above_noft = below_full = total = 0
    for pair in pairs:
        noft, full = table.get((pair, "No-FT", False)), table.get((pair, "Full-FT", False))
        if not noft or not full:
            continue
        print(f"  {pair}: Full-FT - No-FT = {fmt(*compare(full, noft))}")
        for key in sorted(k for k in peft if k[0] == pair):
            d_no, p_no = compare(table[key], noft)
            d_full, p_full = compare(table[key], full)
            total += 1
            above_noft += d_no > 0
            below_full += d_full <= 0
            name = key[1] + (" +BitFit" if key[2] and key[1] not in ("BitFit", "PETITE") and "+" not in key[1] else "")
            print(f"    {name:22s} {percent[key]:6.2f} %  vs No-FT {fmt(d_no, p_no):24s} vs Full-FT {fmt(d_full, p_full)}")
    print(f"  PEFT above No-FT in {above_noft}/{total} (pair, method) cases; at or below Full-FT in {below_full}/{total}")

    print("\nClaim 2: PETITE within a few tenths of a dB of Full-FT at < 1 % of the parameters")
    for pair in pairs:
        key = (pair, "PETITE", True)
        if key in table and (pair, "Full-FT", False) in table:
            d, p = compare(table[key], table[(pair, "Full-FT", False)])
            print(f"  {pair}: PETITE - Full-FT = {fmt(d, p)} at {percent[key]:.2f} % trainable")

    print("\nFull-FT at the paper's learning rate (1e-3) vs 10x lower (1e-4)")
    for pair in pairs:
        low, full = table.get((pair, "Full-FT lr 1e-4", False)), table.get((pair, "Full-FT", False))
        if low and full:
            print(f"  {pair}: lr 1e-4 - lr 1e-3 = {fmt(*compare(low, full))}; "
                  f"lr 1e-4 - No-FT = {fmt(*compare(low, table[(pair, 'No-FT', False)]))}")

    print("\nClaim 3: BitFit helps every method (same method with vs without BitFit)")
    for pair in pairs:
        for key in sorted(k for k in peft if k[0] == pair and k[2] and k[1] not in ("BitFit", "PETITE")
                          and " + " not in k[1]):
            without = (pair, key[1], False)
            if without in table:
                print(f"  {pair} {key[1]:8s}: with - without BitFit = {fmt(*compare(table[key], table[without]))}")

    print("\nClaim 4: the best encoder/decoder mix (paper: UNETR LoRA + SSF, CVT-GAN VPT + LoRA)")
    for pair in pairs:
        mixes = sorted(((np.mean(list(subject_means(v).values())), k[1]) for k, v in table.items()
                        if k[0] == pair and " + " in k[1]), reverse=True)
        if mixes:
            ranking = ", ".join(f"{name} {psnr:.2f}" for psnr, name in mixes)
            print(f"  {pair}: {ranking}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "study-runs/cpu-study"))
