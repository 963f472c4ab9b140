"""Survival prognosis from the segmentation-adapted CT/PET encoder, optionally fused with clinical data.

PEMMA's second task (BRIEF section 7), one job per module:

- :mod:`~petite.prognosis.features`: per-patient features from a trained segmenter's frozen encoder;
- :mod:`~petite.prognosis.outcome`: the relapse-free survival outcome ``(time, event)``, validated;
- :mod:`~petite.prognosis.cox`: the Cox partial-likelihood loss and Breslow's baseline hazard;
- :mod:`~petite.prognosis.survival_head`: the small risk network and its full-batch training;
- :mod:`~petite.prognosis.heads`: trained heads (one per seed) with their input preparation;
- :mod:`~petite.prognosis.estimator`: the same as a scikit-survival-style estimator (``fit``/``predict``/``score``);
- :mod:`~petite.prognosis.metrics`: C-index, Brier score and IBS, Kaplan-Meier, log-rank;
- :mod:`~petite.prognosis.plots`: the Kaplan-Meier figure of predicted risk groups;
- :mod:`~petite.prognosis.evaluation`: every measure of trained heads on new patients;
- :mod:`~petite.prognosis.runs`: prognosis run folders (heads saved and reloaded);
- :mod:`~petite.prognosis.crossval`: stratified folds and repeated cross-validation;
- :mod:`~petite.prognosis.comparison`: the demo's CT / CT+PET / CT+PET+clinical comparison.

Builds on :mod:`petite.headneck` and :mod:`petite.pemma`.
"""
