"""Self-contained HTML pages: titled sections of embedded images, captions and tables.

No plotting here (figures come in as base64 PNGs), so the study report and the lab report share
one page layout without either loading matplotlib twice.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Image:
    png_base64: str
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A titled part of a page: a one-line caption, embedded images, then optional trusted HTML."""

    title: str
    caption: str = ""
    images: tuple[Image, ...] = ()
    html: str = ""


def text_html(text: str) -> str:
    """Plain text as HTML, with `code` spans (the captions' commands) set as <code>, not shown as backticks."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1240px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
p.caption, figcaption { color: #444; } figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
img { max-width: 100%; } nav ol { columns: 2; } code { background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; } td.value { text-align: right; } th { background: #f3f3f3; }
""".strip()


def html_page(title: str, sections: Sequence[Section], intro: str = "") -> str:
    """One self-contained HTML page: inline CSS, images as data URIs, no scripts or links out."""
    escape = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{escape(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
             f"<h1>{escape(title)}</h1>"]
    if intro:
        parts.append(f'<p class="intro">{text_html(intro)}</p>')
    parts.append("<nav><ol>" + "".join(f'<li><a href="#{_anchor(s.title)}">{escape(s.title)}</a></li>'
                                       for s in sections) + "</ol></nav>")
    for section in sections:
        parts.append(f'<section id="{_anchor(section.title)}">')
        parts.append(f"<h2>{escape(section.title)}</h2>")
        if section.caption:
            parts.append(f'<p class="caption">{text_html(section.caption)}</p>')
        for image in section.images:
            figcaption = f"<figcaption>{text_html(image.caption)}</figcaption>" if image.caption else ""
            parts.append(f'<figure><img src="data:image/png;base64,{image.png_base64}" '
                         f'alt="{escape(image.alt)}">{figcaption}</figure>')
        if section.html:
            parts.append(section.html)
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def format_value(value: float | int) -> str:
    """Integers as they are, floats to 4 significant digits."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    return f"{value:#.4g}" if math.isfinite(value) else str(value)


def metric(metrics: Mapping[str, float], key: str) -> str:
    """A metric to 4 significant digits, or `n/a` when the task did not write it."""
    return format_value(metrics[key]) if key in metrics else "n/a"


def percent(metrics: Mapping[str, float], key: str) -> str:
    """A share as a percentage to 2 decimals, or `n/a` when the task did not write it."""
    return f"{100 * float(metrics[key]):.2f} %" if key in metrics else "n/a"


# Table order: test results first, then the synthetic grid's, then the last epoch's.
_SPLITS = {"test": "Test", "domain": "On-domain", "ood": "Out-of-domain", "train": "Train", "val": "Validation"}
_WORDS = {"mse": "MSE", "roc": "ROC", "auc": "AUC", "f1": "F1", "vs": "vs"}


def readable_metric_name(key: str) -> str:
    """`test/accuracy_digit_3` -> `Test accuracy (digit 3)`, `ood/mse_vs_truth` -> `Out-of-domain MSE vs truth`."""
    split, _, name = key.rpartition("/")
    name, digit = re.subn(r"_digit_(\d+)$", r" (digit \1)", name)
    words = " ".join(_WORDS.get(word, word) for word in name.split("_"))
    prefix = _SPLITS.get(split, split.replace("_", " ").capitalize()) if split else ""
    return f"{prefix} {words}".strip()


def metrics_table_html(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """One row per metric name, one column per task (keyed by its title); a dash where a task lacks the metric."""
    names = list(dict.fromkeys(key for values in metrics.values() for key in values))
    order = list(_SPLITS)
    names.sort(key=lambda key: (order.index(key.split("/")[0]) if key.split("/")[0] in order else len(order),
                                "_digit_" in key, key))
    header = "".join(f"<th>{html.escape(title)}</th>" for title in metrics)
    rows = []
    for name in names:
        cells = "".join(f'<td class="value">{format_value(values[name]) if name in values else "–"}</td>'
                        for values in metrics.values())
        rows.append(f'<tr><th scope="row" title="{html.escape(name)}">{html.escape(readable_metric_name(name))}'
                    f"</th>{cells}</tr>")
    return (f'<table class="metrics"><thead><tr><th>Metric</th>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")
