"""Running a command for a flow: its lines go to the Prefect run logger as they come, and an
interrupted flow run stops the command and everything it started."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Optional


def stream_command(command: list[str], cwd: Path, env: dict[str, str], log: Any) -> tuple[int, list[str], list[str]]:
    """Run a command, sending each stdout line to log.info and each stderr line to log.warning as it comes.

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
                (log.info if name == "stdout" else log.warning)(line)
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
