"""Whole runs: the pipeline and the engine, planning, scheduling, shards, --batch (evol.pipeline, evol.engine)."""
