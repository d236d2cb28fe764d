"""Training progress on stderr: a bar with ETA on a terminal, throttled lines elsewhere.

Lines (a log, Prefect, DVC capturing the output): one every PROGRESS_INTERVAL_S and one at the
end, so 2000 epochs stay readable. A terminal: tqdm's bar (tqdm comes with DVC), updated as the
epochs come in, with the latest losses after it. The terminal only: dvclive and the Prefect progress
artifact subscribe to the engine's epoch log (stages.training.live.EpochLog), wired by the train stage.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Mapping, TextIO

PROGRESS_INTERVAL_S = 2.0


def report_progress(epoch: int, epochs: int, logs: Mapping[str, float], file: TextIO | None = None) -> None:
    values = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(logs.items()))
    print(f"  epoch {epoch}/{epochs} {values}", file=file or sys.stderr, flush=True)


class ProgressLines:
    """A progress line every `interval_s` and at the last epoch (or when told the run stopped)."""

    def __init__(self, epochs: int, interval_s: float = PROGRESS_INTERVAL_S, file: TextIO | None = None):
        self.epochs, self.interval_s, self.file, self.last = epochs, interval_s, file, time.monotonic()

    def update(self, epoch: int, logs: Mapping[str, float], stopped: bool = False) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval_s or stopped or epoch == self.epochs:
            self.last = now
            report_progress(epoch, self.epochs, logs, self.file)

    def close(self) -> None:
        pass


class ProgressBar:
    """tqdm's bar over the epochs: rate, elapsed and ETA, and the latest losses."""

    def __init__(self, epochs: int, file: TextIO | None = None):
        from tqdm import tqdm

        file = file or sys.stderr
        # A terminal that reports no size (a bare pty, `script`) would get no bar from tqdm: give it one.
        sized = _columns(file) > 0
        self.bar = tqdm(total=epochs, unit="epoch", file=file, dynamic_ncols=sized,
                        ncols=None if sized else 100, nrows=None if sized else 24)

    def update(self, epoch: int, logs: Mapping[str, float], stopped: bool = False) -> None:
        self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in sorted(logs.items())}, refresh=False)
        self.bar.update(epoch - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _columns(file: TextIO) -> int:
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError):  # no file descriptor (a test's stream), or not a terminal
        return 0


def progress_display(epochs: int, file: TextIO | None = None) -> ProgressLines | ProgressBar:
    """The bar when `file` (stderr by default) is a terminal, else the throttled lines."""
    stream = file or sys.stderr
    if stream.isatty():
        return ProgressBar(epochs, stream)
    return ProgressLines(epochs, file=stream)
