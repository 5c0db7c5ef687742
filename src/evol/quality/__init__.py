"""`evol score` and `evol select`: scorers, metrics, contamination, selection."""
