"""`evol optimize`: a loop of ordinary runs (evol.optimize)."""
