"""The toolkit a task module's `report_sections` draws with, passed in by the report stage.

Passed in rather than imported so that task modules, which every stage of their task imports,
depend on no plotting code: a change of a figure's style reruns the report, not the training.
"""

from __future__ import annotations

from typing import Mapping

from stages.reporting.figures import (confusion_counts, confusion_figure, digit_grid_figure, extrapolation_figure,
                                      fit_figure, image, learning_curve_figure, misprediction_figure,
                                      misprediction_title, mispredicted, roc_auc, roc_figure, synthetic_data_figure)
from stages.reporting.page import Image, Section, format_value

__all__ = ["Image", "Section", "confusion_counts", "confusion_figure", "digit_grid_figure", "extrapolation_figure",
           "fit_figure", "format_value", "image", "learning_curve_figure", "metric", "misprediction_figure",
           "misprediction_title", "mispredicted", "percent", "roc_auc", "roc_figure", "synthetic_data_figure"]


def metric(metrics: Mapping[str, float], key: str) -> str:
    """A metric to 4 significant digits, or `n/a` when the task did not write it."""
    return format_value(metrics[key]) if key in metrics else "n/a"


def percent(metrics: Mapping[str, float], key: str) -> str:
    return f"{100 * float(metrics[key]):.2f} %" if key in metrics else "n/a"
