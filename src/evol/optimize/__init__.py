"""`evol optimize`: Auto Evol-Instruct, the evolving method tuned on a development sample by
an optimizer model, each candidate judged by an ordinary run."""
