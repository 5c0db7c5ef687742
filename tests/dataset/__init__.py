"""What is done with a finished run: stats, report, export, show, merge, verify (evol.dataset)."""
