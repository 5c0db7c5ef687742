"""The run directory: records, the store, the journal, run.json, and the JSONL home they append through (evol.rundir, evol.jsonl)."""
