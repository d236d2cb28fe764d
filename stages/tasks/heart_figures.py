"""The heart task's report section: its ROC curve and confusion matrix (the generic drawings), with
class names on the matrix and a caption of the test metrics and error counts."""

from __future__ import annotations

from stages.core.results import TaskResults
from stages.reporting.figures import confusion_counts, confusion_figure, image, roc_auc, roc_figure
from stages.reporting.page import Section, format_value, metric, percent
from stages.tasks.heart import CLASS_NAMES


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
        (image(roc_figure(roc, "Heart ROC"), "heart ROC curve"),
         image(confusion_figure(confusion, list(CLASS_NAMES), "Heart confusion matrix",
                                list(CLASS_NAMES.values())), "heart confusion matrix")))]
