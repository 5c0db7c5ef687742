"""Seed files: formats, shapes, limits (evol.seeds)."""
