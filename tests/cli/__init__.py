"""The commands as a user meets them: help, progress, messages, the terminal (evol.cli)."""
