"""A result over seeds: its mean and 95 % interval, and whether a change is beyond the seeds' noise.

Read by train (the learning curves over seeds), evaluate (each metric over seeds) and the report and
study; a module of its own, so that a stage lists it in dvc.yaml only when it reads it.

Pure Python, numpy and pandas, so that evaluate and the report need neither scipy nor TensorFlow: Student's t
quantile comes from a table for few degrees of freedom and from its Cornish-Fisher expansion beyond
(within 4e-6 of scipy.stats.t from 10 degrees of freedom on; tests/test_spread.py checks both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

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


# --- learning curves over seeds: {seed: curve}, each curve one row per epoch run (epoch, then its values) ---

def seed_curves(curves: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Every seed's curve in one table: seed, epoch, then the curves' values."""
    return pd.concat([curve.assign(seed=seed) for seed, curve in curves.items()], ignore_index=True)[
        ["seed", *next(iter(curves.values())).columns]]


def mean_curve(curves: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Each epoch's mean over the seeds that ran it (with early stopping, seeds stop at different epochs);
    with one seed, its curve."""
    if len(curves) == 1:
        return next(iter(curves.values()))
    return seed_curves(curves).drop(columns="seed").groupby("epoch", sort=True).mean().reset_index()


def curve_band(curves: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per epoch and curve: its mean over the seeds that ran the epoch, the 95 % interval of that
    mean (empty with one seed) and how many seeds ran it; what the report and `dvc plots` draw as a band."""
    table = seed_curves(curves)
    rows = []
    for name in (column for column in table.columns if column not in ("seed", "epoch")):
        for epoch, values in table.groupby("epoch", sort=True)[name]:
            over_seeds = spread(values.to_numpy())
            rows.append((epoch, name, over_seeds.mean, over_seeds.low, over_seeds.high, over_seeds.n))
    return pd.DataFrame(rows, columns=["epoch", "curve", "mean", "low", "high", "seeds"])


# --- metrics over seeds: evaluate's metrics file, {"mean": …, "spread": …, "seeds": {seed: …}} ---

def metrics_over_seeds(per_seed: Mapping[int, Mapping[str, float]]) -> dict:
    """Evaluate's metrics document: each metric's mean over the seeds, its spread (sd, 95 % interval of the
    mean, n; null where one seed leaves them unknown) and every seed's value."""
    names = list(next(iter(per_seed.values())))
    spreads = {name: spread([values[name] for values in per_seed.values()]) for name in names}
    return {"mean": {name: over.mean for name, over in spreads.items()},
            "spread": {name: {"sd": over.sd, "low": over.low, "high": over.high, "n": over.n}
                       for name, over in spreads.items()},
            "seeds": {str(seed): dict(values) for seed, values in per_seed.items()}}

