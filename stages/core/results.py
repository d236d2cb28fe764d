"""What the figures stage hands a task's figures module: the task's evaluated results, already read and checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # annotations only: stages.tasks imports this module, configure among its users
    import pandas as pd
    import pyarrow as pa


@dataclass(frozen=True)
class TaskResults:
    name: str
    title: str
    metrics: Mapping[str, float]       # reports/metrics/<task>.json
    curve: pd.DataFrame                # the learning curve: epoch, train/loss, val/loss (, accuracies)
    plots: Mapping[str, pd.DataFrame]  # evaluate's plot CSVs, by file name
    splits: Mapping[str, pa.Table]     # the processed splits the task's report asks for
