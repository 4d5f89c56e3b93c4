"""Studies: plan trials from a study file, run them (locally or on Dask), summarise, report."""
