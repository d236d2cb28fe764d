"""One-line failures: what every stage's thin shell turns a known error into."""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Callable

from stages.core.contract import MIRROR_ENV, NETWORK_EXIT_CODE
from stages.core.params import ParamsError


class StageError(Exception):
    """A failure the user can fix (bad input file, missing data source): one line, non-zero exit."""

    exit_code = 2


class NetworkError(StageError):
    """A download failed and no mirror is set: possibly transient, so the flow retries it."""

    exit_code = NETWORK_EXIT_CODE


def network_error(what: str, error: Exception) -> NetworkError:
    return NetworkError(f"could not download {what} ({type(error).__name__}: {error}); offline? "
                        f"set {MIRROR_ENV} to a folder laid out like ../shared/data")


def _causes(error: BaseException):
    """The error and what it was raised from or during (Keras wraps urllib's errors in a bare Exception)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _http_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)  # requests (and kagglehub's) HTTPError
    status = getattr(response, "status_code", None) if response is not None else getattr(error, "code", None)
    return status if isinstance(status, int) else None


def _network_types() -> tuple[type[BaseException], ...]:
    import socket
    import urllib.error

    types: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError]
    try:  # kagglehub downloads with requests
        import requests
        types += [requests.ConnectionError, requests.Timeout]
    except ImportError:
        pass
    return tuple(types)


def is_network_failure(error: BaseException) -> bool:
    """A connection, DNS or timeout failure, or an HTTP 429/5xx answer: worth retrying later."""
    for cause in _causes(error):
        status = _http_status(cause)
        if status is not None:
            return status == 429 or status >= 500
        if isinstance(cause, _network_types()):
            return True
    return False


def download_error(what: str, error: Exception) -> Exception:
    """What a failed download becomes: retryable (network), one line (an HTTP refusal, the disk, the
    cache's permissions), or the error itself (a bug: its traceback)."""
    if is_network_failure(error):
        return network_error(what, error)
    status = next((_http_status(cause) for cause in _causes(error) if _http_status(cause) is not None), None)
    if status is not None:
        return StageError(f"could not download {what}: the server answered HTTP {status}; check the dataset's "
                          f"name and access, or set {MIRROR_ENV} to a local copy")
    os_error = next((cause for cause in _causes(error) if isinstance(cause, OSError)), None)
    if os_error is not None:
        where = f" {os_error.filename}" if os_error.filename else ""
        return StageError(f"could not download {what}: cannot write{where} ({os_error.strerror or os_error}); "
                          "free space or fix the permissions of the download cache (.cache/), or set "
                          f"{MIRROR_ENV} to a local copy")
    return error


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main(); a known failure becomes one line on stderr and a non-zero exit."""
    # With a Prefect server configured the stage is a flow run there; the record tells the flow that
    # started it (if any) the exit code and one line, so no one reads them back from DVC's log text.
    from stages.core.tracking import track_stage, write_stage_record

    main = track_stage(name, main, (StageError, ParamsError))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # past the imports: Ctrl-C is handled below
    sys.unraisablehook = _without_interrupts_in_finalizers
    try:
        main()
        # Its outputs are in place: Ctrl-C now (while it reports and exits) would fail the stage and leave
        # new outputs that DVC never records in dvc.lock.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (StageError, ParamsError) as error:
        _fail(name, str(error), getattr(error, "exit_code", 2))
    except KeyboardInterrupt:  # Ctrl-C, or a flow stopping its stages: nothing was renamed into place
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one must not cut the line short
        _fail(name, "interrupted; its outputs are as they were (a stage writes them only on success)", 130)
    except Exception as error:
        if is_out_of_memory(error):
            _fail(name, f"out of memory ({type(error).__name__}); lower the sizes in params.yaml "
                        "(data points, network width or depth, batch size) or free memory", 2)
        if (os_error := storage_error(error)) is None:
            raise
        _fail(name, storage_line(os_error), 2)
    write_stage_record(name, 0, "")


def _without_interrupts_in_finalizers(unraisable) -> None:
    """Ctrl-C that lands inside an object's __del__ (TensorFlow frees its functions whenever the collector
    runs) is dropped by Python with a traceback on stderr; the stage then goes on, and the flow stopping it
    interrupts it again or finds it finished. Only that traceback goes; any other stays."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


# What the machine did to a write or a read, not what the code did: a full disk or quota, a file too large
# for `ulimit -f`, no permission, a read-only file system, an I/O error.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


def storage_error(error: BaseException) -> OSError | None:
    """The OSError of the machine's storage behind `error` (Keras and h5py wrap the OSError of a failed save)."""
    return next((cause for cause in _causes(error) if isinstance(cause, OSError) and cause.errno in STORAGE_ERRNOS),
                None)


def storage_line(error: OSError) -> str:
    """`cannot write models/.mnist.keras.x1.keras: no space left on device; …`: the path, the cause, what to do."""
    verb = "access" if error.errno in (errno.EACCES, errno.EPERM, errno.EIO) else "write"
    where = f" {error.filename}" if error.filename else ""
    cause = (error.strerror or os.strerror(error.errno)).lower()
    return (f"cannot {verb}{where}: {cause}; free space or fix the permissions there, then run again "
            "(earlier outputs are as they were)")


def is_out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, or TensorFlow's ResourceExhaustedError (named, so TensorFlow need not be loaded)."""
    return isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError"


def _fail(name: str, message: str, exit_code: int) -> None:
    from stages.core.tracking import write_stage_record

    line = f"{name}: error: {message}"
    print(line, file=sys.stderr)
    write_stage_record(name, exit_code, line)
    raise SystemExit(exit_code) from None
