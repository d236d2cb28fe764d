"""Running a command for a flow: its lines go to the Prefect run logger as they come, and an
interrupted flow run stops the command and everything it started."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Optional


# What a line says about itself decides its level, not the stream it came on: the stages and DVC
# print progress to stderr. Errors: DVC's `ERROR: ` prefix, a stage's one-line `train: error: …`.
# Warnings: DVC's `WARNING: `, a stage's `train: warning: …`, Python's warnings module
# (`file.py:12: UserWarning: …`). Everything else (progress, TensorFlow's notes) is INFO.
ERROR_LINE = re.compile(r"^(ERROR: |[a-z][\w.@-]*: error: )")
WARNING_LINE = re.compile(r"^(WARNING: |[a-z][\w.@-]*: warning: )|:\d+: [A-Z]\w*Warning: ")
# TensorFlow's absl says this in DVC's format on every start: a note about itself, not a warning.
NOT_A_WARNING = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def line_level(line: str) -> str:
    """"error", "warning" or "info": the log level of one line of a command's output."""
    if ERROR_LINE.search(line):
        return "error"
    if WARNING_LINE.search(line) and line != NOT_A_WARNING:
        return "warning"
    return "info"


def stream_command(command: list[str], cwd: Path, env: dict[str, str], log: Any) -> tuple[int, list[str], list[str]]:
    """Run a command, sending each line it prints to `log` as it comes, at the level `line_level` gives.

    The command gets a process group of its own, so that if this flow run is interrupted (a
    cancelled run's SIGTERM, which Prefect raises here as an exception, or Ctrl-C) the command and
    what it started (`dvc repro` and the stage it runs) are stopped too, not left running."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, errors="replace", bufsize=1, start_new_session=True)
    lines: "queue.Queue[tuple[str, Optional[str]]]" = queue.Queue()

    def pump(stream: Any, name: str) -> None:
        for line in stream:
            lines.put((name, line.rstrip("\n")))
        lines.put((name, None))

    for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
        threading.Thread(target=pump, args=(stream, name), daemon=True).start()
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}
    open_streams = 2
    try:
        while open_streams:
            name, line = lines.get()
            if line is None:
                open_streams -= 1
                continue
            line = line.rsplit("\r", 1)[-1]  # progress bars redraw with \r: keep what the terminal would show
            captured[name].append(line)
            if line.strip():
                getattr(log, line_level(line))(line)
        return process.wait(), captured["stdout"], captured["stderr"]
    finally:
        if process.poll() is None:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Interrupt a process group as Ctrl-C would (DVC then stops its stage and releases its locks;
    stages write their outputs atomically, so earlier outputs stay whole), and kill what is left
    after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):  # raised once nothing in the group is left
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
