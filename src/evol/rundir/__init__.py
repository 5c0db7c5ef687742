"""The run directory: the record types, the record files, the call journal, run.json (its
format, its fingerprint, its counts) and where each lineage stands on resume."""
