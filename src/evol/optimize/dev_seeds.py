"""The development sample of `evol optimize`: --dev-size seeds drawn with --seed, written as a
seed file that every evaluation run (and the --dry-run's plan) reads."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from evol.jsonl import atomic_write, read_back
from evol.optimize.config import OUT_REMEDY, OptimizeConfig
from evol.seeds import iter_seeds, scan_seeds


def write_dev_seeds(config: OptimizeConfig, path: Path) -> Path:
    """Write the development sample (`dev_sample`) as a seed file at `path`."""
    return write_if_changed(path, dev_sample(config))


def dev_sample(config: OptimizeConfig) -> bytes:
    """The development sample as a seed file's bytes: --dev-size seeds drawn with --seed (all
    of them when there are fewer), in seed-file order. A seed file with no seed is refused in
    its own name (the sample would be empty)."""
    seeds = list(iter_seeds(config.seeds, config.seed_options))
    if not seeds:
        scan_seeds(config.seeds, config.seed_options)  # raises the seed file's own error
    chosen = range(len(seeds))
    if len(seeds) > config.dev_size:
        rng = random.Random(f"{config.seed}\0dev")
        chosen = sorted(rng.sample(range(len(seeds)), config.dev_size))
    return b"".join(
        orjson.dumps(
            {"id": seeds[i].id, "instruction": seeds[i].instruction}
            | ({"input": seeds[i].input} if seeds[i].input.strip() else {})
        )
        + b"\n"
        for i in chosen
    )


def write_if_changed(path: Path, lines: bytes) -> Path:
    """Write `lines` to `path` unless it holds them already (a rerun leaves it untouched)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_back(path, remedy=OUT_REMEDY) != lines:
        atomic_write(path, lines)
    return path
