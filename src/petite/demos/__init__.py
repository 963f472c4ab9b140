"""End-to-end demos: ``petite demo`` (PET across scanners, :mod:`petite.demos.pet`) and ``petite mm demo``
(PEMMA on synthetic head-and-neck CT/PET, :mod:`petite.demos.headneck`)."""
