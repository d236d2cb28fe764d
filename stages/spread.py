"""A result over seeds: its mean and 95 % interval, and whether a change is beyond the seeds' noise.

Not yet read by a stage (issue #23 wires it into evaluate, the report and the study), so it sits outside
the folders the stages list as dependencies in dvc.yaml; it moves into one with its first stage.

Pure Python and numpy, so that evaluate and the report need neither scipy nor TensorFlow: Student's t
quantile comes from a table for few degrees of freedom and from its Cornish-Fisher expansion beyond
(within 4e-6 of scipy.stats.t from 10 degrees of freedom on; tests/test_spread.py checks both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np

# Student's t, 97.5 % quantile (a two-sided 95 % interval), for 1 to 9 degrees of freedom.
T_975_FEW = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157)
Z_975 = 1.959963984540054


def t_975(degrees_of_freedom: int) -> float:
    """The 97.5 % quantile of Student's t with `degrees_of_freedom` (>= 1)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be >= 1, not {degrees_of_freedom}")
    if degrees_of_freedom <= len(T_975_FEW):
        return T_975_FEW[degrees_of_freedom - 1]
    z, df = Z_975, degrees_of_freedom
    terms = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


@dataclass(frozen=True)
class Spread:
    """n values: their mean, sample standard deviation, and the 95 % interval of the mean [low, high]
    (Student's t); with one value the deviation and interval are unknown (None)."""

    mean: float
    sd: Optional[float]
    low: Optional[float]
    high: Optional[float]
    n: int

    def excludes(self, value: float) -> bool:
        """Whether the interval lies wholly on one side of `value` (never, when unknown)."""
        return self.low is not None and (value < self.low or value > self.high)

    def covers(self, value: float) -> bool:
        return self.low is not None and self.low <= value <= self.high


def spread(values: Sequence[float]) -> Spread:
    """The mean of `values` and its 95 % interval."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"a spread needs one or more finite values, not {list(values)!r}")
    mean, n = float(array.mean()), len(array)
    if n == 1:
        return Spread(mean, None, None, None, 1)
    sd = float(array.std(ddof=1))
    half = t_975(n - 1) * sd / math.sqrt(n)
    return Spread(mean, sd, mean - half, mean + half, n)


Word = Literal["helps", "hurts", "cannot tell"]


@dataclass(frozen=True)
class Verdict:
    """A variation against its baseline, seed by seed: the differences' spread (variation - baseline) and a
    word: "helps" or "hurts" only when the interval excludes zero, else "cannot tell"."""

    difference: Spread
    word: Word

    def sentence(self) -> str:
        """The word with its numbers: `helps: +0.012 [+0.004, +0.020] over 5 seeds`."""
        d = self.difference
        if d.low is None:
            return f"cannot tell from one seed: {d.mean:+.4g}"
        numbers = f"{d.mean:+.4g} [{d.low:+.4g}, {d.high:+.4g}]"
        if self.word == "cannot tell":
            return f"cannot tell at {d.n} seeds: {numbers}"
        return f"{self.word}: {numbers} over {d.n} seeds"


def paired_verdict(variation: Sequence[float], baseline: Sequence[float], higher_is_better: bool) -> Verdict:
    """Compare a metric seed by seed: `variation[i]` and `baseline[i]` come from the same seed."""
    if len(variation) != len(baseline):
        raise ValueError(f"paired seeds: {len(variation)} values against {len(baseline)}")
    difference = spread(np.asarray(variation, dtype=np.float64) - np.asarray(baseline, dtype=np.float64))
    if not difference.excludes(0.0):
        return Verdict(difference, "cannot tell")
    better = (difference.mean > 0) == higher_is_better
    return Verdict(difference, "helps" if better else "hurts")
