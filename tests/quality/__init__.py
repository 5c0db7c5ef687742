"""Scoring, selection and contamination (evol.quality)."""
