"""Cross-scanner studies: the plan (a study file expanded into jobs) and the sweep that runs them."""
