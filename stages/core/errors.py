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
    # With a Prefect server configured the stage is a flow run there; the record tells the flow that
    # started it (if any) the exit code and one line, so no one reads them back from DVC's log text.
    from stages.core.tracking import track_stage, write_stage_record

    main = track_stage(name, main, (StageError, ParamsError))
    try:
        main()
    except (StageError, ParamsError) as error:
        line, exit_code = f"{name}: error: {error}", getattr(error, "exit_code", 2)
        print(line, file=sys.stderr)
        write_stage_record(name, exit_code, line)
        raise SystemExit(exit_code) from None
    write_stage_record(name, 0, "")
