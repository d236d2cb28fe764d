"""One task's part of the lab page as a file: what `figures@<task>` draws and `report` assembles.

JSON with the PNGs base64-encoded, as the page embeds them: the same figures give the same bytes,
so a task whose results did not change leaves its file, and DVC the page's other parts, alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import StageError
from stages.reporting.page import Image, Section


@dataclass(frozen=True)
class TaskFigures:
    name: str
    title: str                   # the task's TITLE: its column in the metrics table
    lab_part: int                # the page shows the tasks in this order
    headline_metric: str         # the metric the page's intro quotes
    learning_curve: Image        # its figure in the page's "Learning curves" section
    sections: tuple[Section, ...]


def fragment_bytes(figures: TaskFigures) -> bytes:
    return (json.dumps(dataclasses.asdict(figures), indent=1) + "\n").encode()


def _image(data: dict) -> Image:
    return Image(**data)


def read_fragment(path: Path) -> TaskFigures:
    """A task's figures file, checked; missing or not what `figures@<task>` writes: one StageError naming it."""
    try:
        data = json.loads(path.read_bytes())
        return TaskFigures(**{**data, "learning_curve": _image(data["learning_curve"]),
                              "sections": tuple(Section(**{**section, "images": tuple(map(_image, section["images"]))})
                                                for section in data["sections"])})
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        raise StageError(f"{path} is not a task's figures file; run `dvc repro` to rebuild it") from None
