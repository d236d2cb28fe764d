"""What the figures stage hands a task's figures module: the task's evaluated results, already read and checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # annotations only: stages.tasks imports this module, configure among its users
    import pandas as pd
    import pyarrow as pa

    from stages.spread import Spread


@dataclass(frozen=True)
class TaskResults:
    name: str
    title: str
    metrics: Mapping[str, float]       # reports/metrics/<task>.json: each metric's mean over the seeds
    spreads: Mapping[str, Spread]      # each metric over the seeds: mean, 95 % interval of the mean, n
    seeds: Mapping[int, Mapping[str, float]]  # each seed's metrics, in seed order
    curve: pd.DataFrame                # the learning curve, the seeds' mean: epoch, train/loss, val/loss (, accuracies)
    band: pd.DataFrame                 # its band: epoch, curve, mean, low, high (empty with one seed), seeds
    plots: Mapping[str, pd.DataFrame]  # evaluate's plot CSVs (the first seed's network), by file name
    splits: Mapping[str, pa.Table]     # the processed splits the task's report asks for
