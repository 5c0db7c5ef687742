"""evol's version, in a module of its own so that reading it imports nothing else of evol."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("evol")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
