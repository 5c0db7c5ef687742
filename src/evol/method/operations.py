"""The six mutations of Evol-Instruct and the reproducible choice of one per evolution.

Five in-depth operations make an instruction harder; `breadth` writes a new instruction in the
same domain. The choice is a pure function of (run seed, the id of the instruction being
evolved, the round), so a rerun or a resumed run picks exactly the same operation.

A seventh, `add_verifiable_constraint` (issue #26), adds a constraint that code can check
(`evol.method.constraints`); it is used only when named (`--operations`, `--verifiable`), so a run
that does not ask for it evolves exactly as before.
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
# Named only, never in the default mix: it needs the `verify` extra, and a run made before it
# existed must choose as it did.
VERIFIABLE = "add_verifiable_constraint"
KNOWN_OPERATIONS = (*OPERATIONS, VERIFIABLE)


def parse_weights(spec: str | None, *, verifiable: bool = False) -> dict[str, float]:
    """Parse `add_constraints=2,breadth=1` (or `deepen,concretize`, weight 1) into weights.

    No spec means every operation of the paper with weight 1; a spec names the subset to use.
    `verifiable` (--verifiable) means add_verifiable_constraint alone, and takes no spec.
    """
    if verifiable:
        if spec and spec.strip():
            raise UsageError(
                f"--verifiable evolves with {VERIFIABLE} alone: drop --operations, or name "
                f"{VERIFIABLE}=WEIGHT among the --operations instead"
            )
        return {VERIFIABLE: 1.0}
    if not spec or not spec.strip():
        return {name: 1.0 for name in OPERATIONS}
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight_text = part.strip().partition("=")
        name = name.strip()
        if name not in KNOWN_OPERATIONS:
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


def choice_rng(run_seed: int, item_id: str, step: int, purpose: str = "") -> random.Random:
    """The random stream of one choice: the same (run seed, item id, step, purpose), the same
    draws, in any process. `purpose` keeps two choices of one step apart ("" is the
    operation's, as it always was)."""
    # random.Random seeds a str through sha512, so this is stable across processes and platforms.
    suffix = f"\0{purpose}" if purpose else ""
    return random.Random(f"{run_seed}\0{item_id}\0{step}{suffix}")


def choose_operation(weights: dict[str, float], run_seed: int, item_id: str, round_: int) -> str:
    """Pick the operation that evolves `item_id` in `round_`; same inputs, same answer."""
    rng = choice_rng(run_seed, item_id, round_)
    names = sorted(weights)
    return rng.choices(names, weights=[weights[name] for name in names])[0]
