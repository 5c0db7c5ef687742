"""evol: evolve seed instructions into a larger, harder instruction dataset (Evol-Instruct).

import evol
summary = evol.run(evol.RunConfig(seeds=Path("seeds.jsonl"), out=Path("runs/x")))
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evol")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

from evol.config import RunConfig  # noqa: E402
from evol.manifest import RunSummary  # noqa: E402
from evol.pipeline import arun, run  # noqa: E402

__all__ = ["RunConfig", "RunSummary", "__version__", "arun", "run"]
