"""Classical baselines every comparison shows beside the networks (BRIEF section 3: a network that does not
beat them has not learned yet).

- :mod:`~petite.baselines.gaussian`: a Gaussian filter times one gain, both fitted on a scanner's subjects;
- :mod:`~petite.baselines.calibration`: a linear intensity calibration of another model's predictions;
- :mod:`~petite.baselines.nlm`: 3D non-local means (scikit-image), its strength fitted the same way.

Each is a small estimator: ``fit`` on raw (scan-unit) volumes and head masks of training subjects, then
``apply`` to a new scan.  They are evaluated exactly as networks are (:mod:`petite.engine.evaluate`).
"""
