"""Is a candidate method's failure rate lower than the current one's by more than the noise?

Both methods evolve the same development seeds with the same `--seed`, so each seed draws the
same operations under both and the outcomes pair up seed by seed. The outcomes are binary (an
evolution kept or eliminated), and a few dozen pairs are usual: a normal or Student-t interval
is wrong there (two seeds that both fail before and pass after have no spread at all, and give
a zero-width interval). So the test is exact, McNemar's conditional one: only the discordant
seeds say anything, b that improved and c that worsened (n_d = b + c); given n_d, c is
binomial(n_d, p), and the difference in failure rates (candidate minus current) is
(n_d / n) * (2p - 1). A one-sided Clopper-Pearson upper bound on p at level alpha / m
(Bonferroni over the step's m candidates) bounds the difference; a candidate is accepted only
when that bound is below 0. The interval reported is two-sided at the same corrected level.

With `--rounds` above 1 a seed's outcome is its share of eliminated evolutions; a seed then
counts as improved or worsened by the sign of its difference (the sign test, still exact), and
the bound is on the share of seeds that worsened minus the share that improved.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from pydantic import BaseModel


class Interval(BaseModel):
    """The paired difference in failure rate (candidate minus current) and its interval."""

    mean: float
    low: float  # the two-sided interval at `level`
    high: float
    pairs: int
    improved: int  # seeds whose failure rate went down (b)
    worsened: int  # seeds whose failure rate went up (c)
    bound: float  # the one-sided upper bound at `level`: accepted when below 0
    level: float  # the confidence after the Bonferroni correction, 1 - alpha / m

    @property
    def lower_for_sure(self) -> bool:
        """The candidate fails less than the current method, beyond the sampling noise."""
        return self.bound < 0


def paired_interval(
    current: dict[str, float], candidate: dict[str, float], *, confidence: float, tests: int
) -> Interval | None:
    """The exact interval of the difference `candidate - current` over the seeds both have
    (None when none is shared), at `confidence` corrected for `tests` comparisons."""
    shared = sorted(current.keys() & candidate.keys())
    if not shared:
        return None
    differences = [candidate[seed] - current[seed] for seed in shared]
    pairs = len(differences)
    improved = sum(1 for d in differences if d < 0)
    worsened = sum(1 for d in differences if d > 0)
    discordant = improved + worsened
    alpha = (1 - confidence) / max(1, tests)

    def difference(p: float) -> float:  # the difference in rates when P(worsened) = p
        return discordant / pairs * (2 * p - 1)

    low_p, high_p = clopper_pearson(worsened, discordant, alpha)
    return Interval(
        mean=math.fsum(differences) / pairs,
        low=difference(low_p),
        high=difference(high_p),
        pairs=pairs,
        improved=improved,
        worsened=worsened,
        bound=difference(upper_bound(worsened, discordant, alpha)),
        level=1 - alpha,
    )


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """The two-sided Clopper-Pearson interval of a binomial proportion at level 1 - alpha
    ((0, 1) for no trial: nothing is known)."""
    return lower_bound(successes, trials, alpha / 2), upper_bound(successes, trials, alpha / 2)


def upper_bound(successes: int, trials: int, alpha: float) -> float:
    """The one-sided Clopper-Pearson upper bound at level 1 - alpha: the p at which seeing
    `successes` or fewer has probability alpha."""
    if successes >= trials:
        return 1.0
    return _bisect(lambda p: binomial_cdf(successes, trials, p) > alpha)


def lower_bound(successes: int, trials: int, alpha: float) -> float:
    """The one-sided Clopper-Pearson lower bound at level 1 - alpha: the p at which seeing
    `successes` or more has probability alpha."""
    if successes <= 0:
        return 0.0
    return _bisect(lambda p: 1 - binomial_cdf(successes - 1, trials, p) < alpha)


def _bisect(below: Callable[[float], bool]) -> float:
    """The p in [0, 1] where `below(p)` turns from true to false (it must do so once)."""
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if below(middle):
            low = middle
        else:
            high = middle
        if high - low < 1e-15:
            break
    return (low + high) / 2


def binomial_cdf(successes: int, trials: int, p: float) -> float:
    """P(X <= successes) for X binomial(trials, p), summed exactly in log space."""
    if successes < 0:
        return 0.0
    if successes >= trials or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(trials + 1)
    terms = [
        math.exp(
            log_n
            - math.lgamma(k + 1)
            - math.lgamma(trials - k + 1)
            + k * log_p
            + (trials - k) * log_q
        )
        for k in range(successes + 1)
    ]
    return min(1.0, math.fsum(terms))
