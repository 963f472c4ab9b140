"""Head-and-neck CT/PET data: synthetic patients, HECKTOR import, clinical tables, the ``petite-mm/1`` datalist.

- :mod:`~petite.headneck.centres`: the simulated acquisition centres and grid sizes;
- :mod:`~petite.headneck.patient`: one synthetic patient (anatomy, lesions, clinical record, volumes);
- :mod:`~petite.headneck.lesions`: the tumour parameters both generator profiles draw;
- :mod:`~petite.headneck.realism`: the opt-in ``hecktor`` generator profile (tumour burden, low uptake,
  physiological PET uptake, mass effect, CT contrast);
- :mod:`~petite.headneck.cohort_stats`: statistics of a synthetic cohort from its datalist's facts;
- :mod:`~petite.headneck.synthetic`: a synthetic cohort written to disk with its datalist;
- :mod:`~petite.headneck.hecktor`: a HECKTOR-style folder checked and turned into a datalist;
- :mod:`~petite.headneck.clinical`: clinical variables, the survival model, the clinical CSV, imputation;
- :mod:`~petite.headneck.datalist`: the datalist format, splits, case loading and training crops.

This package imports nothing from :mod:`petite.pemma` or :mod:`petite.prognosis`; they build on it.
"""
