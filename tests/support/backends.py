"""Backends registered for a while: a test or a fixture leaves evol's backend registry as it
found it, so `--backend NAME` never names a backend another test registered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from evol.llm import BackendFactory, register_backend, registered_backends, unregister_backend


@contextmanager
def restored_registry() -> Iterator[None]:
    """Whatever is registered inside is gone after, and what was there before is back."""
    saved = registered_backends()
    try:
        yield
    finally:
        for name in registered_backends():
            unregister_backend(name)
        for name, factory in saved.items():
            register_backend(name, factory)


@contextmanager
def registered_backend(name: str, factory: BackendFactory) -> Iterator[None]:
    """`--backend name` runs `factory` inside the block, and nothing registered outlives it."""
    with restored_registry():
        register_backend(name, factory)
        yield
