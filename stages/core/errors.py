"""One-line failures: what every stage's thin shell turns a known error into."""

from __future__ import annotations

import sys
from typing import Callable

from stages.core.params import ParamsError


class StageError(Exception):
    """A failure the user can fix (bad input file, missing data source): one line, non-zero exit."""

    exit_code = 2


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main(); a known failure becomes one line on stderr and a non-zero exit."""
    from flows import track_stage  # with a Prefect server configured: the stage is a flow run there

    main = track_stage(name, main, (StageError, ParamsError))
    try:
        main()
    except (StageError, ParamsError) as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        raise SystemExit(getattr(error, "exit_code", 2)) from None
