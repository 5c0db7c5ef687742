"""Drawing a verifiable constraint: its kwargs from evol's own schema with an injected
`random.Random` (reproducible from --seed, the record and the generation), never one that
contradicts what the lineage carries or that no answer meets; and its wording."""

from __future__ import annotations

import random
from collections.abc import Iterable

from evol.errors import UsageError
from evol.method.constraints import KWARGS_SCHEMA, Constraint, checker_for
from evol.method.contradictions import contradicts, counts_of, limits_clash
from evol.method.ifeval_library import conflict_table


def language_name(code: str) -> str:
    """IFEval's name of a language code ("mr" -> "Marathi"), as its description writes it."""
    from if_verifiable.ifeval import instructions_util

    return str(instructions_util.LANGUAGE_CODES[code])


def parse_ids(spec: str | None) -> list[str] | None:
    """`--constraint-ids a,b` as the ids it names (None, for no value or a blank one: every
    id evol draws); an id evol does not draw is refused, naming those it does, and so is a
    value that names none (",")."""
    if spec is None or not spec.strip():
        return None
    ids = list(dict.fromkeys(part.strip() for part in spec.split(",") if part.strip()))
    if not ids:  # "," names no id: an empty pool would eliminate every evolution
        raise UsageError(
            f"--constraint-ids {spec!r} names no id: give ids separated by commas, "
            "or leave it out to draw from every id"
        )
    for instruction_id in ids:
        if instruction_id not in KWARGS_SCHEMA:
            raise UsageError(
                f"--constraint-ids: unknown id {instruction_id!r}; known: "
                f"{', '.join(sorted(KWARGS_SCHEMA))}"
            )
    return sorted(ids)


def pick(
    rng: random.Random, carried: Iterable[Constraint], ids: Iterable[str] | None = None
) -> Constraint | None:
    """A constraint drawn by `rng` from `ids` (None: every id evol draws) that contradicts
    none of `carried`; None when every id conflicts with one of them. The same `rng` state,
    `carried` and `ids` give the same constraint."""
    carried = list(carried)
    table = conflict_table()
    pool = sorted(KWARGS_SCHEMA if ids is None else set(ids))
    open_ids = [i for i in pool if not any(c.id in table[i] for c in carried)]
    rng.shuffle(open_ids)
    for instruction_id in open_ids:
        candidate = Constraint(id=instruction_id, kwargs=KWARGS_SCHEMA[instruction_id](rng))
        if _never_met(candidate):
            continue
        if any(contradicts(candidate, other) for other in carried):
            continue
        if not limits_clash([*carried, candidate]):  # what the lineage requires, together
            return candidate
    return None


# The fewest of a thing a non-blank answer has: punkt finds a sentence in any of them.
LEAST_POSSIBLE: dict[tuple[str, str], int] = {("sentences", ""): 1}


def _never_met(c: Constraint) -> bool:
    """Whether no answer meets `c` alone (number_sentences "less than 1")."""
    return any(high < LEAST_POSSIBLE.get(counted, 0) for counted, (_, high) in counts_of(c).items())


def describe(constraint: Constraint) -> str:
    """IFEval's own phrasing of `constraint` ("Answer with less than 168 words.")."""
    return checker_for(constraint).build_description(**constraint.kwargs)
