"""The six mutations of Evol-Instruct and the reproducible choice of one per evolution.

Five in-depth operations make an instruction harder; `breadth` writes a new instruction in the
same domain. The choice is a pure function of (run seed, the id of the instruction being
evolved, the round), so a rerun or a resumed run picks exactly the same operation.
"""

from __future__ import annotations

import math
import random

from evol.errors import UsageError

# Five in-depth operations, then breadth; each has a template of the same name (prompts/).
OPERATIONS = (
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "complicate_input",
    "breadth",
)
BREADTH = "breadth"


def parse_weights(spec: str | None) -> dict[str, float]:
    """Parse `add_constraints=2,breadth=1` (or `deepen,concretize`, weight 1) into weights.

    No spec means every operation with weight 1; a spec names the subset to use.
    """
    if not spec or not spec.strip():
        return {name: 1.0 for name in OPERATIONS}
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight_text = part.strip().partition("=")
        name = name.strip()
        if name not in OPERATIONS:
            raise UsageError(
                f"--operations: unknown operation {name!r}; known: {', '.join(OPERATIONS)}"
            )
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise UsageError(
                f"--operations: weight of {name} must be a number, got {weight_text!r}"
            ) from None
        if weight < 0 or not math.isfinite(weight):
            raise UsageError(f"--operations: weight of {name} must be a finite number >= 0")
        weights[name] = weight
    if not any(weights.values()):
        raise UsageError("--operations: at least one operation needs a weight above 0")
    return {name: weight for name, weight in weights.items() if weight > 0}


def choose_operation(weights: dict[str, float], run_seed: int, item_id: str, round_: int) -> str:
    """Pick the operation that evolves `item_id` in `round_`; same inputs, same answer."""
    # random.Random seeds a str through sha512, so this is stable across processes and platforms.
    rng = random.Random(f"{run_seed}\0{item_id}\0{round_}")
    names = sorted(weights)
    return rng.choices(names, weights=[weights[name] for name in names])[0]
