"""PEMMA: a CT-only segmentation transformer upgraded to CT+PET, its baselines, training, evaluation and runs.

- :mod:`~petite.pemma.segmentation`: 3-class tumour segmenters and how each model takes CT/PET;
- :mod:`~petite.pemma.upgrade`: the PEMMA model (LoRA/DoRA + PET parts around a frozen CT backbone);
- :mod:`~petite.pemma.baselines`: CT-only, PET-only, early and late fusion;
- :mod:`~petite.pemma.evaluate`: whole-volume Dice and HD95;
- :mod:`~petite.pemma.train`: the seeded training loop;
- :mod:`~petite.pemma.runs`: run folders (save and reload every kind exactly);
- :mod:`~petite.pemma.pipeline`: the steps behind ``petite mm`` (pretrain, adapt, continue, late, evaluate).

Builds on :mod:`petite.headneck` (data); :mod:`petite.prognosis` builds on this package.
"""
