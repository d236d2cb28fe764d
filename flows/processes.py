"""The processes of a flow's command line: a command whose lines go to the Prefect run logger as they
come, stopped with everything it started when the run is interrupted; Ctrl-C and SIGTERM as one line and
the shell's exit code; a temporary Prefect server that outlives Ctrl-C but not the flow; one run per
checkout; a lost Prefect server ending the run in one line; expected failures logged without traceback."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from stages.core.contract import FORCE_DOWNLOAD_ENV
from stages.core.errors import storage_error, storage_line
from stages.core.tracking import PARENT_ENV


# What a line says about itself decides its level, not the stream it came on: the stages and DVC
# print progress to stderr. Errors: DVC's `ERROR: ` prefix, a stage's one-line `train: error: …`.
# Warnings: DVC's `WARNING: `, a stage's `train: warning: …`, Python's warnings module
# (`file.py:12: UserWarning: …`). Everything else (progress, TensorFlow's notes) is INFO.
ERROR_LINE = re.compile(r"^(ERROR: |[a-z][\w.@-]*: error: )")
WARNING_LINE = re.compile(r"^(WARNING: |[a-z][\w.@-]*: warning: )|:\d+: [A-Z]\w*Warning: ")
# TensorFlow's absl says this in DVC's format on every start: a note about itself, not a warning.
NOT_A_WARNING = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# What `dvc exp run --run-all` says about itself, not about the experiments (their lines come through the
# same stream): a hint for a terminal following the queue's logs, and DVC 3.67's closing summary, always
# empty (dvc/repo/experiments/run.py reads the results' generator twice). DEBUG: out of sight by default.
QUEUE_CHATTER = re.compile(r"^Following logs for .*\. Use Ctrl\+C to stop following logs|^Ran experiment\(s\):\s*$")


class ExpectedFailuresWithoutTraceback(logging.Filter):
    """Drops the traceback Prefect logs with a task's or flow's exception when the exception is an expected
    failure (`types`: a stage's one-line error, DVC's, a refusal): its message is the whole story, on the
    console and in the run's log alike. Any other exception keeps its traceback: that is a bug."""

    def __init__(self, types: tuple[type[BaseException], ...]):
        super().__init__()
        self.types = types

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (isinstance(error, self.types) or storage_error(error) is not None):
            record.exc_info, record.exc_text = None, None
        return True


def storage_failure_line(command: str, outcome: Any) -> Optional[str]:
    """`pipeline: error: cannot write PATH: no space left on device; …` when a flow ended on the machine's
    storage (a full disk, no permission, a read-only file system), as a stage says it; else None."""
    os_error = storage_error(outcome) if isinstance(outcome, BaseException) else None
    return f"{command}: error: {storage_line(os_error)}" if os_error is not None else None


def log_without_tracebacks(*types: type[BaseException]) -> None:
    """Prefect's run loggers log exceptions of `types` as their one-line message only."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(ExpectedFailuresWithoutTraceback(types))


def line_level(line: str) -> str:
    """"error", "warning", "info" or "debug": the log level of one line of a command's output."""
    if QUEUE_CHATTER.match(line):
        return "debug"
    if ERROR_LINE.search(line):
        return "error"
    if WARNING_LINE.search(line) and line != NOT_A_WARNING:
        return "warning"
    return "info"


def stream_command(command: list[str], cwd: Path, env: dict[str, str], log: Any,
                   label: Optional[str] = None,
                   give_up: Optional[Callable[[], bool]] = None) -> tuple[int, list[str], list[str]]:
    """Run a command, sending each line it prints to `log` as it comes, at the level `line_level` gives.
    `give_up`, asked every GIVE_UP_POLL_S while the command runs: once it says True, the command is
    stopped as an interrupt would stop it, and its exit code returned (for a command known to hang).
    Once the command has exited, its lines are read for DRAIN_S more, not until its streams close: a
    daemon it started may hold them open for as long as it lives.

    The command stays in this process's group, as in a terminal: Ctrl-C reaches it there (DVC stops its
    stage and releases its locks), and a kill of the group (a closed terminal, an OOM kill) takes it
    along, so nothing keeps running with DVC's locks after us. If this thread is interrupted (Ctrl-C's
    KeyboardInterrupt, a cancelled run's SIGTERM, which Prefect raises here as an exception) or another
    thread calls `stop_running_commands`, the command and what it started are stopped."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, errors="replace", bufsize=1)
    with _lock:
        _running[process] = label or " ".join(command)
    lines: "queue.Queue[tuple[str, Optional[str]]]" = queue.Queue()

    def pump(stream: Any, name: str) -> None:
        for line in stream:
            lines.put((name, line.rstrip("\n")))
        lines.put((name, None))

    for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
        threading.Thread(target=pump, args=(stream, name), daemon=True).start()
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}
    open_streams, exited_at = 2, None
    next_ask = time.monotonic() + GIVE_UP_POLL_S
    try:
        while open_streams:
            now = time.monotonic()
            if process.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at > DRAIN_S:  # a daemon it started holds its streams open (DVC's queue workers)
                    break
            elif give_up is not None and now >= next_ask:
                next_ask = now + GIVE_UP_POLL_S
                if give_up():
                    stop_process_tree(process)
                    return process.wait(), captured["stdout"], captured["stderr"]
            try:
                name, line = lines.get(timeout=POLL_S)
            except queue.Empty:
                continue
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
            _stopped.append(_running[process])
            stop_process_tree(process)
        with _lock:
            _running.pop(process, None)


# The commands stream_command is running (any thread), so that an interrupt can stop them all, and the
# ones this process stopped (what its interrupted line names).
_lock = threading.Lock()
_running: dict[subprocess.Popen, str] = {}
_stopped: list[str] = []
STOP_GRACE_S = 8.0  # Ctrl-C to SIGKILL: a stage ends at once, DVC takes seconds to release its locks after it
GIVE_UP_POLL_S = 5.0  # how often a command's `give_up` is asked (it may ask DVC: half a second)
POLL_S = 1.0  # how often a streamed command is checked on between its lines
DRAIN_S = 2.0  # a command's last lines, read after it exited


def stop_running_commands(grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop every command `stream_command` runs, in any thread (an interrupted flow's stages): their labels."""
    with _lock:
        running = [(process, label) for process, label in _running.items() if process.poll() is None]
    threads = [threading.Thread(target=stop_process_tree, args=(process, grace_s)) for process, _ in running]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _stopped.extend(label for _, label in running)
    return [label for _, label in running]


def stopped_commands() -> list[str]:
    """The labels of the commands this process stopped (an interrupt's), in order, each once."""
    return list(dict.fromkeys(_stopped))


def stop_process_tree(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Interrupt a process and every process it started as Ctrl-C would (DVC then stops its stage and
    releases its locks; stages write their outputs atomically, so earlier outputs stay whole), and kill
    what is left after `grace_s`."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for member in (process, *children):
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            member.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)  # the Popen reaps its own child (psutil would lose its exit code)
    _, alive = psutil.wait_procs(children, timeout=max(0.0, deadline - time.monotonic()))
    for member in (process, *alive):
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            member.kill()
    process.wait()


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


# --- the stages' environment ---

def stage_env(force_download: bool) -> dict[str, str]:
    """The environment of a flow's stage commands: this one, marked as a flow's child (the stages report
    to its run), unbuffered, this interpreter first on PATH; `force_download`: fetch stages download again."""
    env = dict(os.environ)
    env[PARENT_ENV] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # The stages' `python -m stages.…` must find this interpreter's packages, however we were started.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if force_download:
        env[FORCE_DOWNLOAD_ENV] = "1"
    return env


# --- interrupts: Ctrl-C (SIGINT) and SIGTERM end a flow's command line in one line ---

class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread as Python raises KeyboardInterrupt for Ctrl-C (a
    KeyboardInterrupt, so Prefect records the run as interrupted, and no `except Exception` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process its signal ended: 130, 143


def _raise_interrupted(signum: int, frame: Any) -> None:
    if not _interrupted:  # once: a second Ctrl-C must not cut the stopping short (it takes seconds at most)
        _interrupted.append(signum)
        # What runs now is what the interrupt stops: Ctrl-C reached the commands too, and some end by themselves.
        with contextlib.suppress(RuntimeError):  # another thread changed the dict meanwhile: they stop all the same
            _stopped.extend(list(_running.values()))
        raise Interrupted(signum)


_interrupted: list[int] = []


def interrupt_signal() -> Optional[int]:
    """The signal that interrupted this process (inside `signals_interrupt`), if one did."""
    return _interrupted[0] if _interrupted else None


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread for the block. SIGTERM's default would end
    the process at once and leave what it started running (DVC's queue workers, a temporary server)."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupted_line(program: str, interrupt: Interrupted, after: str, also_stopped: Iterable[str] = ()) -> str:
    """Stop what is still running; the one line an interrupted command prints: which signal, what it
    stopped (the commands, and `also_stopped`), what to do."""
    stop_running_commands()
    stopped = [*stopped_commands(), *also_stopped]
    what = f"stopped {', '.join(stopped)}" if stopped else "nothing was running"
    return f"{program}: interrupted by {signal.Signals(interrupt.signum).name}: {what}; {after}"


# --- a temporary Prefect server that outlives Ctrl-C but not this process ---

def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL (Linux); elsewhere nothing."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def prefect_server_for_run() -> contextlib.AbstractContextManager:
    """The configured Prefect server, or, with none, a temporary one for this process."""
    from stages.core.tracking import prefect_api_url

    return contextlib.nullcontext() if prefect_api_url() else temporary_prefect_server()


@contextlib.contextmanager
def temporary_prefect_server(timeout_s: float = 120.0) -> Iterator[str]:
    """`prefect server start` on a free loopback port for the block (no UI; its database where Prefect's
    own temporary server keeps it), and this process's Prefect settings pointed at it; its API URL.

    Prefect's own temporary server (no PREFECT_API_URL) runs in our process group, so Ctrl-C stopped it
    first and the flow could then neither record how it ended nor stop in time (its client retries
    for minutes). This one has a session of its own, so Ctrl-C reaches only the flow, and it ends
    with this process however that ends."""
    import socket
    import urllib.request

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    output = tempfile.TemporaryFile("w+", errors="replace")  # not a pipe: nobody reads it while it runs
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdin=subprocess.DEVNULL, stdout=output,
                              stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_end_with_parent)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                output.seek(0)
                reason = (output.read().strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"the temporary Prefect server exited {server.returncode}: {reason}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the temporary Prefect server did not answer at {url} within {timeout_s:.0f} s")
            time.sleep(0.2)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:  # what the run logged and emitted goes out before the server goes (as prefect_test_harness)
                from prefect.events.worker import EventsWorker
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=5)
                EventsWorker.drain_all(timeout=5)
    finally:
        stop_process_group(server, grace_s=10)
        output.close()


# --- one pipeline run per checkout ---

class CheckoutBusy(Exception):
    """Another run holds this checkout: one line that says which and what to do."""


@contextlib.contextmanager
def one_run_per_checkout(root: Path, what: str) -> Iterator[None]:
    """Hold this checkout for the block, or refuse at once if another run holds it. Two runs in one
    checkout would share its stages' outputs and DVC's locks (the second failed on DVC's 'is busy' after
    part of its work). An advisory lock of the OS (flock): a process that dies, even by SIGKILL, lets go."""
    import fcntl

    path = root / ".dvc" / "tmp" / "dnnlab-run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            raise CheckoutBusy(f"{root} is in use by {holder}: wait for it to end (or stop it), or run in "
                               "another clone; nothing was run") from None
        file.seek(0)
        file.truncate()
        file.write(f"{what} (pid {os.getpid()}, since {time.strftime('%H:%M:%S')})")
        file.flush()
        try:
            yield
        finally:
            file.truncate(0)


# --- a lost Prefect server: the run ends, in one line ---

SERVER_CHECK_S = 5.0  # how often the server is asked
# How long without an answer makes the server lost, by how it fails to answer. Refused: nothing listens on
# its port any more (killed, stopped); a restarting server listens again within that. Silent (timeouts,
# errors): it may only be slow, as a server on a loaded machine is; lost if that lasts (still within 60 s).
LOST_AFTER_S = {"refused": 15.0, "silent": 45.0}


def server_state(api_url: str) -> str:
    """"up" (the health check answered), "refused" (nothing listens there) or "silent" (no answer in time,
    an error, or no route)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=SERVER_CHECK_S):
            return "up"
    except urllib.error.HTTPError:
        return "silent"  # it answered, with an error: there, but not well
    except urllib.error.URLError as error:  # urllib wraps a failed connection in it
        return "refused" if isinstance(error.reason, ConnectionRefusedError) else "silent"
    except OSError:  # timeouts, resets while reading the answer
        return "silent"


def server_lost(state: str, unanswered_s: float) -> bool:
    """Whether a server that last answered `unanswered_s` ago, and now fails as `state` says, is lost."""
    return state != "up" and unanswered_s >= LOST_AFTER_S[state]


def stop_own_children(grace_s: float = STOP_GRACE_S) -> None:
    """Interrupt every process this one started, and theirs, and kill what is left after `grace_s`: before
    this process ends without running its cleanup, so that nothing it started outlives it (or holds its
    output streams open)."""
    import psutil

    stop_processes(psutil.Process().children(recursive=True), grace_s)


def stop_process_tree_of(process: Any, grace_s: float = STOP_GRACE_S) -> None:
    """`stop_process_tree` for a psutil process this one did not start (a daemon found by its pid)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        stop_processes([process, *process.children(recursive=True)], grace_s)


def stop_processes(processes: list, grace_s: float = STOP_GRACE_S) -> None:
    """Interrupt psutil processes as Ctrl-C would, and kill what is left after `grace_s`."""
    import psutil

    for member in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=grace_s)


@contextlib.contextmanager
def end_if_server_lost(program: str, also_stop: Callable[[], list[str]] = list) -> Iterator[None]:
    """For the block, ask the Prefect server every few seconds whether it is there; once it is lost, stop the
    running commands and everything else this process started, and end the process in one line naming the
    server (exit 1).

    Without the server Prefect can record nothing (a run's states, its logs), and its client retries every
    call for minutes before the run fails with connection tracebacks. The stages do not need it, but a
    run that cannot be recorded is better ended at once: DVC has committed every stage that finished,
    the stopped ones' outputs come back with `--restore`, and running it again with the server back finishes.
    `also_stop`: what else to stop then (the study's DVC queue), the names of what it stopped."""
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    done = threading.Event()

    def watch() -> None:
        answered = time.monotonic()
        while not done.wait(SERVER_CHECK_S):
            state, unanswered_s = server_state(api_url), time.monotonic() - answered
            if state == "up":
                answered = time.monotonic()
            elif server_lost(state, unanswered_s) and not done.is_set():
                stop_running_commands()
                stopped = [*stopped_commands(), *also_stop()]
                stop_own_children()
                print(f"{program}: error: lost the Prefect server at {api_url} (no answer for {unanswered_s:.0f} s, "
                      f"{'connection refused' if state == 'refused' else 'no reply'}): stopped "
                      f"{', '.join(stopped) or 'nothing'}; stages that finished are committed by DVC, stopped "
                      "ones' outputs come back with `python -m flows.pipeline --restore`; run again once the "
                      "server is back", file=sys.stderr, flush=True)
                os._exit(1)  # the main thread is in Prefect's client, retrying for minutes: nothing left to record

    thread = threading.Thread(target=watch, name="prefect-server-watch", daemon=True)
    if api_url:
        thread.start()
    try:
        yield
    finally:
        done.set()
