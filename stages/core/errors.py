"""One-line failures: what every stage's thin shell turns a known error into."""

from __future__ import annotations

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


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main(); a known failure becomes one line on stderr and a non-zero exit."""
    from flows import track_stage  # with a Prefect server configured: the stage is a flow run there

    main = track_stage(name, main, (StageError, ParamsError))
    try:
        main()
    except (StageError, ParamsError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        raise SystemExit(getattr(error, "exit_code", 2)) from None
