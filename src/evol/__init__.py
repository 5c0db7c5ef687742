"""evol: evolve seed instructions into a larger, harder instruction dataset (Evol-Instruct).

import evol
summary = evol.run(evol.RunConfig(seeds=Path("seeds.jsonl"), out=Path("runs/x")))
"""

from importlib import import_module
from typing import TYPE_CHECKING

from evol.version import __version__

if TYPE_CHECKING:
    from evol.config import RunConfig
    from evol.pipeline import arun, run
    from evol.rundir.manifest import RunSummary

__all__ = ["RunConfig", "RunSummary", "__version__", "arun", "run"]

# The library's entry points load on first use: `import evol.method.textstats` (or any other leaf
# module) then loads that module alone, not the pipeline and every backend behind it.
_LAZY = {
    "RunConfig": "evol.config",
    "RunSummary": "evol.rundir.manifest",
    "arun": "evol.pipeline",
    "run": "evol.pipeline",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evol' has no attribute {name!r}")
