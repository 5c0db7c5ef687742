"""Is a candidate method's failure rate lower than the current one's by more than the noise?

Both methods evolve the same development seeds with the same `--seed`, so each seed draws the
same operations under both: the per-seed differences (candidate minus current) are paired,
and their mean gets a Student-t interval. With m candidates tested in one step, each interval
is widened Bonferroni's way (level 1 - (1 - confidence) / m); a candidate is accepted only when
the interval's upper end is below 0, i.e. its failure rate is lower with that confidence.
"""

from __future__ import annotations

import math

from pydantic import BaseModel


class Interval(BaseModel):
    """The paired difference in failure rate (candidate minus current) and its interval."""

    mean: float
    low: float
    high: float
    pairs: int
    level: float  # the one-sided level of `high`, after the Bonferroni correction

    @property
    def lower_for_sure(self) -> bool:
        """The candidate fails less than the current method, beyond the sampling noise."""
        return self.high < 0


def paired_interval(
    current: dict[str, float], candidate: dict[str, float], *, confidence: float, tests: int
) -> Interval | None:
    """The interval of the mean of `candidate[s] - current[s]` over the seeds both have
    (None when fewer than 2 are shared), at `confidence` corrected for `tests` comparisons."""
    shared = sorted(current.keys() & candidate.keys())
    if len(shared) < 2:  # one pair says nothing about the noise
        return None
    differences = [candidate[seed] - current[seed] for seed in shared]
    count = len(differences)
    mean = math.fsum(differences) / count
    level = 1 - (1 - confidence) / max(1, tests)
    variance = math.fsum((d - mean) ** 2 for d in differences) / (count - 1)
    half = t_quantile(level, count - 1) * math.sqrt(variance / count)
    return Interval(mean=mean, low=mean - half, high=mean + half, pairs=count, level=level)


def t_quantile(level: float, freedom: int) -> float:
    """Student's t quantile at `level` (0.5 < level < 1) with `freedom` degrees of freedom,
    found by bisection on the exact distribution function below."""
    low, high = 0.0, 1.0
    while t_cdf(high, freedom) < level:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, freedom) < level:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


def t_cdf(value: float, freedom: int) -> float:
    """P(T <= value) for Student's t with a whole number of degrees of freedom: the finite
    series of Abramowitz and Stegun 26.7.3 and 26.7.4 in theta = atan(value / sqrt(freedom))."""
    theta = math.atan(value / math.sqrt(freedom))
    sine, cosine2 = math.sin(theta), math.cos(theta) ** 2
    if freedom % 2:  # odd
        term, series = 1.0, 0.0
        if freedom > 1:
            series = term = math.cos(theta)
            for k in range(2, freedom - 1, 2):
                term *= cosine2 * k / (k + 1)
                series += term
        within = 2 / math.pi * (theta + sine * series)
    else:
        term = series = 1.0
        for k in range(1, freedom - 2, 2):
            term *= cosine2 * k / (k + 1)
            series += term
        within = sine * series
    return (1 + within) / 2
