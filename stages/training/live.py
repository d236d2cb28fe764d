"""Step-wise training metrics for DVC: dvclive's `Live`, one step per epoch.

The compiled engine hands over the epochs each call ran (about PROGRESS_INTERVAL_S of them), the
fit engine one epoch at a time. Each hand-over is one write of each metric's history
(`<dir>/plots/metrics/<name>.tsv`) and of the epoch reached (`<dir>/metrics.json`, the file
dvc.yaml declares as the train stage's metrics, so `dvc exp show` reads it while an experiment
runs), not one per epoch: 2000 epochs stay cheap. metrics.json holds that one value, named after
the task (`heart/epoch`): the final losses are the evaluate stage's metrics, and a name no other
metrics file uses keeps `dvc exp show`'s column as short as the name.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Iterator, Mapping, Protocol, Sequence

from stages.core.io import write_outputs


class EpochLog(Protocol):
    """Where an engine sends the curve rows of the epochs it ran (names as in the learning curve): the
    engine's one interface to the outside. dvclive (LiveLog) and the Prefect progress artifact
    (stages.core.tracking.PrefectProgress) subscribe to it, wired by the train stage (EpochLogs)."""

    def log_epochs(self, rows: Sequence[Mapping[str, float]]) -> None: ...


class EpochLogs:
    """Several subscribers of the epoch log as one: each gets every row, in the order given."""

    def __init__(self, logs: Sequence[EpochLog]):
        self.logs = tuple(logs)

    def log_epochs(self, rows: Sequence[Mapping[str, float]]) -> None:
        for log in self.logs:
            log.log_epochs(rows)


def _live_class():
    from dvclive import Live  # imported when asked for: it imports DVC (~0.5 s)

    class BatchedLive(Live):
        """Live whose files are written once per `one_write_per_batch` block, however many steps it holds."""

        _pending: dict[str, list[tuple[int, float | str]]] | None = None  # rows per metric, inside a block
        epoch_name = "epoch"  # metrics.json's one key

        @contextlib.contextmanager
        def one_write_per_batch(self) -> Iterator[None]:
            self._pending = {}
            try:
                yield
            finally:
                pending, self._pending = self._pending, None
                if pending:
                    self._append_rows(pending)
                    self.step -= 1
                    super().next_step()  # the block's last step: metrics.json and DVC's step signal

        def log_metric(self, name, val, timestamp=False, plot=True):
            super().log_metric(name, val, timestamp, plot=plot and self._pending is None)
            if plot and self._pending is not None:
                value = val if isinstance(val, str) or math.isfinite(val) else str(val)  # as Live writes it
                self._pending.setdefault(name, []).append((self.step, value))

        def next_step(self):
            if self._pending is None:
                return super().next_step()
            self.step += 1  # files follow at the end of the block

        def _append_rows(self, pending: dict[str, list[tuple[int, float | str]]]) -> None:
            """Each metric's rows in one append, in the format of dvclive's Metric.dump."""
            for name, rows in pending.items():
                path = Path(self.plots_dir) / "metrics" / f"{name}.tsv"
                path.parent.mkdir(parents=True, exist_ok=True)
                text = io.StringIO()
                writer = csv.writer(text, delimiter="\t", lineterminator=os.linesep)
                if not path.exists():
                    writer.writerow(["step", os.path.basename(name)])
                writer.writerows(rows)
                with open(path, "a", encoding="utf-8", newline="") as file:
                    file.write(text.getvalue())

        def make_summary(self):
            """metrics.json (the epoch reached) replaced at once, so that `dvc exp show` never reads half of it."""
            text = json.dumps({self.epoch_name: self.summary.get("epoch", 0)}, indent=4) + "\n"
            write_outputs({self.metrics_file: text.encode()})

    return BatchedLive


class LiveLog:
    """dvclive logging of the training epochs to `directory` (a context manager: ends the Live)."""

    def __init__(self, directory: str | Path, task: str):
        # The last good run's metrics.json, put back if this training fails or is interrupted (as the stage's
        # other outputs, which it writes only on success): Live clears it on start.
        self.metrics_file = Path(directory) / "metrics.json"
        self.previous = self.metrics_file.read_bytes() if self.metrics_file.is_file() else None
        # dvcyaml=False: dvc.yaml declares what DVC shows; no experiment of its own (DVC runs the stage).
        self.live = _live_class()(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)
        self.live.epoch_name = f"{task}/epoch"

    def log_epochs(self, rows: Sequence[Mapping[str, float]]) -> None:
        with self.live.one_write_per_batch():
            for row in rows:
                self.live.log_metric("epoch", self.live.step + 1, plot=False)
                for name, value in row.items():
                    self.live.log_metric(name, float(value))
                self.live.next_step()

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, error_type, *exc_info) -> None:
        self.live.end()
        if error_type is not None:
            if self.previous is None:
                self.metrics_file.unlink(missing_ok=True)
            else:
                write_outputs({self.metrics_file: self.previous})
