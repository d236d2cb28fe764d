"""The heart task's report section: its ROC curve (drawn here, only this task has one) and its
confusion matrix, with a caption of the test metrics."""

from __future__ import annotations

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm

from stages.core.results import TaskResults
from stages.reporting.figures import FIT_COLOR, STYLE, confusion_counts, confusion_figure, image, new_figure
from stages.reporting.page import Section, format_value, metric, percent
from stages.tasks.heart import CLASS_NAMES


def roc_auc(roc: pd.DataFrame) -> float:
    """Area under the ROC curve (`fpr`, `tpr`), as scikit-learn computes it."""
    return float(skm.auc(roc["fpr"], roc["tpr"]))


def roc_figure(roc: pd.DataFrame, title: str = "Heart ROC") -> Figure:
    """The ROC curve (`fpr`, `tpr`) against chance, with the AUC in the title."""
    with matplotlib.rc_context(STYLE):
        fig, ax = new_figure(4.2, 4)
        ax.plot([0, 1], [0, 1], color="0.6", ls=":", label="chance")
        ax.plot(roc["fpr"], roc["tpr"], color=FIT_COLOR, lw=2, label="network")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"{title} (AUC = {roc_auc(roc):.3f})")
        ax.set_aspect("equal")
        ax.legend(loc="lower right")
    return fig


def report_sections(results: TaskResults) -> list[Section]:
    """ROC curve and confusion matrix."""
    roc, confusion, metrics = results.plots["roc.csv"], results.plots["confusion.csv"], results.metrics
    counts = confusion_counts(confusion, list(CLASS_NAMES))
    return [Section(
        "Heart disease classifier",
        f"{int(counts.values.sum())} test patients: accuracy {percent(metrics, 'test/accuracy')}, "
        f"precision {metric(metrics, 'test/precision')}, recall {metric(metrics, 'test/recall')}, "
        f"ROC AUC {format_value(roc_auc(roc))}; "
        f"{int(counts.loc[1, 0])} missed and {int(counts.loc[0, 1])} false alarms at threshold 0.5.",
        (image(roc_figure(roc), "heart ROC curve"),
         image(confusion_figure(confusion, list(CLASS_NAMES), "Heart confusion matrix",
                                list(CLASS_NAMES.values())), "heart confusion matrix")))]
